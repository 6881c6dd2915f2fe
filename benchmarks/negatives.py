"""Negatives per anchor, step time and peak memory: swift's ``infonce`` vs ``moon_infonce`` (queue 0/4k/16k).

    python benchmarks/negatives.py [--dim 2048] [--batch 64] [--hard-negatives 1]

Each configuration runs in its own process (so peak RSS is its own) and times a training step of
a stand-in encoder (a 2-layer transformer, d=1024, 64 tokens per row, projected to ``--dim``)
followed by the loss. Ratios are against plain ``infonce`` measured the same way on this machine.
The real model (Qwen2.5-VL-3B) costs orders of magnitude more per step than the stand-in, so the
overhead printed here is an upper bound of the real one.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time
from types import SimpleNamespace

CONFIGS = [("infonce (swift)", None), ("moon_infonce queue 0", 0), ("moon_infonce queue 4k", 4096),
           ("moon_infonce queue 16k", 16384)]  # fmt: skip


class _Trainer:
    def __init__(self):
        from collections import defaultdict

        class Mean:
            def __init__(self):
                self.values = []

            def update(self, value):
                self.values.append(float(value))

        self.state = SimpleNamespace(global_step=0)
        self.custom_metrics = {"train": defaultdict(Mean), "eval": defaultdict(Mean)}
        self.model = SimpleNamespace(training=True)

    def add_callback(self, callback):
        pass


def run(config: tuple[str, int | None], args: argparse.Namespace, results) -> None:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    name, queue = config
    if queue is None:
        from swift.loss import loss_map

        os.environ["INFONCE_TEMPERATURE"] = "0.05"
        loss_fn = loss_map["infonce"](SimpleNamespace(), _Trainer())
    else:
        from moon_swift.losses.moon_infonce import MoonInfoNCELoss

        os.environ["MOON_INFONCE_QUEUE_SIZE"] = str(queue)
        loss_fn = MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=None), _Trainer())
    rows_per_sample = 2 + args.hard_negatives
    rows = args.batch * rows_per_sample
    layer = torch.nn.TransformerEncoderLayer(1024, 16, 4096, batch_first=True)
    encoder = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, 2), torch.nn.Linear(1024, args.dim))
    optimizer = torch.optim.SGD(encoder.parameters(), lr=1e-4)
    labels = torch.tensor(([1.0] + [0.0] * args.hard_negatives) * args.batch)

    def step(i: int) -> float:
        tokens = torch.randn(rows, args.tokens, 1024)
        start = time.perf_counter()
        embeddings = F.normalize(encoder(tokens).mean(dim=1), dim=-1)
        if queue is not None:
            loss_fn.trainer.state.global_step = i
        loss = loss_fn({"last_hidden_state": embeddings}, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    # fill the queue first (real training reaches a full queue after queue/rows steps)
    if queue:
        with torch.no_grad():
            for i in range(-(-queue // (args.batch * (rows_per_sample - 1)))):
                loss_fn.queue.enqueue(
                    F.normalize(torch.randn(rows, args.dim), dim=-1), torch.arange(rows) + i * rows, 0
                )
    times = [step(i) for i in range(args.steps + 1)][1:]
    negatives = (
        loss_fn.trainer.custom_metrics["train"]["moon_infonce/negatives_per_anchor"].values[-1]
        if queue is not None
        else args.batch * (rows_per_sample - 1) - 1
    )
    results[name] = (statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, negatives)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64, help="anchors per step")
    parser.add_argument("--hard-negatives", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    context = mp.get_context("spawn")
    results = context.Manager().dict()
    for config in CONFIGS:
        process = context.Process(target=run, args=(config, args, results))
        process.start()
        process.join()
    base_time, base_rss, _ = results[CONFIGS[0][0]]
    print(f"dim={args.dim} anchors/step={args.batch} hard negatives/row={args.hard_negatives} "
          f"stand-in encoder: 2-layer transformer d=1024 x {args.tokens} tokens")  # fmt: skip
    print(f"{'loss':<26}{'negatives/anchor':>17}{'step ms':>10}{'x infonce':>11}{'peak RSS MB':>13}{'+MB':>8}")
    for name, _ in CONFIGS:
        step_time, rss, negatives = results[name]
        print(f"{name:<26}{negatives:>17.0f}{step_time * 1e3:>10.0f}{step_time / base_time:>11.3f}{rss:>13.0f}"
              f"{rss - base_rss:>8.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
