"""What the trainer uses for MoE models: the main loss's gradient-accumulation factor and the fp16 refusal
(end to end through `swift sft` in tests/e2e/test_gradient_equivalence.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from moon_swift.core.errors import MoonInputError
from moon_swift.integrations.swift.callbacks import main_loss_factor, refuse_fp16


def trainer(*, accepts_loss_kwargs=True, loss_func=print, scaled=None, current=4):
    return SimpleNamespace(
        args=SimpleNamespace(gradient_accumulation_steps=4),
        current_gradient_accumulation_steps=current,
        model_accepts_loss_kwargs=accepts_loss_kwargs,
        compute_loss_func=loss_func,
        loss_is_scaled_for_ga=scaled,
    )


@pytest.mark.parametrize(
    "kwargs, num_items, factor",
    [
        ({}, 12, 1 / 4),  # swift's compute_loss divides (what every moon training takes)
        ({"current": 3}, 12, 1 / 3),  # the last, shorter accumulation window of an epoch
        ({}, None, 1.0),  # neither divides: transformers holds a compute_loss_func's loss scaled
        ({"accepts_loss_kwargs": False, "loss_func": None}, 12, 1 / 4),  # transformers' training_step divides
        ({"accepts_loss_kwargs": False, "scaled": False}, 12, 1 / 4),
    ],
)
def test_main_loss_factor_follows_swift_and_transformers(kwargs, num_items, factor):
    assert main_loss_factor(trainer(**kwargs), num_items) == pytest.approx(factor)


def test_before_training_the_configured_accumulation_is_used():
    assert main_loss_factor(trainer(current=None), 12) == pytest.approx(1 / 4)


@pytest.mark.parametrize(
    "args",
    [
        SimpleNamespace(fp16=True, deepspeed=None),
        SimpleNamespace(fp16=False, deepspeed={"fp16": {"enabled": True}}),
        SimpleNamespace(fp16=False, hf_deepspeed_config=SimpleNamespace(config={"fp16": {"enabled": True}})),
    ],
)
def test_fp16_is_refused_with_what_to_use_instead(args):
    with pytest.raises(MoonInputError, match=r"cannot train in fp16.*bf16 \(--bf16 true.*fp32"):
        refuse_fp16(args)


def test_fp16_in_a_deepspeed_file_is_refused(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"fp16": {"enabled": "true"}}))
    with pytest.raises(MoonInputError, match="cannot train in fp16"):
        refuse_fp16(SimpleNamespace(fp16=False, deepspeed=str(path)))


@pytest.mark.parametrize("enabled", ["auto", False, None])
def test_bf16_fp32_and_auto_pass(enabled):
    refuse_fp16(SimpleNamespace(fp16=False, bf16=True, deepspeed={"fp16": {"enabled": enabled}}))
