"""``moon-swift demo``: the ablation study. MOON and one-change variants trained by the real ``swift sft`` on
MOON's query mix made from real products, evaluated with their baselines on held-out products, over seeds.

One run:

1. builds a base (a tiny Qwen2.5-VL, or ``--model``: a Qwen2.5-VL / Qwen2-VL checkpoint) per seed and
   upcycles it twice (dense and guided MoE, identical at step 0);
2. makes the study's queries (:mod:`moon_swift.data.study`): composite street photos, photo + text, titles
   and their short forms, category paths and street photos, split by product;
3. detects the core product of every image (catalog, composites, street photos) with the bundled
   MMDetection detector, once, into a box store;
4. trains each variant for ``max_steps`` (same data, steps and seed for all):
   MOON (guided MoE, [original, crop], ``moon_infonce`` with a same-category hard negative, false-negative
   masking and the momentum temporal queue); dense FFN; no crops; swift's plain ``infonce`` with the same
   hard negatives; no temporal negatives;
5. evaluates every variant and the baselines (chance, majority class, thumbnail match) on every task
   (:mod:`moon_swift.eval.study`), then prints mean +- std per cell and marks differences to MOON larger
   than twice the pooled std.

Every figure printed comes from this run. A rerun reuses finished variants (``done.json`` beside their
checkpoint, written last) and the box store, and retrains anything unfinished.
"""

from __future__ import annotations

import hashlib
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
from ..data import read_fashion_catalog, write_jsonl, write_records
from ..data.study import RETRIEVAL_TASKS, StudyData, build_study_data, study_rows
from ..eval.seeds import Spread, separated, summarize
from ..integrations.swift.exit_abort import EXIT_TIME_ABORT, aborted_after_finishing
from ..losses.moon_infonce import QUEUE_WEIGHTS
from ..modeling.upcycle import upcycle
from .tiny_model import make_tiny

GUIDED_MOE = {"moe_layers": "all", "num_experts": 4, "moe_top_k": 2, "guided_experts": True}
#: the temporal queue: 16 to 32 products per step (16 rows, a hard negative in most), so 16 steps of age
#: fill the 256 entries
QUEUE = {"MOON_INFONCE_QUEUE_SIZE": "256", "MOON_INFONCE_QUEUE_MAX_AGE": "16", "MOON_INFONCE_QUEUE_START": "20"}
#: steps per variant: the one-seed study fits 15 minutes on 2 cores
DEFAULT_MAX_STEPS = 200


@dataclass(frozen=True)
class Variant:
    name: str
    moe: bool = True
    crops: bool = True
    loss: str = "moon_infonce"
    queue: str | None = "momentum"  # MOON_INFONCE_QUEUE_MODE of the temporal queue; None: no queue

    def describe(self) -> str:
        parts = ["guided MoE" if self.moe else "dense", "original + crop" if self.crops else "original only",
                 self.loss, "hard negatives"]  # fmt: skip
        return ", ".join(parts + [f"temporal queue ({self.queue})" if self.queue else "no temporal queue"])

    def environment(self, boxes: Path) -> dict[str, str]:
        """moon's settings for this variant (training and evaluation must agree on the image views)."""
        env = {"MOON_IMAGE_VIEWS": "both" if self.crops else "original", "MOON_BOXES": str(boxes) if self.crops else ""}
        if self.queue and self.loss == "moon_infonce":
            env.update({**QUEUE, "MOON_INFONCE_QUEUE_MODE": self.queue})
        return env


VARIANTS = (
    Variant("MOON"),
    Variant("dense FFN", moe=False),
    Variant("no crops", crops=False),
    Variant("plain infonce", loss="infonce", queue=None),  # swift's loss has no queue; the same hard negatives
    Variant("no temporal", queue=None),
)
#: not in the default study; ``--variants`` selects them (the other queue modes)
EXTRA_VARIANTS = (Variant("queue split", queue="split"), Variant("queue fifo", queue="fifo"))
BASELINES = ("chance", "majority class", "thumbnail match")
#: the printed table's rows: (label, metric key); results.json has every metric
ROWS = (
    *[(f"{task} R@{k}", f"retrieval/{task}->product/recall@{k}") for task in RETRIEVAL_TASKS for k in (1, 10)],
    ("street->cat hit@1", "street/photo->category/hit@1"),
    ("street->cat P@10", "street/photo->category/precision@10"),
)


