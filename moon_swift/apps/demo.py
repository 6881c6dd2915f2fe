"""The CPU demo: tiny MOON trained by the real ``swift sft`` on real products, with the paper's ablations.

One run builds a tiny Qwen2.5-VL base and upcycles it twice (dense and guided MoE, identical at
step 0), detects the core product of every image with the bundled MMDetection detector, trains four
variants and evaluates them with the untrained model on held-out products:

* MOON: guided MoE + [original, crop] + ``moon_infonce`` with one same-category hard negative per
  pair and false-negative masking (one process: no spatial negatives);
* the ablations, one change each: dense FFNs; original images only; swift's plain ``infonce`` with
  in-batch negatives only; and MOON plus the temporal queue (``MOON_INFONCE_QUEUE_SIZE``).

Every figure printed comes from this run. A rerun reuses finished variants (``done.json`` beside
their checkpoint, written last) and the detector's box store, and retrains anything unfinished.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import MoonInputError
from ..data import read_fashion_catalog, split_records, title_to_product_rows, write_jsonl, write_records
from ..data.negatives import category_negatives
from ..eval.encode import ProductEncoder
from ..eval.report import flatten, metrics_by_task
from ..eval.run import evaluate_outcomes
from ..losses.moon_infonce import QUEUE_WEIGHTS
from ..modeling.upcycle import upcycle
from .tiny_model import make_tiny

GUIDED_MOE = {"moe_layers": "all", "num_experts": 4, "moe_top_k": 2, "guided_experts": True}
#: the temporal-queue variants: 16 rows x 2 products per step, so 8 steps of age fill the 256 entries
QUEUE = {"MOON_INFONCE_QUEUE_SIZE": "256", "MOON_INFONCE_QUEUE_MAX_AGE": "8", "MOON_INFONCE_QUEUE_START": "20"}


@dataclass(frozen=True)
class Variant:
    name: str
    moe: bool = True
    crops: bool = True
    loss: str = "moon_infonce"
    hard_negatives: bool = True
    queue: str | None = None  # MOON_INFONCE_QUEUE_MODE of the temporal queue; None: no queue

    def describe(self) -> str:
        parts = ["guided MoE" if self.moe else "dense", "original + crop" if self.crops else "original only",
                 self.loss, "hard negatives" if self.hard_negatives else "in-batch negatives"]  # fmt: skip
        return ", ".join(parts + ([f"temporal queue ({self.queue})"] if self.queue else []))

    def environment(self, boxes: Path) -> dict[str, str]:
        """moon's settings for this variant (training and evaluation must agree on the image views)."""
        env = {"MOON_IMAGE_VIEWS": "both" if self.crops else "original", "MOON_BOXES": str(boxes) if self.crops else ""}
        return {**env, **({**QUEUE, "MOON_INFONCE_QUEUE_MODE": self.queue} if self.queue else {})}


VARIANTS = (
    Variant("MOON"),
    Variant("dense FFN", moe=False),
    Variant("no crops", crops=False),
    Variant("plain infonce", loss="infonce", hard_negatives=False),
    Variant("+ time queue", queue="momentum"),
)
#: not in the default table; ``--variants`` selects them (the queue modes compared in README)
EXTRA_VARIANTS = (Variant("+ queue split", queue="split"), Variant("+ queue fifo", queue="fifo"))
#: the table's columns: (label, key of :func:`flatten`)
COLUMNS = (
    ("R@1", "retrieval/title->product/recall@1"),
    ("R@10", "retrieval/title->product/recall@10"),
    ("MRR", "retrieval/title->product/mrr"),
    ("cat-L1 acc", "classification/level1/accuracy"),
    ("cat-L3 acc", "classification/level3/accuracy"),
)


@dataclass
class DemoConfig:
    workdir: Path
    catalog: Path
    recipe: Path
    limit: int | None = None
    epochs: float = 1
    seed: int = 0
    val_fraction: float = 0.1
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)


