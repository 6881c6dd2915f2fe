"""Peak memory and time per row of a training step, cached (``MOON_GRAD_CACHE_ROWS``) vs uncached, by batch size.

    python benchmarks/cached_steps.py [--batches 16,32,64,128,256] [--chunk 16]

A step is what the moon trainer runs: swift's ``moon`` template collates real catalog rows (a title anchor,
its product with image and markup, 2 same-category hard negatives: 4 rows per sample), the model embeds them
(uncached: all rows at once; cached: ``--chunk`` rows at a time, twice), ``moon_infonce`` and backward. The
model is a stand-in for a real one, larger than the test model so that activations, not the process, show:
MOON on a Qwen2.5-VL layout with hidden size 256, 4 decoder layers, a 2-block vision tower of width 128.

Each (batch, variant) runs twice, each time in a fresh subprocess on the CPU. Memory: the peak is the
process's resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` once the model, the
batch, the gradient buffers and a warm-up step of 4 rows are in memory) minus its resident set then; glibc is
told to return freed blocks (``MALLOC_ENV``), or the resident set would keep what earlier forwards freed.
Time (glibc as it is, which unmapping would slow down): the faster of two steps, per row of the batch. One
intra-op thread: with two on two cores, any other process on the machine stalls every parallel region and
the times vary several-fold from one step to the next.
Printed: one line per batch, then the ratios the option is for: the largest cached peak over the smallest
(goal <= 1.3) and the cached step's time per row over the uncached step's at the same batch (goal <= 1.6).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from process_memory import status_bytes

ROWS_PER_SAMPLE = 4
SHARED_DATA = Path(os.environ.get("MOON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CATALOG = SHARED_DATA / "fashion-catalog-dev"
#: glibc serves allocations from 64 KiB up with mmap and unmaps them on free, so the resident set follows live
#: memory (freed heap blocks would otherwise stay resident and count in every later peak)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def prepare(workdir: Path, samples: int) -> tuple[Path, Path]:
    """The stand-in model and ``samples`` rows with 2 hard negatives each (written once per run)."""
    from moon_swift.apps.tiny_model import TinySpec, make_tiny

    spec = TinySpec(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, vision_hidden_size=128, vision_intermediate_size=256,
                    vision_num_heads=2)  # fmt: skip
    make_tiny(workdir / "model", seed=0, spec=spec)
    command = [str(Path(sys.executable).with_name("moon-swift")), "prepare-data", "--catalog", str(CATALOG),
               "--out", str(workdir / "data"), "--limit", str(samples * 2), "--hard-negatives", "2"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    lines = (workdir / "data" / "train.jsonl").read_text().splitlines()
    rows = [line for line in lines if len(json.loads(line).get("negative_messages") or []) == 2][:samples]
    if len(rows) < samples:
        raise SystemExit(f"only {len(rows)} rows with 2 hard negatives; raise --limit in prepare()")
    (workdir / "rows.jsonl").write_text("\n".join(rows) + "\n")
    return workdir / "model", workdir / "rows.jsonl"


def measure(model_dir: str, rows_file: str, samples: int, chunk: int, what: str) -> dict:
    """One configuration (in its own process): ``chunk`` 0 is the uncached step; ``what``: memory or time."""
    from collections import defaultdict
    from types import SimpleNamespace

    import torch
    from swift.model import get_model_processor
    from swift.template import get_template

    from moon_swift.integrations.swift.cached_steps import cached_forward
    from moon_swift.integrations.swift.registration import register_all
    from moon_swift.losses.moon_infonce import MoonInfoNCELoss

    register_all()
    torch.set_num_threads(1)  # see the module docstring
    torch.manual_seed(0)
    model, processor = get_model_processor(model_dir, model_type="moon", task_type="embedding",
                                           torch_dtype=torch.float32)  # fmt: skip
    template = get_template(processor, template_type="moon")
    template.set_mode("train")
    template.model = model
    template.register_post_encode_hook([model])
    model.train()
    metrics = {"train": defaultdict(lambda: SimpleNamespace(update=lambda value: None))}
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=0), custom_metrics=metrics, model=model)
    loss_fn = MoonInfoNCELoss(SimpleNamespace(resume_from_checkpoint=None), trainer)
    rows = [json.loads(line) for line in Path(rows_file).read_text().splitlines()]

    def step(batch) -> float:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        start = time.perf_counter()
        outputs = cached_forward(model, inputs, chunk) if chunk else model(**inputs)
        loss_fn(outputs, batch["labels"]).backward()
        model.zero_grad(set_to_none=False)  # keep the gradient buffers: a training step holds them too
        return time.perf_counter() - start

    step(template.data_collator([template.encode(row) for row in rows[:1]]))  # warm-up (4 rows)
    batch = template.data_collator([template.encode(row) for row in rows[:samples]])
    rows_in_batch = int(batch["input_ids"].shape[0])
    if what == "time":
        return {"seconds": min(step(batch), step(batch)), "rows": rows_in_batch}
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident set
    before = status_bytes("VmRSS")
    step(batch)
    return {"peak_mib": (status_bytes("VmHWM") - before) / 2**20, "rows": rows_in_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="16,32,64,128,256", help="rows per device (multiples of 4)")
    parser.add_argument("--chunk", type=int, default=16, help="MOON_GRAD_CACHE_ROWS of the cached steps")
    parser.add_argument("--measure", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        model_dir, rows_file, samples, chunk, what = args.measure
        print(json.dumps(measure(model_dir, rows_file, int(samples), int(chunk), what)))
        return
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, rows_file = prepare(Path(tmp), max(batches) // ROWS_PER_SAMPLE)
        results = {}
        for rows in batches:
            for chunk in (0, args.chunk):
                result = {}
                for what, env in (("memory", {**os.environ, **MALLOC_ENV}), ("time", None)):
                    command = [sys.executable, __file__, "--measure", str(model_dir), str(rows_file),
                               str(rows // ROWS_PER_SAMPLE), str(chunk), what]  # fmt: skip
                    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
                    result.update(json.loads(out.strip().splitlines()[-1]))
                results[rows, chunk] = result
    print(f"training step (forward + moon_infonce + backward), stand-in MOON (hidden 256, 4 layers), fp32, CPU; "
          f"cached: {args.chunk} rows per forward")  # fmt: skip
    print(f"{'rows':>6} {'uncached MiB':>13} {'cached MiB':>11} {'uncached ms/row':>16} {'cached ms/row':>14} "
          f"{'time ratio':>11}")  # fmt: skip
    for rows in batches:
        plain, cached = results[rows, 0], results[rows, args.chunk]
        per_row = [1000 * r["seconds"] / r["rows"] for r in (plain, cached)]
        print(f"{rows:>6} {plain['peak_mib']:>13.0f} {cached['peak_mib']:>11.0f} {per_row[0]:>16.1f} "
              f"{per_row[1]:>14.1f} {per_row[1] / per_row[0]:>11.2f}")  # fmt: skip
    cached_peaks = [results[rows, args.chunk]["peak_mib"] for rows in batches]
    plain_peaks = [results[rows, 0]["peak_mib"] for rows in batches]
    ratios = [results[r, args.chunk]["seconds"] / results[r, 0]["seconds"] for r in batches]
    print(f"cached peak, largest / smallest batch: {max(cached_peaks) / min(cached_peaks):.2f} (goal <= 1.3); "
          f"uncached: {max(plain_peaks) / min(plain_peaks):.2f}")  # fmt: skip
    print(f"cached / uncached time per row: {min(ratios):.2f}-{max(ratios):.2f} (goal <= 1.6)")


if __name__ == "__main__":
    main()