@dataclass
class DemoConfig:
    workdir: Path
    catalog: Path
    street_photos: Path
    recipe: Path
    limit: int | None = None
    max_steps: int = DEFAULT_MAX_STEPS
    seeds: int = 1
    first_seed: int = 0
    val_fraction: float = 0.1
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)
    base_model: Path | None = None  # None: a tiny Qwen2.5-VL built here
    device: str | None = None
    dtype: str | None = None


def swift_command() -> list[str]:
    """The ``swift`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("swift")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "swift.cli.main"]


def _step(message: str) -> None:
    print(f"[moon-swift demo] {message}", flush=True)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def train_with_swift(recipe: Path, model_dir: Path, train_jsonl: Path, output_dir: Path, max_steps: int, *,
                     loss: str = "infonce", env: dict[str, str] | None = None, seed: int = 0) -> Path:  # fmt: skip
    """Run ``swift sft RECIPE`` with the demo's paths; returns the last checkpoint directory."""
    if output_dir.exists():
        shutil.rmtree(output_dir)  # an unfinished earlier attempt: restart it cleanly
    command = [*swift_command(), "sft", str(recipe), "--model", str(model_dir), "--dataset", str(train_jsonl),
               "--output_dir", str(output_dir), "--max_steps", str(max_steps), "--save_steps", str(max_steps),
               "--save_strategy", "steps", "--loss_type", loss, "--seed", str(seed)]  # fmt: skip
    _step("$ " + " ".join(f"{k}={v}" for k, v in (env or {}).items() if v) + " " + " ".join(command))
    output_dir.mkdir(parents=True)
    log_path = output_dir / "swift_sft.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})})  # fmt: skip
        for line in process.stdout:
            log.write(line)
            if "'train_runtime'" in line or "Error" in line:
                print("    " + line.strip(), flush=True)
        returncode = process.wait()
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if returncode != 0 and checkpoints and aborted_after_finishing(log_path.read_text()):
        _step(f"    swift sft aborted at exit after finishing ({EXIT_TIME_ABORT!r}, exit {returncode}): a known "
              f"torch/gloo teardown race; its checkpoints are complete, kept. Full log: {log_path}")  # fmt: skip
    elif returncode != 0:
        raise RuntimeError(f"swift sft failed (exit {returncode}); full log: {log_path}")
    if not checkpoints:
        raise RuntimeError(f"swift sft wrote no checkpoint under {output_dir}; full log: {log_path}")
    return checkpoints[-1]


def _build_models(work: Path, seed: int, base_model: Path | None) -> tuple[Path, Path]:
    models = work / "models" / f"seed{seed}"
    base, dense, moe = models / "base", models / "dense", models / "guided_moe"
    if base_model is None:
        make_tiny(base, seed=seed, as_base=True)
    else:
        base = base_model
    upcycle(base, dense, seed=seed)
    upcycle(base, moe, seed=seed, **GUIDED_MOE)
    return dense, moe


def _detect(data: StudyData, boxes: Path) -> None:
    from ..detection.backend import default_detector
    from ..detection.store import detect_images

    images = {image for record in (*data.train, *data.val) for image in record.images}
    images |= {pair.query_image for pairs in data.photo_pairs.values() for pair in pairs if pair.query_image}
    images |= {photo.image for photo in data.street}
    report = detect_images(default_detector(), sorted(images), out_jsonl=boxes, batch_size=16)
    _step("    " + report.summary().replace("\n", "\n    "))


def _variants(config: DemoConfig) -> list[Variant]:
    known = {v.name: v for v in (*VARIANTS, *EXTRA_VARIANTS)}
    unknown = [name for name in config.variants if name not in known]
    if unknown:
        raise MoonInputError(f"unknown variants {unknown}; known: {list(known)}", field="--variants")
    names = ["MOON", *[n for n in config.variants if n != "MOON"]]  # every difference is to MOON
    return [known[name] for name in names]


