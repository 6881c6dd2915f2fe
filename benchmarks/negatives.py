"""What ``moon_infonce``'s negatives and momentum encoder cost per training step, measured in one run on this machine.

    python benchmarks/negatives.py [--dim 2048] [--batch 64] [--hard-negatives 1] [--repeats 20] [--threads 1]

Everything runs on ``--threads`` torch threads (1 by default: on a CPU shared with other jobs, two OpenMP
threads wait on each other and a 20 ms loss call took 800 ms); the matmul throughput is measured with the same.

1. The loss alone: forward + backward of the loss on precomputed embeddings that require grad (no encoder),
   ``--batch`` anchors per step with ``--hard-negatives`` each (swift's rows: anchor, positive, negatives per
   sample), for swift's ``infonce`` (reference) and ``MoonInfoNCELoss`` at queue 0 and each ``--queues`` size
   in each queue mode (momentum keys are set before every call, as moon's trainer does). Each queue is filled
   to its size (``NegativeQueue.enqueue``, what the loss does after every call; max age 0 = unlimited) and the
   loss then runs ``--warmup`` calls with ``global_step`` advancing before timing. The timed calls go round
   robin over all configurations (order rotated every round), so a change of the machine's load shows in
   every row alike. Printed: median, interquartile range and min-max of ``--repeats`` calls, ratios against
   moon queue 0 and swift's ``infonce`` of the same run. Two rows differ beyond noise where their IQRs do
   not overlap.
2. Against a 3B training step, by formula: 6 x parameters x tokens per step (Qwen2.5-VL-3B's language model,
   ~3.1e9 parameters, ``--tokens-per-row`` tokens per row; attention FLOPs and the vision tower left out, so
   the step is underestimated and the loss's share overestimated) at this machine's fp32 matmul throughput,
   measured in the same run. On a GPU the small losses are bound by latency and memory bandwidth rather
   than FLOPs, so read the share as an order of magnitude.
3. The momentum encoder: ``MomentumEncoder.update()`` and ``swapped_in()`` (enter + exit: a clone of the
   live values, then two copies) on fp32 stand-ins whose parameters all train (a few big ``nn.Linear``, and
   the 504 adapter tensors of LoRA rank 16 on Qwen2.5-3B), measured; then per billion parameters, and
   extrapolated linearly (formula) to 3B full training and LoRA rank 16. The key forward itself is one
   no-grad forward of the batch: 2 x parameters x tokens, a third of the training step (formula).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time
from collections import defaultdict
from types import SimpleNamespace

QUEUE_MODES = ("momentum", "split", "fifo")
LM_PARAMETERS = 3.1e9  # Qwen2.5-VL-3B's language model (Qwen2.5-3B: 3.09e9 with its embeddings)
#: Qwen2.5-3B's sizes, for the LoRA parameter count
QWEN_3B = {"hidden": 2048, "intermediate": 11008, "layers": 36, "kv": 2 * 128}


class _Mean:
    def __init__(self):
        self.values = []

    def update(self, value):
        self.values.append(float(value))


class TrainerDouble:
    """The few trainer attributes the loss reads (as tests/losses/test_moon_infonce.py's)."""

    def __init__(self):
        self.state = SimpleNamespace(global_step=0)
        self.custom_metrics = {"train": defaultdict(_Mean), "eval": defaultdict(_Mean)}
        self.model = SimpleNamespace(training=True)

    def add_callback(self, callback):
        pass


def lora_shapes(rank: int) -> list[tuple[int, int]]:
    """(rows, columns) of every LoRA A and B matrix on q, k, v, o, gate, up, down of every Qwen2.5-3B layer."""
    h, i, kv = QWEN_3B["hidden"], QWEN_3B["intermediate"], QWEN_3B["kv"]
    modules = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # (in, out)
    return [shape for n_in, n_out in modules for shape in ((rank, n_in), (n_out, rank))] * QWEN_3B["layers"]


def spread(times: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "min": min(times), "max": max(times)}


def matmul_throughput(n: int = 2048, repeats: int = 5) -> float:
    """fp32 FLOP/s of an ``n x n`` matmul (median of ``repeats`` after one warm-up)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def loss_configs(args) -> list[dict]:
    """Each configuration: a name, its loss and what to set before each call."""
    from swift.loss import loss_map

    from moon_swift.losses.moon_infonce import MoonInfoNCELoss, MoonInfoNCEOptions

    os.environ["INFONCE_TEMPERATURE"] = "0.05"  # swift's infonce reads it at every call; moon's default
    swift = loss_map["infonce"](SimpleNamespace(), TrainerDouble())
    configs = [{"name": "infonce (swift)", "mode": "-", "queue": 0, "loss": swift}]
    args_ns = SimpleNamespace(resume_from_checkpoint=None)
    configs.append({"name": "moon_infonce", "mode": "any", "queue": 0,
                    "loss": MoonInfoNCELoss(args_ns, TrainerDouble(), MoonInfoNCEOptions())})  # fmt: skip
    for queue in args.queues:
        for mode in QUEUE_MODES:
            options = MoonInfoNCEOptions(queue_size=queue, queue_mode=mode, queue_max_age=0)
            configs.append({"name": "moon_infonce", "mode": mode, "queue": queue,
                            "loss": MoonInfoNCELoss(args_ns, TrainerDouble(), options)})  # fmt: skip
    return configs


def time_losses(args) -> tuple[list[dict], int]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    rows_per_sample = 2 + args.hard_negatives
    rows = args.batch * rows_per_sample
    labels = torch.tensor(([1.0] + [0.0] * args.hard_negatives) * args.batch)
    # precomputed embeddings (leaves that require grad) and momentum keys, a few batches used in turn
    pool = [F.normalize(torch.randn(rows, args.dim), dim=-1).requires_grad_() for _ in range(4)]
    keys = [F.normalize(torch.randn(rows, args.dim), dim=-1) for _ in range(4)]
    configs = loss_configs(args)
    for config in configs:  # a full queue: random unit vectors with ids no batch uses
        loss = config["loss"]
        for start in range(0, config["queue"], 8192):
            n = min(8192, config["queue"] - start)
            loss.queue.enqueue(F.normalize(torch.randn(n, args.dim), dim=-1), torch.arange(n) + 10**9 + start, 0)
        config["times"], config["step"] = [], 0

    def call(config: dict, timed: bool) -> None:
        loss, config["step"] = config["loss"], config["step"] + 1
        step = config["step"]
        embeddings = pool[step % len(pool)]
        embeddings.grad = None
        loss.trainer.state.global_step = step
        if hasattr(loss, "momentum_keys"):
            loss.momentum_keys = keys[step % len(keys)]
        outputs = {"last_hidden_state": embeddings}
        if config["mode"] != "-":
            outputs["group_ids"] = torch.arange(rows) + step * rows
        start = time.perf_counter()
        loss(outputs, labels).backward()
        if timed:
            config["times"].append(time.perf_counter() - start)

    for config in configs:
        for _ in range(args.warmup):
            call(config, timed=False)
    for round_ in range(args.repeats):
        shift = round_ % len(configs)
        for config in configs[shift:] + configs[:shift]:
            call(config, timed=True)
    for config in configs:
        metrics = config["loss"].trainer.custom_metrics["train"]
        config["filled"] = metrics["moon_infonce/queue_length"].values[-1] if config["mode"] != "-" else 0
        config["stats"] = spread(config["times"])
        del config["loss"]
    return configs, rows


def momentum_costs(args) -> list[dict]:
    import torch
    from torch import nn

    from moon_swift.losses.momentum_encoder import MomentumEncoder

    def measure(name: str, model: nn.Module) -> dict:
        encoder = MomentumEncoder(model, momentum=0.99)
        update, swap = [], []
        for i in range(args.momentum_repeats + 1):
            start = time.perf_counter()
            encoder.update()
            middle = time.perf_counter()
            with encoder.swapped_in():
                pass
            end = time.perf_counter()
            if i:  # the first round warms up
                update.append(middle - start)
                swap.append(end - middle)
        return {"name": name, "params": encoder.numel(), "tensors": len(encoder.params), "update": spread(update),
                "swap": spread(swap)}  # fmt: skip

    torch.manual_seed(0)
    big = nn.Sequential(*(nn.Linear(args.stand_in_width, args.stand_in_width, bias=False)
                          for _ in range(args.stand_in_layers)))  # fmt: skip
    found = [measure(f"{args.stand_in_layers} x Linear {args.stand_in_width}", big)]
    del big
    gc.collect()
    lora = nn.ParameterList(nn.Parameter(torch.randn(shape) * 0.01) for shape in lora_shapes(16))
    found.append(measure("LoRA r16 adapters of Qwen2.5-3B", lora))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64, help="anchors per step (per rank)")
    parser.add_argument("--hard-negatives", type=int, default=1)
    parser.add_argument("--queues", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--repeats", type=int, default=20, help="timed loss calls per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed loss calls per configuration first")
    parser.add_argument("--tokens-per-row", type=int, default=512, help="assumed for the 3B step formula")
    parser.add_argument("--stand-in-width", type=int, default=4096)
    parser.add_argument("--stand-in-layers", type=int, default=6)
    parser.add_argument("--momentum-repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the matmul throughput uses the same)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    began = time.perf_counter()
    flops = matmul_throughput()
    configs, rows = time_losses(args)
    gc.collect()
    momentum = momentum_costs(args)
    flops = (flops + matmul_throughput()) / 2  # before and after: the machine's load may have changed

    tokens = rows * args.tokens_per_row
    step_ms = 6 * LM_PARAMETERS * tokens / flops * 1e3
    base = next(c["stats"]["median"] for c in configs if c["mode"] == "any")
    swift = configs[0]["stats"]["median"]
    print(f"dim={args.dim} anchors/step={args.batch} hard negatives/anchor={args.hard_negatives} rows/step={rows} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} (after {args.warmup} warm-up calls)")  # fmt: skip
    print(f"fp32 matmul 2048^3: {flops / 1e9:.0f} GFLOP/s (mean of before and after the loss timings)")
    print(f"3B step (formula) = 6 x {LM_PARAMETERS:.1e} params x {tokens} tokens ({rows} rows x {args.tokens_per_row} "
          f"assumed) = {6 * LM_PARAMETERS * tokens:.2e} FLOP = {step_ms:.3g} ms at that rate")  # fmt: skip
    print()
    print("1-2. loss forward + backward alone (measured); last column: its share of the 3B step (formula)")
    print(f"{'loss':<17}{'mode':<10}{'queue':>6}{'queued':>7}{'median ms':>10}{'IQR ms':>16}{'min-max ms':>16}"
          f"{'x queue 0':>10}{'x infonce':>10}{'% of 3B step (formula)':>24}")  # fmt: skip
    for c in configs:
        s = c["stats"]
        share = s["median"] * 1e3 / step_ms * 100
        print(f"{c['name']:<17}{c['mode']:<10}{c['queue']:>6}{c['filled']:>7.0f}{s['median'] * 1e3:>10.1f}"
              f"{s['q1'] * 1e3:>8.1f}-{s['q3'] * 1e3:<7.1f}{s['min'] * 1e3:>8.1f}-{s['max'] * 1e3:<7.1f}"
              f"{s['median'] / base:>10.2f}{s['median'] / swift:>10.2f}{share:>24.3g}")  # fmt: skip
    print()
    print("3. momentum encoder per optimizer step: update() and swapped_in() enter+exit, fp32, every parameter trained")
    print(f"{'stand-in':<34}{'params':>12}{'tensors':>8}{'update ms':>10}{'(min-max)':>16}{'swap ms':>10}"
          f"{'(min-max)':>16}{'ms/1e9 params':>14}")  # fmt: skip
    for m in momentum:
        u, w = m["update"], m["swap"]
        per_billion = (u["median"] + w["median"]) * 1e3 / (m["params"] / 1e9)
        print(f"{m['name']:<34}{m['params']:>12,}{m['tensors']:>8}{u['median'] * 1e3:>10.1f}"
              f"{u['min'] * 1e3:>8.1f}-{u['max'] * 1e3:<7.1f}{w['median'] * 1e3:>10.1f}"
              f"{w['min'] * 1e3:>8.1f}-{w['max'] * 1e3:<7.1f}{per_billion:>14.0f}")  # fmt: skip
    big = momentum[0]
    per_param = (big["update"]["median"] + big["swap"]["median"]) / big["params"]
    lora_params = sum(r * c for r, c in lora_shapes(16))
    print()
    print(f"extrapolated linearly from the {big['name']} stand-in (formula); LoRA r16 = q,k,v,o,gate,up,down x "
          f"{QWEN_3B['layers']} layers (hidden {QWEN_3B['hidden']}, intermediate {QWEN_3B['intermediate']}, "
          f"kv {QWEN_3B['kv']})")  # fmt: skip
    print(f"{'trained parameters':<34}{'params':>12}{'update+swap ms (formula)':>26}{'% of 3B step (formula)':>24}")
    for name, params in (("3B full training", LM_PARAMETERS), ("LoRA rank 16", lora_params)):
        ms = per_param * params * 1e3
        print(f"{name:<34}{params:>12,.0f}{ms:>26.1f}{ms / step_ms * 100:>24.3g}")
    print(f"{'key forward (no-grad, formula)':<34}{'':>12}{step_ms / 3:>26.3g}{100 / 3:>24.1f}")
    print()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB; wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
