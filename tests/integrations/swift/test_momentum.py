"""The swift trainer's side of the momentum encoder: what it refuses at start, how it finds ZeRO-3's release."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from moon_swift.core.errors import MoonInputError
from moon_swift.integrations.swift.momentum import refuse_unsupported_momentum, zero3_release
from moon_swift.losses.moon_infonce import MoonInfoNCEOptions

MOMENTUM = MoonInfoNCEOptions(queue_size=64, queue_mode="momentum")


def args(fp16=False, stage=2, **zero):
    config = {"zero_optimization": {"stage": stage, **zero}}
    return SimpleNamespace(fp16=fp16, hf_deepspeed_config=SimpleNamespace(config=config))


def test_momentum_with_fp16_is_refused_naming_both_options():
    with pytest.raises(MoonInputError) as error:
        refuse_unsupported_momentum(args(fp16=True), MOMENTUM)
    assert "MOON_INFONCE_QUEUE_MODE=momentum" in str(error.value) and "--fp16 true" in str(error.value)


@pytest.mark.parametrize(
    ("zero", "named"),
    [({"zero_hpz_partition_size": 8}, "zero_hpz_partition_size=8"), ({"offload_param": {"device": "nvme"}}, "nvme")],
)
def test_zero3_settings_whose_gathered_copies_bypass_the_swap_are_refused(zero, named):
    with pytest.raises(MoonInputError) as error:
        refuse_unsupported_momentum(args(stage=3, **zero), MOMENTUM)
    assert "MOON_INFONCE_QUEUE_MODE=momentum" in str(error.value) and named in str(error.value)
    refuse_unsupported_momentum(args(stage=3, offload_param={"device": "cpu"}), MOMENTUM)  # cpu offload is fine


def test_other_modes_zero2_and_zero3_pass():
    refuse_unsupported_momentum(args(), MOMENTUM)
    refuse_unsupported_momentum(args(stage=3), MOMENTUM)
    refuse_unsupported_momentum(args(fp16=True, stage=3), MoonInfoNCEOptions(queue_size=64, queue_mode="split"))
    refuse_unsupported_momentum(args(fp16=True, stage=3), MoonInfoNCEOptions())  # no queue


class Engine:
    def __init__(self, stage, optimizer):
        self.stage, self.optimizer = stage, optimizer

    def zero_optimization_stage(self):
        return self.stage


def test_the_zero3_release_is_the_stage3_optimizers_and_nothing_elsewhere():
    emptied = []
    release = zero3_release(Engine(3, SimpleNamespace(empty_partition_cache=lambda: emptied.append(True))))
    release()
    assert emptied == [True]
    assert zero3_release(Engine(2, SimpleNamespace())) is None
    assert zero3_release(object()) is None  # a plain module (no DeepSpeed)
    with pytest.raises(MoonInputError, match="empty_partition_cache"):
        zero3_release(Engine(3, SimpleNamespace()))
