"""GuidedMoE forward+backward time against top_k x the dense FFN on the same tokens (one process).

    python benchmarks/moe_overhead.py [--hidden 512] [--tokens 4096] [--experts 8] [--top-k 2]

Prints medians and the ratios the MoE issue asks for: grouped dispatch (plain routing and guided
routing with 20% category/attribute tokens) and a naive per-token loop, each divided by
``top_k x dense``. A ratio of 1.0 means routing costs nothing beyond the extra expert FLOPs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2MLP

from moon_swift.core.markup import TOKEN_ATTRIBUTE, TOKEN_CATEGORY
from moon_swift.modeling.guided_moe import GuidedMoE, MoeSettings


def timed(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_forward(moe: GuidedMoE, x: torch.Tensor) -> torch.Tensor:
    """The per-token loop a first implementation would write."""
    rows = []
    for token in x:
        probs = moe.router(token[None])[0].softmax(-1)
        weights, experts = probs.topk(moe.top_k)
        weights = weights / weights.sum()
        rows.append(sum(w * moe.experts[e](token[None])[0] for w, e in zip(weights, experts.tolist(), strict=True)))
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--naive-repeats", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    text_config = Qwen2_5_VLConfig(
        text_config={"hidden_size": args.hidden, "intermediate_size": args.intermediate}
    ).text_config
    x = torch.randn(1, args.tokens, args.hidden)

    dense = Qwen2MLP(text_config)
    plain = GuidedMoE(text_config, MoeSettings(args.experts, args.top_k, False, False, 0.01, 0.0), Qwen2MLP)
    guided = GuidedMoE(text_config, MoeSettings(args.experts, args.top_k, True, False, 0.01, 0.0), Qwen2MLP)
    types = torch.zeros(1, args.tokens, dtype=torch.long)
    types[0, : args.tokens // 10], types[0, args.tokens // 10 : args.tokens // 5] = TOKEN_CATEGORY, TOKEN_ATTRIBUTE
    guided.set_routing_context(types, None)

    def fwd_bwd(module, forward=None):
        def step():
            module.zero_grad(set_to_none=True)
            (forward or module)(x.clone().requires_grad_()).sum().backward()

        return step

    t_dense = timed(fwd_bwd(dense), args.repeats)
    t_plain = timed(fwd_bwd(plain), args.repeats)
    t_guided = timed(fwd_bwd(guided), args.repeats)
    t_naive = timed(fwd_bwd(plain, lambda h: naive_forward(plain, h[0])), args.naive_repeats)
    baseline = args.top_k * t_dense
    print(f"tokens={args.tokens} hidden={args.hidden} intermediate={args.intermediate} "
          f"experts={args.experts} top_k={args.top_k} threads={torch.get_num_threads()}")  # fmt: skip
    print(f"dense FFN fwd+bwd                 {t_dense * 1e3:9.1f} ms   baseline top_k x dense {baseline * 1e3:.1f} ms")
    print(f"GuidedMoE plain routing           {t_plain * 1e3:9.1f} ms   ratio {t_plain / baseline:6.2f}")
    print(f"GuidedMoE guided (20% cat/attr)   {t_guided * 1e3:9.1f} ms   ratio {t_guided / baseline:6.2f}")
    print(f"naive per-token loop              {t_naive * 1e3:9.1f} ms   ratio {t_naive / baseline:6.2f}")


if __name__ == "__main__":
    main()
