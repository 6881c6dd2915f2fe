"""What a MOON model costs before it is launched: parameters in all and per token, and training memory per GPU.

The counts are exact: the model is built on the meta device (no memory) and its parameters counted. The memory
is a formula: DeepSpeed's own model-state estimators for ZeRO-2 and ZeRO-3 without offload (bf16 weights and
gradients, fp32 master weights and Adam states), the momentum encoder's fp32 average where the queue uses it,
and the decoder's activations under gradient checkpointing (each decoder layer's bf16 input kept, one layer
recomputed at a time) for a given number of tokens per sequence. Not counted: the vision tower's activations
(they depend on each row's images: at 2 x 512 merged tokens per product, its 32 checkpointed blocks keep
about 0.3 GB per sequence in bf16), the momentum swap's buffer of the live values during the key forward
(2 bytes per trained parameter, while the trained forward's activations are not yet held), allocator slack.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import MoonInputError
from .configuration_moon import MoonConfig
from .guided_moe import GuidedMoE

GIB = 2**30


def _numel(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of a MOON model; ``per_routed_token``: those a routed (not category / attribute) text or image
    token passes through in the decoder, with the vision tower counted in full."""

    total: int
    vision: int
    moe_layers: int
    per_routed_token: int
    largest_layer: int  # the most parameters ZeRO-3 gathers at once: a module's own, or a whole MoE layer (a leaf)

    def lines(self) -> list[str]:
        share = self.per_routed_token / self.total
        return [f"parameters: {self.total / 1e9:.2f}B in all ({self.vision / 1e9:.2f}B vision), "
                f"{self.per_routed_token / 1e9:.2f}B per routed token ({share:.0%}; "
                f"{self.moe_layers} guided-MoE layers)"]  # fmt: skip


def parameter_counts(config: MoonConfig) -> ParameterCounts:
    """Exact counts of the model ``config`` builds (on the meta device)."""
    from .modeling_moon import MoonModel

    with torch.device("meta"):
        model = MoonModel(config)
    total = _numel(model)
    idle = 0  # parameters of a MoE layer a routed token does not pass: unchosen and guided experts
    moe_layers = [module for module in model.modules() if isinstance(module, GuidedMoE)]
    for moe in moe_layers:
        expert = _numel(moe.experts[0])
        idle += expert * (moe.num_experts - moe.top_k)
        idle += _numel(getattr(moe, "category_expert", None)) + _numel(getattr(moe, "attribute_expert", None))
    vision = _numel(model.model.visual)
    largest = max([sum(p.numel() for p in module.parameters(recurse=False)) for module in model.modules()]
                  + [_numel(moe) for moe in moe_layers])  # fmt: skip
    return ParameterCounts(total, vision, len(moe_layers), total - idle, largest)


@dataclass(frozen=True)
class TrainingPlan:
    """What a run trains with: GPUs, rows per GPU and step, products per row (anchor + positive + hard
    negatives), tokens per sequence, and whether ``moon_infonce``'s momentum encoder keeps an average."""

    gpus: int = 8
    rows_per_gpu: int = 32
    products_per_row: int = 3
    tokens: int = 2048
    momentum: bool = True

    def __post_init__(self):
        for name, least in (("gpus", 1), ("rows_per_gpu", 1), ("products_per_row", 2), ("tokens", 1)):
            if getattr(self, name) < least:
                raise MoonInputError(f"the training plan's {name} must be at least {least}, got "
                                     f"{getattr(self, name)}", field=name)  # fmt: skip

    def describe(self) -> str:
        return (f"{self.gpus} GPUs, {self.rows_per_gpu} rows per GPU x {self.products_per_row} sequences, bf16, "
                "gradient checkpointing"
                + (", momentum encoder" if self.momentum else ""))  # fmt: skip


def activation_bytes(config: MoonConfig, plan: TrainingPlan) -> int:
    """Gradient-checkpointed decoder activations (formula): every layer's bf16 input kept, plus one layer's
    recompute (attention projections and the FFN's three intermediate tensors, bf16, times top-k where the
    layers are MoE; flash / SDPA attention without the score matrix) for ``rows_per_gpu x products_per_row``
    sequences of ``tokens`` tokens."""
    text = config.text_config
    tokens = plan.rows_per_gpu * plan.products_per_row * plan.tokens
    kept = text.num_hidden_layers * tokens * text.hidden_size * 2
    kv = 2 * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    ffns = config.moe_top_k if config.moe_layers else 1
    one_layer = tokens * (4 * text.hidden_size + kv + 3 * text.intermediate_size * ffns) * 2
    return kept + one_layer


def training_memory(counts: ParameterCounts, config: MoonConfig, plan: TrainingPlan) -> dict[str, dict[str, int]]:
    """Bytes per GPU under ZeRO-2 and ZeRO-3 (formula): ``model_states`` (DeepSpeed's estimators), ``momentum``
    (the fp32 average: replicated under ZeRO-2, one partition per GPU under ZeRO-3), ``activations``, ``total``."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    _, zero2 = estimate_zero2_model_states_mem_needs(counts.total, num_gpus_per_node=plan.gpus, cpu_offload=False)
    _, zero3, _ = estimate_zero3_model_states_mem_needs(counts.total, counts.largest_layer, num_gpus_per_node=plan.gpus,
                                                     cpu_offload=False, cpu_offload_params=False)  # fmt: skip
    average = 4 * counts.total if plan.momentum else 0
    activations = activation_bytes(config, plan)
    memory = {"ZeRO-2": {"model_states": zero2, "momentum": average},
              "ZeRO-3": {"model_states": zero3, "momentum": average // plan.gpus}}  # fmt: skip
    for entry in memory.values():
        entry["activations"] = activations
        entry["total"] = sum(entry.values())
    return memory


def memory_lines(counts: ParameterCounts, config: MoonConfig, plan: TrainingPlan) -> list[str]:
    """What ``moon-swift upcycle`` prints after the parameter line."""
    lines = [f"estimated training memory per GPU (formula; {plan.describe()}; every sequence at {plan.tokens} "
             "tokens; vision-tower activations not included):"]  # fmt: skip
    for stage, entry in training_memory(counts, config, plan).items():
        lines.append(f"  {stage}: {entry['total'] / GIB:6.1f} GiB = model states {entry['model_states'] / GIB:.1f}"
                     f" + momentum average {entry['momentum'] / GIB:.1f}"
                     f" + decoder activations {entry['activations'] / GIB:.1f}")  # fmt: skip
    return lines