def _check(config: DemoConfig) -> None:
    if not config.recipe.is_file():
        raise MoonInputError("recipe not found: pass --recipe", file=str(config.recipe))
    if not config.catalog.is_dir():
        raise MoonInputError("fashion catalog directory not found: pass --catalog", file=str(config.catalog))
    if not config.street_photos.is_dir():
        raise MoonInputError("street photo directory not found: pass --street-photos", file=str(config.street_photos))
    if config.seeds < 1 or config.max_steps < 1:
        raise MoonInputError("--seeds and --max-steps must be at least 1", field="--seeds")


def run_demo(config: DemoConfig) -> dict:
    started = time.time()
    _check(config)
    variants = _variants(config)
    work = config.workdir
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seeds = list(range(config.first_seed, config.first_seed + config.seeds))

    _step(f"reading {config.limit or 'all'} products from {config.catalog}; queries from {config.street_photos}")
    records = read_fashion_catalog(config.catalog, on_bad_row="skip", limit=config.limit)
    data = build_study_data(records, config.street_photos, work / "data", val_fraction=config.val_fraction)
    write_records(data.val, work / "data" / "val_products.jsonl")
    counts = ", ".join(f"{task}: {n}" for task, n in data.counts().items())
    skipped = ", ".join(f"{reason}: {n}" for reason, n in data.skipped.items()) or "none"
    _step(f"    {len(data.train)} training and {len(data.val)} held-out products; held-out queries {counts}; "
          f"products without a photo query ({skipped}) get a text query")  # fmt: skip

    boxes = work / "data" / "boxes.jsonl"
    _step(f"core-product detection (bundled MMDetection RTMDet), boxes cached in {boxes}")
    _detect(data, boxes)

    timings = {"data and detection": time.time() - started, "training": 0.0}
    checkpoints: dict[int, dict[str, Path]] = {}
    for seed in seeds:
        rows = study_rows(data, seed=seed, val_fraction=config.val_fraction)
        train_jsonl = work / "data" / f"train_seed{seed}.jsonl"
        write_jsonl(rows.rows, train_jsonl)
        rows_digest = hashlib.sha256(train_jsonl.read_bytes()).hexdigest()  # other rows retrain the variants
        kinds = ", ".join(f"{kind}: {n}" for kind, n in rows.kinds.items())
        not_used = ", ".join(f"{reason}: {n}" for reason, n in rows.not_used.items() if n) or "nothing"
        _step(f"seed {seed}: {len(rows.rows)} training rows ({kinds}) in {train_jsonl.name}; not used: {not_used}")
        models = None
        checkpoints[seed] = {}
        for variant in variants:
            out = work / "train" / f"seed{seed}" / _slug(variant.name)
            done = out / "done.json"
            queue = {**QUEUE, "weight": str(QUEUE_WEIGHTS[variant.queue])} if variant.queue else None
            spec = {"variant": asdict(variant), "max_steps": config.max_steps, "seed": seed, "rows_sha256": rows_digest,
                    "limit": config.limit, "base_model": str(config.base_model or "tiny"), "queue": queue}  # fmt: skip
            if done.is_file() and json.loads(done.read_text()).get("spec") == spec:
                checkpoints[seed][variant.name] = Path(json.loads(done.read_text())["checkpoint"])
                _step(f"seed {seed}, {variant.name}: finished in an earlier run, reused")
                continue
            models = models or _build_models(work, seed, config.base_model)
            _step(f"seed {seed}, training {variant.name}: {variant.describe()}")
            training_started = time.time()
            checkpoint = train_with_swift(config.recipe, models[1] if variant.moe else models[0], train_jsonl, out,
                                          config.max_steps, loss=variant.loss, env=variant.environment(boxes),
                                          seed=seed)  # fmt: skip
            timings["training"] += time.time() - training_started
            done.write_text(json.dumps({"spec": spec, "checkpoint": str(checkpoint)}, indent=2))
            checkpoints[seed][variant.name] = checkpoint

    evaluation_started = time.time()
    _step(f"evaluating on the {len(data.val)} held-out products: every task, every variant and seed, baselines")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # swift's loader logs every setting at INFO
    import moon_swift.integrations.swift.plugin  # noqa: F401  (evaluation runs swift's moon model in this process)

    from ..eval.encode import ProductEncoder
    from ..eval.study import baseline_metrics, study_metrics, study_outcomes

    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    gallery: dict[str, list[list[int]]] = {}
    for seed in seeds:
        per_seed[seed] = {}
        for variant in variants:
            encoder = ProductEncoder(str(checkpoints[seed][variant.name]), cache_dir=work / "eval_cache",
                                     device=config.device, dtype=config.dtype)  # fmt: skip
            outcomes = study_outcomes(encoder, data.val, data.queries, name=f"{variant.name} s{seed}")
            per_seed[seed][variant.name] = study_metrics(outcomes)
            if seed == seeds[0] and "retrieval/photo->product" in outcomes:
                gallery[variant.name] = outcomes["retrieval/photo->product"].top[:, :5].tolist()
    baselines = baseline_metrics(data.val, data.train, data.queries, str(boxes))
    summary = {v.name: summarize([per_seed[s][v.name] for s in seeds]) for v in variants}
    wall = time.time() - started
    timings["evaluation"] = time.time() - evaluation_started

    results = {
        "seeds": seeds, "max_steps": config.max_steps, "held_out_products": len(data.val),
        "train_products": len(data.train), "held_out_queries": data.counts(),
        "variants": [asdict(v) for v in variants], "baselines": baselines,
        "per_seed": {str(s): per_seed[s] for s in seeds},
        "summary": {v: {k: asdict(s) for k, s in metrics.items()} for v, metrics in summary.items()},
        "separated_from_moon": {v: [k for k, s in summary[v].items() if separated(summary["MOON"][k], s)]
                                for v in summary if v != "MOON"},
        "wall_time_s": round(wall, 1), "time_s": {part: round(seconds, 1) for part, seconds in timings.items()},
    }  # fmt: skip
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    from ..eval.plots import plot_photo_queries, plot_study_recall

    plots = [plot_study_recall(summary, baselines, work / "recall_at_k.png")]
    if "no crops" in gallery:
        plots.append(plot_photo_queries(data, boxes, {n: gallery[n] for n in ("MOON", "no crops")},
                                        work / "photo_queries.png"))  # fmt: skip
    print()
    print(format_table(summary, baselines, data.val, seeds))
    parts = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in timings.items())
    print(f"\nresults: {work / 'results.json'}; plots: {', '.join(str(p) for p in plots)}")
    print(f"wall time: {wall:.0f} s ({parts}; training counts only variants trained in this run)")
    return results


