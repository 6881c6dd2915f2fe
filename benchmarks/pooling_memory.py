"""Peak memory of mean pooling (forward + backward) on bf16 hidden states: float32 copy vs chunked matmul.

    python benchmarks/pooling_memory.py [--rows 96] [--tokens 2048] [--hidden 2048]

Each variant runs in a fresh subprocess on the CPU; the peak is the process's resident-set high-water
mark (``VmHWM``, reset through ``/proc/self/clear_refs`` after the inputs exist) minus its resident set
then. Printed: each variant's extra peak in MiB, the size of the bf16 gradient that backward must
allocate whatever the pooling (the floor), and the ratios. Defaults are the paper-scale batch of the
correctness issue: 96 rows x 2k tokens x 2048 (Qwen2.5-VL-3B's hidden size).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from process_memory import status_bytes


def float_copy_mean_pool(hidden, mask):
    """moon-swift's pooling before: the whole states in float32, times the mask, summed."""
    mask = mask.to(hidden.device, hidden.new_zeros(()).float().dtype).unsqueeze(-1)
    return (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def measure(variant: str, rows: int, tokens: int, hidden_size: int) -> dict:
    import torch

    from moon_swift.modeling.modeling_moon import mean_pool

    pool = {"float_copy": float_copy_mean_pool, "chunked": mean_pool}[variant]
    torch.manual_seed(0)
    hidden = torch.randn(rows, tokens, hidden_size, dtype=torch.bfloat16).requires_grad_()
    mask = torch.ones(rows, tokens)
    mask[: rows // 2, tokens // 2 :] = 0  # half the rows padded to half length
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident set
    before = status_bytes("VmRSS")
    start = time.perf_counter()
    pooled = pool(hidden, mask)
    pooled.square().sum().backward()
    seconds = time.perf_counter() - start
    return {"peak_mib": (status_bytes("VmHWM") - before) / 2**20, "seconds": seconds, "dtype": str(pooled.dtype)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.rows, args.tokens, args.hidden)))
        return
    sizes = ["--rows", str(args.rows), "--tokens", str(args.tokens), "--hidden", str(args.hidden)]
    results = {}
    for variant in ("float_copy", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, *sizes], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        results[variant] = json.loads(out.strip().splitlines()[-1])
    floor = args.rows * args.tokens * args.hidden * 2 / 2**20  # the bf16 gradient of the states
    print(f"mean pooling, forward + backward, {args.rows} rows x {args.tokens} tokens x {args.hidden} bf16 (CPU)")
    for variant, result in results.items():
        print(f"  {variant:10s} extra peak {result['peak_mib']:8.0f} MiB   {result['seconds']:.2f} s   "
              f"output {result['dtype']}")  # fmt: skip
    print(f"  floor (bf16 gradient of the states): {floor:.0f} MiB")
    old, new = results["float_copy"]["peak_mib"], results["chunked"]["peak_mib"]
    print(f"  peak ratio float_copy / chunked: {old / new:.2f}; chunked / floor: {new / floor:.2f}")


if __name__ == "__main__":
    main()
