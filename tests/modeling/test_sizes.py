"""Parameter counts and the training-memory estimate `moon-swift upcycle` prints."""

from __future__ import annotations

import dataclasses

import pytest

from moon_swift.apps.tiny_model import QWEN2_5_VL_3B, TinySpec, build_config
from moon_swift.modeling.sizes import TrainingPlan, parameter_counts, training_memory

GUIDED = {"moe_layers": "every:4", "num_experts": 4, "moe_top_k": 2}


def config_3b(**moon):
    return build_config(dataclasses.replace(QWEN2_5_VL_3B, extra_config=moon))


def test_counts_are_the_built_models():
    from moon_swift.modeling.modeling_moon import MoonModel

    config = build_config(TinySpec(extra_config={"moe_layers": "all", "num_experts": 4, "moe_top_k": 2}))
    model = MoonModel(config)
    counts = parameter_counts(config)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.vision == sum(p.numel() for p in model.model.visual.parameters())
    ffn = sum(p.numel() for p in model.moe_layers()[0].experts[0].parameters())
    # a routed token skips 2 of 4 routed experts and both guided experts, in every MoE layer
    assert counts.per_routed_token == counts.total - len(model.moe_layers()) * ffn * (2 + 2)


def test_the_guided_moe_3b_adds_five_ffn_copies_and_a_router_in_nine_layers():
    dense, moe = parameter_counts(config_3b()), parameter_counts(config_3b(**GUIDED))
    ffn = 3 * 2048 * 11008
    assert dense.total == dense.per_routed_token == 3_754_622_976  # Qwen2.5-VL-3B without its (tied) LM head
    assert moe.total - dense.total == 9 * (5 * ffn + 2048 * 4)
    assert moe.total == 6_798_188_544 and moe.moe_layers == 9
    assert moe.per_routed_token == moe.total - 9 * 4 * ffn  # 2 unchosen + 2 guided experts idle


def test_zero3_partitions_the_momentum_average_and_activations_follow_the_batch():
    config = config_3b(**GUIDED)
    counts = parameter_counts(config)
    plan = TrainingPlan()
    memory = training_memory(counts, config, plan)
    assert memory["ZeRO-2"]["momentum"] == 4 * counts.total == 8 * memory["ZeRO-3"]["momentum"]
    # DeepSpeed's formulas without offload: bf16 weights replicated (ZeRO-2) or one layer gathered (ZeRO-3), and
    # 18 bytes per parameter of gradients, fp32 master weights and Adam states over the 8 GPUs
    assert memory["ZeRO-2"]["model_states"] == 2 * counts.total + int(18 * counts.total / 8)
    assert memory["ZeRO-3"]["model_states"] == 4 * counts.largest_layer + int(18 * counts.total / 8)
    assert counts.largest_layer == 4 * 2048 + 6 * 3 * 2048 * 11008  # a whole MoE layer: ZeRO-3 gathers it at once
    for entry in memory.values():
        assert entry["total"] == entry["model_states"] + entry["momentum"] + entry["activations"]
    halved = training_memory(counts, config, dataclasses.replace(plan, rows_per_gpu=16, momentum=False))
    assert halved["ZeRO-2"]["momentum"] == 0
    assert halved["ZeRO-2"]["activations"] == pytest.approx(memory["ZeRO-2"]["activations"] / 2)
