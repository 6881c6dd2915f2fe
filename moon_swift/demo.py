"""The CPU demo: tiny MOON, trained by the real ``swift sft`` on real products, evaluated before/after."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import read_fashion_catalog, read_records, split_records, title_to_product_rows, write_jsonl, write_records
from .errors import MoonInputError
from .eval.encode import ProductEncoder
from .eval.metrics import retrieval_metrics
from .modeling.tiny import make_tiny


@dataclass
class DemoConfig:
    workdir: Path
    catalog: Path
    recipe: Path
    limit: int | None = None
    epochs: float = 2
    seed: int = 0
    val_fraction: float = 0.1


def swift_command() -> list[str]:
    """The ``swift`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("swift")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "swift.cli.main"]


def _step(message: str) -> None:
    print(f"[moon-swift demo] {message}", flush=True)


def train_with_swift(recipe: Path, model_dir: Path, train_jsonl: Path, output_dir: Path, epochs: float) -> Path:
    """Run ``swift sft RECIPE`` with the demo's paths; returns the last checkpoint directory."""
    if output_dir.exists():
        shutil.rmtree(output_dir)  # a rerun restarts training cleanly
    command = [
        *swift_command(),
        "sft",
        str(recipe),
        "--model", str(model_dir),
        "--dataset", str(train_jsonl),
        "--output_dir", str(output_dir),
        "--num_train_epochs", str(epochs),
    ]  # fmt: skip
    _step("$ " + " ".join(command))
    log_path = output_dir.parent / "swift_sft.log"
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


def evaluate(model_dir: Path, products_jsonl: Path) -> dict[str, float]:
    """Title -> product retrieval over the held-out products (each title's own product is the target)."""
    records = read_records(products_jsonl)
    encoder = ProductEncoder(str(model_dir))
    queries = encoder.encode_queries([r.title for r in records], desc=f"titles   {model_dir.name}")
    products = encoder.encode_products(records, with_title=False, desc=f"products {model_dir.name}")
    return retrieval_metrics(queries @ products.T, np.arange(len(records)))


def format_table(results: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(results.values())))
    lines = [f"{'model':<12}" + "".join(f"{c:>11}" for c in columns)]
    for name, metrics in results.items():
        lines.append(f"{name:<12}" + "".join(f"{metrics[c]:>11.3f}" for c in columns))
    return "\n".join(lines)


def run_demo(config: DemoConfig) -> dict[str, dict[str, float]]:
    started = time.time()
    if not config.recipe.is_file():
        raise MoonInputError("recipe not found (run the demo from the repository root)", file=str(config.recipe))
    work = config.workdir
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    _step(f"1/4 building the tiny MOON model (seed {config.seed}) in {work / 'model'}")
    make_tiny(work / "model", seed=config.seed)

    _step(f"2/4 reading {config.limit or 'all'} products from {config.catalog}")
    records = read_fashion_catalog(config.catalog, on_bad_row="skip", limit=config.limit)
    train, val = split_records(records, config.val_fraction)
    n_train = write_jsonl(title_to_product_rows(train), work / "data" / "train.jsonl")
    write_records(val, work / "data" / "val_products.jsonl")
    _step(f"    {n_train} training pairs (title -> product image), {len(val)} held-out products")

    _step(f"3/4 training with swift sft {config.recipe} ({config.epochs} epochs)")
    checkpoint = train_with_swift(
        config.recipe, work / "model", work / "data" / "train.jsonl", work / "train", config.epochs
    )
    _step(f"    checkpoint: {checkpoint}")

    _step("4/4 evaluating title -> product retrieval on the held-out products")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # swift's loader logs every setting at INFO
    results = {
        "untrained": evaluate(work / "model", work / "data" / "val_products.jsonl"),
        "trained": evaluate(checkpoint, work / "data" / "val_products.jsonl"),
    }
    chance = {"recall@1": 1 / len(val), "recall@5": min(1.0, 5 / len(val)), "recall@10": min(1.0, 10 / len(val))}
    (work / "results.json").write_text(
        json.dumps({"metrics": results, "chance": chance, "held_out_products": len(val)}, indent=2) + "\n"
    )
    print()
    print(f"title -> product retrieval, {len(val)} held-out products (chance recall@1 = {chance['recall@1']:.3f})")
    print(format_table(results))
    print(f"\nresults: {work / 'results.json'}   wall time: {time.time() - started:.0f} s")
    return results