def table_rows(summary: dict[str, dict[str, Spread]]) -> list[tuple[str, str]]:
    """The printed rows: retrieval and street, then every classification level and attribute there is."""
    keys = next(iter(summary.values()))
    extra = [(key.split("/")[1] + (" acc" if key.startswith("classification") else ""), key) for key in keys
             if key.endswith("/accuracy") and key.startswith(("classification/", "attributes/"))]  # fmt: skip
    return [(label, key) for label, key in ROWS if key in keys] + extra


def format_table(summary: dict[str, dict[str, Spread]], baselines: dict[str, dict[str, float]], val, seeds) -> str:
    """Metrics as rows; baselines, then variants as columns (mean +- std over the seeds). ``*``: the
    difference to MOON is larger than twice the pooled std."""
    rows = table_rows(summary)
    names = [*BASELINES, *summary]
    width = 15
    lines = [f"{len(val)} held-out products, seeds {seeds}: mean" + ("±std" if len(seeds) > 1 else "")
             + (" (* : differs from MOON by more than 2 pooled std)" if len(seeds) > 1 else " (one seed: no spread)"),
             f"{'':<20}" + "".join(f"{name[:width - 1]:>{width}}" for name in names)]  # fmt: skip
    for label, key in rows:
        cells = []
        for name in BASELINES:
            value = baselines[name].get(key)
            cells.append("-" if value is None else f"{value:.3f}")
        for name, metrics in summary.items():
            mark = "*" if name != "MOON" and separated(summary["MOON"][key], metrics[key]) else ""
            cells.append(metrics[key].cell() + mark)
        lines.append(f"{label:<20}" + "".join(f"{cell:>{width}}" for cell in cells))
    return "\n".join(lines)
