"""Cached contrastive steps (``MOON_GRAD_CACHE_ROWS``) through the real `swift sft`: the same two SGD steps as
without them, in one process and in two (ZeRO-2, ZeRO-3, DDP without DeepSpeed), with both losses, LoRA and
gradient checkpointing.

The model is a tiny guided MoE with a learned temperature; its aux-loss coefficients are 0, because a cached
step's balance loss is the mean of its chunks' (see :mod:`moon_swift.integrations.swift.cached_steps`), which
is another loss than the whole batch's (tests/integrations/swift/test_cached_steps.py checks that one in-process).
Each sample is 4 rows (anchor, positive, 2 hard negatives); 5 rows per chunk cut one process's 16 rows into 4
chunks and each of two processes' 8 rows into 2.

Each cached run is compared with the uncached run of as many processes (ZeRO-2). Measured on 2 CPU cores
(relative differences, over the six tests): loss <= 4.8e-7, grad_norm <= 1.4e-6, weight updates (LoRA: the
adapters' B matrices) <= 6.5e-7, the learned temperature's update <= 3.1e-6.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    COMPARED_LOSS_ENV,
    REPO_ROOT,
    TWO_SGD_STEPS,
    logged_steps,
    relative,
    rows_with_two_negatives,
    run_cli,
    swift_executable,
)
from safetensors.torch import load_file

from moon_swift.apps.tiny_model import make_tiny
from moon_swift.modeling.upcycle import upcycle

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5
ENV = COMPARED_LOSS_ENV
CACHED = {"MOON_GRAD_CACHE_ROWS": "5"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cached")
    make_tiny(root / "base", seed=2, as_base=True)
    upcycle(root / "base", root / "model", noise=0.01, moe_layers="all", num_experts=4, moe_top_k=2,
            moe_aux_loss_coef=0.0, moe_z_loss_coef=0.0, learnable_temperature=True, init_temperature=0.07)  # fmt: skip
    rows_with_two_negatives(root)
    recipe = yaml.safe_load((REPO_ROOT / "recipes" / "tiny_cpu.yaml").read_text())  # ZeRO-2 on CPU
    del recipe["callbacks"]
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    del recipe["deepspeed"]
    (root / "recipe_ddp.yaml").write_text(yaml.safe_dump(recipe))
    return {"root": root, "runs": {}}


def sft(setup, name, *, loss, nproc=1, batch=4, cached=True, recipe="recipe.yaml", extra=()) -> Path:
    """Two SGD steps of `swift sft` (each run once per module: tests share the uncached ones)."""
    out = setup["root"] / name
    if name in setup["runs"]:
        return out
    args = [swift_executable(), "sft", str(setup["root"] / recipe), "--model", str(setup["root"] / "model"),
            "--dataset", str(setup["root"] / "rows.jsonl"), "--output_dir", str(out), "--loss_type", loss,
            "--per_device_train_batch_size", str(batch), *TWO_SGD_STEPS, *extra]  # fmt: skip
    env = {**ENV, **(CACHED if cached else {}), "NPROC_PER_NODE": str(nproc)}
    result = run_cli(args, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    assert ("cached contrastive steps" in result.stdout) == cached
    setup["runs"][name] = out
    return out


def differences(setup, one: Path, other: Path, *, lora: bool = False) -> dict[str, float]:
    """Relative differences of each step's logged loss and grad_norm, of the weight updates and of the learned
    temperature's update (infonce does not read it: weight decay alone moves it)."""
    found = {}
    steps = list(zip(logged_steps(one), logged_steps(other), strict=True))
    assert len(steps) == 2
    for step, (a, b) in enumerate(steps, 1):
        for key in ("loss", "grad_norm"):
            found[f"{key}@{step}"] = relative(a[key], b[key])
    start = load_file(setup["root"] / "model" / "model.safetensors")
    after = [load_file(out / "checkpoint-2" / ("adapter_model.safetensors" if lora else "model.safetensors"))
             for out in (one, other)]  # fmt: skip
    if lora:  # peft starts B at 0: B after two steps is its update
        keys = [k for k in after[0] if "lora_B" in k]
        updates = [torch.cat([w[k].double().flatten() for k in keys]) for w in after]
    else:
        updates = [torch.cat([(w[k] - start[k]).double().flatten() for k in start]) for w in after]
    assert updates[0].norm() > 1e-4
    found["update"] = relative(*updates)
    name = next(k for k in after[0] if k.endswith("temperature.logit_scale"))  # also under LoRA (modules_to_save)
    moved = [w[name].double() - start["temperature.logit_scale"].double() for w in after]
    assert moved[0].abs() > 1e-4
    found["temperature update"] = relative(*moved)
    return found


@pytest.mark.parametrize("nproc, parallel", [(1, "zero2"), (2, "zero2"), (2, "zero3"), (2, "ddp")])
def test_moon_infonce_cached_steps_equal_uncached(setup, nproc, parallel):
    # against the uncached run with as many processes (ZeRO-2): with two, moon_infonce gives the learned
    # temperature twice one process's update, cached or not (its gradient is scaled by the world size like the
    # embeddings'). ZeRO-3 and DDP (without DeepSpeed: the chunks but the last run in no_sync()) with swift's
    # gradient checkpointing: the second forwards are recomputed in backward too.
    plain = sft(setup, f"moon-plain-{nproc}", loss="moon_infonce", nproc=nproc, batch=4 // nproc, cached=False)
    extra = ("--deepspeed", parallel) if parallel.startswith("zero") else ()
    if nproc == 2 and parallel != "zero2":
        extra += ("--gradient_checkpointing", "true")
    cached = sft(setup, f"moon-{nproc}-{parallel}", loss="moon_infonce", nproc=nproc, batch=4 // nproc, extra=extra,
                 recipe="recipe_ddp.yaml" if parallel == "ddp" else "recipe.yaml")  # fmt: skip
    found = differences(setup, plain, cached)
    assert max(found.values()) < TOLERANCE, found


def test_swift_infonce_cached_steps_equal_uncached(setup):
    plain = sft(setup, "infonce-plain", loss="infonce", cached=False)
    cached = sft(setup, "infonce-cached", loss="infonce")
    found = differences(setup, plain, cached)
    assert max(found.values()) < TOLERANCE, found


def test_lora_cached_steps_equal_uncached(setup):
    lora = ("--tuner_type", "lora", "--lora_dropout", "0")  # dropout: other masks than a full-batch forward
    plain = sft(setup, "lora-plain", loss="moon_infonce", cached=False, extra=lora)
    cached = sft(setup, "lora-cached", loss="moon_infonce", extra=lora)
    found = differences(setup, plain, cached, lora=True)
    assert max(found.values()) < TOLERANCE, found
