"""The swift trainer's side of the momentum encoder: what it refuses at start."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from moon_swift.core.errors import MoonInputError
from moon_swift.integrations.swift.momentum import refuse_unsupported_momentum
from moon_swift.losses.moon_infonce import MoonInfoNCEOptions

MOMENTUM = MoonInfoNCEOptions(queue_size=64, queue_mode="momentum")


def args(fp16=False, stage=2):
    config = {"zero_optimization": {"stage": stage}}
    return SimpleNamespace(fp16=fp16, hf_deepspeed_config=SimpleNamespace(config=config))


@pytest.mark.parametrize(("given", "named"), [(args(fp16=True), "--fp16 true"), (args(stage=3), "--deepspeed zero3")])
def test_momentum_is_refused_where_it_is_not_known_to_work(given, named):
    with pytest.raises(MoonInputError) as error:
        refuse_unsupported_momentum(given, MOMENTUM)
    assert "MOON_INFONCE_QUEUE_MODE=momentum" in str(error.value) and named in str(error.value)


def test_other_modes_and_zero2_pass():
    refuse_unsupported_momentum(args(), MOMENTUM)
    refuse_unsupported_momentum(args(fp16=True, stage=3), MoonInfoNCEOptions(queue_size=64, queue_mode="split"))
    refuse_unsupported_momentum(args(fp16=True, stage=3), MoonInfoNCEOptions())  # no queue
