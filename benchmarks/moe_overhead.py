"""GuidedMoE forward+backward against the FLOP floor and transformers' own expert implementations.

    python benchmarks/moe_overhead.py [--hidden 512] [--intermediate 1408] [--tokens 4096] [--experts 8]
                                      [--top-k 2] [--guided-share 0.2] [--rounds 9]

Every contender computes the same layer on the same tokens: ``guided-share`` of them (half category, half
attribute) go to one guided expert each, the others to ``top_k`` of ``experts`` general experts by a softmax
router. Contenders:

- **FLOP floor**: the dense FFN (``Qwen2MLP``) run once over as many rows as the layer has (token, expert)
  pairs, ``guided + routed x top_k``: the expert matmuls with no routing, gathering or scattering at all.
  With the defaults that is ``0.2 + 0.8 x 2 = 1.8`` tokens' worth, 0.9x ``top_k x dense``.
- **transformers eager / batched_mm / grouped_mm**: ``Qwen3MoeExperts`` (fused 3-D expert weights,
  ``@use_experts_implementation``) with ``experts + 2`` experts and ``config._experts_implementation`` set to
  each; the router is the same ``nn.Linear``; guided tokens go through a second call with ``top_k = 1`` (the
  cheapest way to give them one expert with that interface).
- **GuidedMoE**: this project's layer (one ``Qwen2MLP`` per expert, so LoRA reaches every expert).

Rounds are interleaved (each round times every contender once, in a rotated order) so that a load change on
the machine hits all of them alike; the medians and each contender's min-max are printed, and the ratios
are medians over the FLOP floor's median. One process, torch's default threads, float32.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen3MoeConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2MLP
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

from moon_swift.core.markup import TOKEN_ATTRIBUTE, TOKEN_CATEGORY, TOKEN_OTHER
from moon_swift.modeling.guided_moe import GuidedMoE, MoeSettings

Step = Callable[[], None]


class TransformersGuidedMoE(nn.Module):
    """Guided routing on transformers' fused experts: general experts ``0..E-1``, category ``E``, attribute
    ``E+1``; the weights are copied from a :class:`GuidedMoE` so that both compute the same function."""

    def __init__(self, moe: GuidedMoE, implementation: str):
        super().__init__()
        first = moe.experts[0]
        hidden, intermediate = first.gate_proj.in_features, first.gate_proj.out_features
        config = Qwen3MoeConfig(hidden_size=hidden, moe_intermediate_size=intermediate,
                                num_experts=moe.num_experts + 2, hidden_act="silu")  # fmt: skip
        config._experts_implementation = implementation
        self.experts = Qwen3MoeExperts(config)
        self.router, self.top_k, self.num_experts = moe.router, moe.top_k, moe.num_experts
        ffns = [*moe.experts, moe.category_expert, moe.attribute_expert]
        with torch.no_grad():
            gate_up = [torch.cat([f.gate_proj.weight, f.up_proj.weight]) for f in ffns]
            self.experts.gate_up_proj.copy_(torch.stack(gate_up))
            self.experts.down_proj.copy_(torch.stack([f.down_proj.weight for f in ffns]))
        self.token_types: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        types = self.token_types.reshape(-1)
        out = torch.zeros_like(x)
        routed = (types == TOKEN_OTHER).nonzero().squeeze(-1)
        probs = self.router(x[routed]).float().softmax(-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out.index_add_(0, routed, self.experts(x[routed], chosen, weights))
        guided = (types != TOKEN_OTHER).nonzero().squeeze(-1)
        expert = torch.where(types[guided] == TOKEN_CATEGORY, self.num_experts, self.num_experts + 1)
        out.index_add_(0, guided, self.experts(x[guided], expert[:, None], x.new_ones(len(guided), 1)))
        return out.view(hidden_states.shape)


def fwd_bwd(module: nn.Module, x: torch.Tensor) -> Step:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        module(x.clone().requires_grad_()).float().sum().backward()

    return step


def interleaved(steps: dict[str, Step], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each step, over ``rounds`` rounds that each run every step once (rotated order)."""
    names = list(steps)
    for name in names:
        steps[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--guided-share", type=float, default=0.2, help="share of category + attribute tokens")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--max-gather-gib", type=float, default=4.0, help="skip batched_mm above this")
    args = parser.parse_args()
    if not 0 <= args.guided_share < 1:
        parser.error(f"--guided-share must be in [0, 1), got {args.guided_share}")
    torch.manual_seed(0)
    text_config = Qwen2_5_VLConfig(
        text_config={"hidden_size": args.hidden, "intermediate_size": args.intermediate}
    ).text_config
    x = torch.randn(1, args.tokens, args.hidden)
    guided_tokens = round(args.tokens * args.guided_share)
    types = torch.full((1, args.tokens), TOKEN_OTHER, dtype=torch.long)
    types[0, : guided_tokens // 2], types[0, guided_tokens // 2 : guided_tokens] = TOKEN_CATEGORY, TOKEN_ATTRIBUTE
    types = types[:, torch.randperm(args.tokens)]  # guided tokens spread through the sequence, as in products
    pairs = guided_tokens + (args.tokens - guided_tokens) * args.top_k

    moe = GuidedMoE(text_config, MoeSettings(args.experts, args.top_k, True, False, 0.01, 0.0), Qwen2MLP)
    moe.set_routing_context(types, None)
    floor = Qwen2MLP(text_config)
    steps = {"FLOP floor (dense FFN on every pair)": fwd_bwd(floor, torch.randn(1, pairs, args.hidden))}
    skipped = {}
    for implementation in ("eager", "batched_mm", "grouped_mm"):
        if implementation == "batched_mm":  # gathers each pair's expert weights: a weight copy per pair
            gib = pairs * 3 * args.intermediate * args.hidden * 4 / 2**30
            if gib > args.max_gather_gib:
                skipped[f"transformers {implementation}"] = f"would gather {gib:.1f} GiB of weight copies"
                continue
        fused = TransformersGuidedMoE(moe, implementation)
        fused.token_types = types
        with torch.no_grad():
            torch.testing.assert_close(fused(x), moe(x), atol=1e-4, rtol=1e-4)  # the same function
        steps[f"transformers {implementation}"] = fwd_bwd(fused, x)
    steps["GuidedMoE"] = fwd_bwd(moe, x)

    times = interleaved(steps, args.rounds)
    base = statistics.median(times[next(iter(steps))])
    print(f"tokens={args.tokens} (guided {guided_tokens}) hidden={args.hidden} intermediate={args.intermediate} "
          f"experts={args.experts} top_k={args.top_k} pairs={pairs} ({pairs / args.tokens:.2f} per token) "
          f"threads={torch.get_num_threads()} rounds={args.rounds}")  # fmt: skip
    print(f"{'forward + backward':38s} {'median ms':>10s} {'min-max ms':>16s} {'/ floor':>8s}")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f}"
        print(f"{name:38s} {median * 1e3:10.1f} {spread:>16s} {median / base:8.3f}")
    for name, why in skipped.items():
        print(f"{name:38s} not run: {why} (it is meant for a few tokens at a time)")


if __name__ == "__main__":
    main()