def swift_command() -> list[str]:
    """The ``swift`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("swift")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "swift.cli.main"]


def _step(message: str) -> None:
    print(f"[moon-swift demo] {message}", flush=True)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def train_with_swift(recipe: Path, model_dir: Path, train_jsonl: Path, output_dir: Path, epochs: float, *,
                     loss: str = "infonce", env: dict[str, str] | None = None,
                     seed: int | None = None) -> Path:  # fmt: skip
    """Run ``swift sft RECIPE`` with the demo's paths; returns the last checkpoint directory."""
    if output_dir.exists():
        shutil.rmtree(output_dir)  # an unfinished earlier attempt: restart it cleanly
    command = [*swift_command(), "sft", str(recipe), "--model", str(model_dir), "--dataset", str(train_jsonl),
               "--output_dir", str(output_dir), "--num_train_epochs", str(epochs), "--loss_type", loss,
               *(["--seed", str(seed)] if seed is not None else [])]  # fmt: skip
    _step("$ " + " ".join(f"{k}={v}" for k, v in (env or {}).items() if v) + " " + " ".join(command))
    output_dir.mkdir(parents=True)
    log_path = output_dir / "swift_sft.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})})  # fmt: skip
        for line in process.stdout:
            log.write(line)
            if line.startswith("{'loss'") or "'train_runtime'" in line or "Error" in line:
                print("    " + line.strip(), flush=True)
        returncode = process.wait()
    if returncode != 0:
        raise RuntimeError(f"swift sft failed (exit {returncode}); full log: {log_path}")
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if not checkpoints:
        raise RuntimeError(f"swift sft wrote no checkpoint under {output_dir}; full log: {log_path}")
    return checkpoints[-1]


def evaluate(model_dir: Path, records, cache: Path) -> dict[str, float]:
    """Every task on the held-out products; the image views are the checkpoint's own (``moon_embedding.json``,
    written by training). Flat metric names."""
    encoder = ProductEncoder(str(model_dir), cache_dir=cache)
    return flatten(metrics_by_task(evaluate_outcomes(encoder, records, name=model_dir.parent.name)))


def format_table(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'model':<15}" + "".join(f"{label:>11}" for label, _ in COLUMNS)]
    for name, metrics in results.items():
        lines.append(f"{name:<15}" + "".join(f"{metrics.get(key, float('nan')):>11.3f}" for _, key in COLUMNS))
    return "\n".join(lines)


def _build_models(work: Path, seed: int) -> tuple[Path, Path]:
    base, dense, moe = work / "models" / "base", work / "models" / "dense", work / "models" / "guided_moe"
    make_tiny(base, seed=seed, as_base=True)
    upcycle(base, dense)
    upcycle(base, moe, **GUIDED_MOE)
    return dense, moe


def _detect(records, boxes: Path) -> None:
    from ..detection.backend import default_detector
    from ..detection.store import detect_images

    images = sorted({image for record in records for image in record.images})
    report = detect_images(default_detector(), images, out_jsonl=boxes, batch_size=16)
    _step("    " + report.summary().replace("\n", "\n    "))


