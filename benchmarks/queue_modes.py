"""Temporal-queue modes on the project's data: held-out retrieval of MOON with and without the queue, over seeds.

    python benchmarks/queue_modes.py [--workdir runs/queue_modes] [--seeds 0 1 2] [--variants ...]

For each seed, one ``moon-swift demo --seed S --variants ...`` run (the tiny model, the dev catalog, one epoch
of ``swift sft`` per variant; a rerun reuses finished variants), with the collapse rule off
(``MOON_INFONCE_COLLAPSE_PATIENCE=0``) so each mode's own behaviour is what is measured. Printed: title ->
product R@1, R@10 and MRR on the 315 held-out products, mean +- std over the seeds and each seed's value,
then each variant's difference to MOON and whether it is separated (larger than twice the pooled std).
About 4 minutes per seed and variant on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = (("R@1", "retrieval/title->product/recall@1"), ("R@10", "retrieval/title->product/recall@10"),
           ("MRR", "retrieval/title->product/mrr"))  # fmt: skip
DEFAULT_VARIANTS = ("MOON", "+ time queue", "+ queue split")


def run_seed(workdir: Path, seed: int, variants: list[str]) -> dict[str, dict[str, float]]:
    moon_swift = Path(sys.executable).with_name("moon-swift")
    command = [str(moon_swift), "demo", "--workdir", str(workdir), "--seed", str(seed), "--variants", *variants]
    env = {**os.environ, "MOON_INFONCE_COLLAPSE_PATIENCE": "0"}
    print("$ " + " ".join(command), flush=True)
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "queue_modes.log").open("w") as log:  # the demo's own output, for when it fails
        subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return json.loads((workdir / "results.json").read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="runs/queue_modes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    args = parser.parse_args()
    if args.variants[0] != "MOON":
        args.variants = ["MOON", *[v for v in args.variants if v != "MOON"]]
    results = {seed: run_seed(Path(args.workdir) / f"s{seed}", seed, args.variants) for seed in args.seeds}

    print(f"\ntitle -> product, 315 held-out products, seeds {args.seeds} (mean +- std; per seed)")
    print(f"{'variant':<15}" + "".join(f"{label:>33}" for label, _ in METRICS))
    values = {v: {k: [results[s][v][k] for s in args.seeds] for _, k in METRICS} for v in args.variants}
    for variant in args.variants:
        cells = []
        for _, key in METRICS:
            seen = values[variant][key]
            std = statistics.stdev(seen) if len(seen) > 1 else float("nan")
            cells.append(f"{statistics.mean(seen):.3f}+-{std:.3f} (" + " ".join(f"{x:.3f}" for x in seen) + ")")
        print(f"{variant:<15}" + "".join(f"{cell:>33}" for cell in cells))

    print("\ndifference to MOON (separated: |difference| > 2 x pooled std)")
    for variant in args.variants[1:]:
        cells = []
        for label, key in METRICS:
            a, b = values["MOON"][key], values[variant][key]
            pooled = ((statistics.variance(a) + statistics.variance(b)) / 2) ** 0.5 if len(a) > 1 else float("nan")
            difference = statistics.mean(b) - statistics.mean(a)
            verdict = "separated" if abs(difference) > 2 * pooled else "not separated"
            cells.append(f"{label} {difference:+.3f} ({verdict})")
        print(f"{variant:<15}  " + "   ".join(cells))


if __name__ == "__main__":
    main()