def run_demo(config: DemoConfig) -> dict[str, dict[str, float]]:
    started = time.time()
    if not config.recipe.is_file():
        raise MoonInputError("recipe not found: pass --recipe", file=str(config.recipe))
    if not config.catalog.is_dir():
        raise MoonInputError("fashion catalog directory not found: pass --catalog", file=str(config.catalog))
    known = {v.name: v for v in (*VARIANTS, *EXTRA_VARIANTS)}
    unknown = [name for name in config.variants if name not in known]
    if unknown:
        raise MoonInputError(f"unknown variants {unknown}; known: {list(known)}", field="variants")
    variants = [known[name] for name in config.variants]
    work = config.workdir
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    steps = 4 + len(variants)

    _step(f"1/{steps} tiny Qwen2.5-VL base (seed {config.seed}), upcycled to dense and guided-MoE MOON")
    dense, moe = _build_models(work, config.seed)

    _step(f"2/{steps} reading {config.limit or 'all'} products from {config.catalog}")
    records = read_fashion_catalog(config.catalog, on_bad_row="skip", limit=config.limit)
    train, val = split_records(records, config.val_fraction)
    data = {False: work / "data" / "train.jsonl", True: work / "data" / "train_hard.jsonl"}
    n_train = write_jsonl(title_to_product_rows(train), data[False])
    write_jsonl(title_to_product_rows(train, category_negatives(train, 1, seed=config.seed)), data[True])
    write_records(val, work / "data" / "val_products.jsonl")
    _step(f"    {n_train} training pairs (title -> product; + 1 same-category hard negative in {data[True].name}), "
          f"{len(val)} held-out products")  # fmt: skip

    boxes = work / "data" / "boxes.jsonl"
    _step(f"3/{steps} core-product detection (bundled MMDetection RTMDet), boxes cached in {boxes}")
    _detect(records, boxes)

    checkpoints: dict[str, Path] = {}
    for index, variant in enumerate(variants, start=4):
        out = work / "train" / _slug(variant.name)
        done = out / "done.json"
        spec = {"variant": asdict(variant), "epochs": config.epochs, "seed": config.seed, "pairs": n_train}
        if variant.queue:  # the queue's settings: a change retrains the variant
            spec["queue"] = {key: value for key, value in os.environ.items() if key.startswith("MOON_INFONCE_")}
            spec["queue"].update({**QUEUE, "weight": str(QUEUE_WEIGHTS[variant.queue])})
        if done.is_file() and json.loads(done.read_text()).get("spec") == spec:
            checkpoints[variant.name] = Path(json.loads(done.read_text())["checkpoint"])
            _step(f"{index}/{steps} {variant.name}: finished in an earlier run, reused ({checkpoints[variant.name]})")
            continue
        _step(f"{index}/{steps} training {variant.name}: {variant.describe()}")
        model = moe if variant.moe else dense
        checkpoint = train_with_swift(config.recipe, model, data[variant.hard_negatives], out, config.epochs,
                                      loss=variant.loss, env=variant.environment(boxes),
                                      seed=config.seed if config.seed else None)  # fmt: skip
        done.write_text(json.dumps({"spec": spec, "checkpoint": str(checkpoint)}, indent=2))
        checkpoints[variant.name] = checkpoint

    _step(f"{steps}/{steps} evaluating on the {len(val)} held-out products (retrieval, zero-shot classification)")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # swift's loader logs every setting at INFO
    cache = work / "eval_cache"
    import moon_swift.integrations.swift.plugin  # noqa: F401  (evaluation runs swift's moon model in this process)

    results = {"untrained": evaluate(dense, val, cache)}  # dense and guided MoE are equal at step 0
    for variant in variants:
        results[variant.name] = evaluate(checkpoints[variant.name], val, cache)
    wall = time.time() - started
    chance = 1 / len(val)
    (work / "results.json").write_text(json.dumps({
        "metrics": results, "held_out_products": len(val), "training_pairs": n_train, "chance_recall@1": chance,
        "variants": [asdict(v) for v in variants], "epochs": config.epochs, "wall_time_s": round(wall, 1),
    }, indent=2) + "\n")  # fmt: skip
    from ..eval.plots import plot_results

    plots = plot_results(results, work)
    print()
    print(f"title -> product retrieval and zero-shot category accuracy, {len(val)} held-out products "
          f"(chance recall@1 = {chance:.3f})")  # fmt: skip
    print(format_table(results))
    print(f"\nresults: {work / 'results.json'}, plots: {', '.join(str(p) for p in plots)}   wall time: {wall:.0f} s")
    return results
