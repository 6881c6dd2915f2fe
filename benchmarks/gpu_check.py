"""One-command GPU check: MOON at Qwen2.5-VL-3B sizes, trained and encoded through the real command lines.

    python benchmarks/gpu_check.py --catalog DIR --boxes FILE [--workdir DIR] [--steps 30] [--batch 8]
    python benchmarks/gpu_check.py --cpu-tiny --catalog DIR --boxes FILE   # the same pipeline, tiny, on the CPU

Without a CUDA GPU (and without ``--cpu-tiny``) it prints one line and exits 0. Otherwise, in ``--workdir``:

1. a catalog of the first ``--products`` products of ``--catalog`` (a fashion catalog: ``products.csv`` +
   ``images/``; the dev catalog or the bundle ``benchmarks/gpu_wheelhouse.sh`` writes) and its training rows
   (``moon-swift prepare-data --hard-negatives 1``); every image must have a box in ``--boxes`` (a store written
   beforehand by ``moon-swift detect``, so no detector, and no MMDetection, is needed here);
2. a random-initialised Qwen2.5-VL base at the 3B checkpoint's sizes (``moon_swift.apps.tiny_model``, built on
   the GPU in bf16, no download), upcycled to a dense MOON and to a guided-MoE MOON (``every:4``, 4 experts,
   top-2), as ``moon-swift upcycle`` does;
3. ``--steps`` steps of ``recipes/moon_3b_lora.yaml`` and of ``recipes/moon_3b.yaml`` (full, DeepSpeed ZeRO-2,
   bf16, one process) for each model, through the real ``swift sft`` with core-product crops
   (``MOON_IMAGE_VIEWS=both``) and ``moon_infonce``; the overrides are printed. This file is also the run's
   swift plugin (``--external_plugins``): a callback times every optimizer step and counts the tokens and
   sequences of the trained forwards;
4. every product encoded in bf16 by ``moon-swift eval``'s encoder (``ProductEncoder``), with the dense LoRA
   run's adapter.

Printed: one ``name: value`` line per figure (tokens/s, samples/s, sequences/s, step time, peak memory, first /
last loss and whether every logged loss is finite, the MoE / dense step-time ratio of each recipe, encoding
speed). Times are of steady steps: the first ``WARMUP_STEPS`` steps are left out. Peak memory: the process's
``torch.cuda.max_memory_allocated`` (``_reserved`` beside it) on a GPU; on the CPU the peak resident set, which
is not comparable. ``--cpu-tiny`` runs the same steps at tiny sizes in float32 training (the CPU cannot train
bf16 with DeepSpeed) and bf16 encoding, with fewer steps and products: tests/benchmarks/test_gpu_check.py.
Exit status 1 when a run fails or a loss or embedding is not finite.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"lora": REPO_ROOT / "recipes" / "moon_3b_lora.yaml", "full": REPO_ROOT / "recipes" / "moon_3b.yaml"}
MODELS = ("dense", "moe")
MOE_OPTIONS = {"moe_layers": "every:4", "num_experts": 4, "moe_top_k": 2}
#: the environment variable that turns this file, imported by swift as a plugin, into the step-timing callback
STATS_ENV = "MOON_GPU_CHECK_STATS"
STATS_CALLBACK = "moon_gpu_check_stats"
WARMUP_STEPS = 2
#: Qwen2.5-VL-3B-Instruct's layout fields that hold no weights, so a config can take them after the weights are
#: written: window attention except in blocks 7, 15, 23, 31 (window 112 px), M-RoPE sections [16, 24, 24]
QWEN_3B_VISION_LAYOUT = {"fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112}
QWEN_3B_MROPE_SECTION = [16, 24, 24]
#: its image processor's pixel range (the tiny builder's default caps images at 112 x 112); the recipes' max_pixels
#: then set each view's budget, as with the real checkpoint
QWEN_3B_PIXELS = {"min_pixels": 3136, "max_pixels": 12845056}
GIB = 2**30


@dataclass(frozen=True)
class Scale:
    """What differs between the GPU check and its tiny CPU path."""

    name: str
    device: str
    steps: int
    batch: int
    products: int
    encode_batch: int


def scale_of(args: argparse.Namespace) -> Scale:
    if args.cpu_tiny:
        return Scale("tiny", "cpu", args.steps or 4, args.batch or 2, args.products or 24, 8)
    return Scale("qwen2.5-vl-3b", "cuda", args.steps or 30, args.batch or 8, args.products or 1000, 32)


def moon_swift_cli() -> str:
    return str(Path(sys.executable).with_name("moon-swift"))


def swift_cli() -> str:
    return str(Path(sys.executable).with_name("swift"))


def fail(message: str, option: str) -> SystemExit:
    """A bad input: exit 2 with a message naming the option (argparse's convention)."""
    return SystemExit(f"gpu_check: {option}: {message}")


# -- inputs -----------------------------------------------------------------------------------------------------


def subset_catalog(source: Path, out: Path, count: int) -> int:
    """The first ``count`` products of a fashion catalog (``products.csv`` + ``images/``), images linked; returns
    how many were written (fewer when the catalog is smaller)."""
    table = source / "products.csv"
    if not table.is_file():
        raise fail(f"no products.csv in {source} (a fashion catalog: products.csv + images/)", "--catalog")
    (out / "images").mkdir(parents=True, exist_ok=True)
    with table.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(itertools.islice(reader, count))
        fields = reader.fieldnames or []
    for row in rows:
        image = source / row["image"]
        if not image.is_file():
            raise fail(f"product {row['id']}: image {image} is missing", "--catalog")
        target = out / row["image"]
        if not target.exists():
            target.symlink_to(image.resolve())
    with (out / "products.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def check_boxes(boxes: Path, images: list[Path]) -> None:
    """Every image has a box in the store: training then reads boxes and never builds a detector."""
    from moon_swift.detection.store import BoxStore

    if not boxes.is_file():
        raise fail(f"no box store at {boxes}: write it with `moon-swift detect --dataset ROWS --out {boxes}`",
                   "--boxes")  # fmt: skip
    store = BoxStore(boxes)
    missing = [image for image in images if store.lookup(image) is None]
    if missing:
        raise fail(f"{len(missing)} of {len(images)} images have no box in {boxes} (first: {missing[0]}); run "
                   f"`moon-swift detect --dataset <the rows> --out {boxes}` where MMDetection is installed",
                   "--boxes")  # fmt: skip


def run_logged(command: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 1800) -> int:
    """Run a command with its output in ``log``; returns its exit status."""
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    with log.open("w") as out:
        return subprocess.run(command, cwd=REPO_ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout).returncode  # fmt: skip


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# -- phases run in their own processes (so that the driver holds no GPU memory) ---------------------------------


def build_models(workdir: Path, tiny: bool) -> dict[str, Any]:
    """The random-initialised base (bf16 on the GPU; float32 tiny on the CPU), upcycled to dense and MoE MOON."""
    import torch

    from moon_swift.apps.tiny_model import QWEN2_5_VL_3B, TinySpec, make_tiny
    from moon_swift.modeling.configuration_moon import MoonConfig
    from moon_swift.modeling.sizes import parameter_counts
    from moon_swift.modeling.upcycle import upcycle

    base = workdir / "models" / "base"
    start = time.perf_counter()
    if tiny:  # 4 decoder layers: every:4 makes layer 3 a MoE layer
        make_tiny(base, seed=0, spec=TinySpec(num_hidden_layers=4), as_base=True)
    else:
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # built and saved in bf16: the 3B checkpoint's dtype
        try:
            with torch.device("cuda"):  # random init of 3.8B parameters: seconds on the GPU, minutes on the CPU
                make_tiny(base, seed=0, spec=replace(QWEN2_5_VL_3B, **QWEN_3B_PIXELS), as_base=True)
        finally:
            torch.set_default_dtype(default_dtype)
        torch.cuda.empty_cache()
        config_path = base / "config.json"
        config = json.loads(config_path.read_text())
        config["vision_config"].update(QWEN_3B_VISION_LAYOUT)
        config["text_config"]["rope_parameters"]["mrope_section"] = QWEN_3B_MROPE_SECTION
        config_path.write_text(json.dumps(config, indent=2) + "\n")
    built = time.perf_counter() - start
    figures: dict[str, Any] = {"build_s": built}
    for name, options in (("dense", {}), ("moe", MOE_OPTIONS)):
        start = time.perf_counter()
        upcycle(base, workdir / "models" / name, **options)
        counts = parameter_counts(MoonConfig.from_pretrained(workdir / "models" / name))
        figures[name] = {"upcycle_s": time.perf_counter() - start, "parameters": counts.total,
                         "per_routed_token": counts.per_routed_token, "moe_layers": counts.moe_layers}  # fmt: skip
    shutil.rmtree(base)  # the 3B base is 8 GB of disk nothing reads again
    return figures


def encode_products(model: str, adapter: str, catalog: str, device: str, batch: int) -> dict[str, Any]:
    """Every product of the catalog encoded in bf16 by moon-swift eval's encoder; load and encode timed apart."""
    import numpy as np
    import torch

    from moon_swift.data.sources import load_products
    from moon_swift.eval.encode import ProductEncoder

    records, _ = load_products(catalog, "fashion")
    start = time.perf_counter()
    encoder = ProductEncoder(model, adapters=[adapter], device=device, dtype="bfloat16", batch_size=batch)
    loaded = time.perf_counter()
    embeddings = encoder.encode_products(records, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    encoded = time.perf_counter()
    norms = np.linalg.norm(embeddings, axis=1)
    return {"products": len(records), "dim": int(embeddings.shape[1]), "load_s": loaded - start,
            "encode_s": encoded - loaded, "finite": bool(np.isfinite(embeddings).all()),
            "norm_min": float(norms.min()), "norm_max": float(norms.max()), **peak_memory(device)}  # fmt: skip


def peak_memory(device: str) -> dict[str, Any]:
    """The process's peak memory: CUDA allocated / reserved on a GPU, the resident-set high-water mark otherwise."""
    if device.startswith("cuda"):
        import torch

        return {"memory_kind": "GPU", "peak_allocated": torch.cuda.max_memory_allocated(),
                "peak_reserved": torch.cuda.max_memory_reserved()}  # fmt: skip
    import resource

    return {"memory_kind": "CPU RSS", "peak_allocated": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_reserved": None}  # fmt: skip


def run_phase(phase: str, payload: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """A phase of this file in a fresh process; its result comes back as JSON."""
    result = workdir / f"{phase}.json"
    log = workdir / f"{phase}.log"
    command = [sys.executable, __file__, "--phase", phase, json.dumps(payload), str(result)]
    if run_logged(command, log) != 0:
        raise RuntimeError(f"phase {phase} failed (log {log}):\n{tail(log)}")
    return json.loads(result.read_text())


# -- the swift plugin: per-step timing ---------------------------------------------------------------------------


def register_stats_callback() -> None:
    """Registered when swift imports this file as an external plugin: ``--callbacks moon_gpu_check_stats``."""
    import torch
    from swift.callbacks import callbacks_map
    from swift.callbacks.base import TrainerCallback

    class StepStatsCallback(TrainerCallback):
        """Wall time of every optimizer step (device synchronised) and the tokens / sequences of the trained
        (grad-enabled) forwards in it; the momentum encoder's no-grad forwards are not counted."""

        def __init__(self, args, trainer):
            super().__init__(args, trainer)
            self.steps: list[dict[str, float]] = []
            self.tokens = self.sequences = 0
            self.last = 0.0
            self.device = "cpu"

        def _count(self, module, args, kwargs) -> None:
            if not torch.is_grad_enabled():
                return
            # swift's post-encode hook turns a multimodal batch's input_ids into inputs_embeds before the forward
            ids = kwargs.get("input_ids")
            ids = kwargs.get("inputs_embeds") if ids is None else ids
            mask = kwargs.get("attention_mask")
            if ids is None:
                raise RuntimeError(f"gpu_check: a trained forward without input_ids or inputs_embeds: {sorted(kwargs)}")
            self.sequences += int(ids.shape[0])
            self.tokens += int(mask.sum()) if mask is not None else int(ids.shape[0] * ids.shape[1])

        def _now(self) -> float:
            if self.device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.device = args.device.type  # cpu with --use_cpu, also where a GPU is there
            self.trainer.model.register_forward_pre_hook(self._count, with_kwargs=True)
            self.last = self._now()

        def on_step_end(self, args, state, control, **kwargs):
            now = self._now()
            self.steps.append({"seconds": now - self.last, "tokens": self.tokens, "sequences": self.sequences})
            self.tokens = self.sequences = 0
            self.last = now

        def on_train_end(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            rows = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            Path(os.environ[STATS_ENV]).write_text(json.dumps({"steps": self.steps, "rows_per_step": rows,
                                                               **peak_memory(self.device)}))  # fmt: skip

    callbacks_map[STATS_CALLBACK] = StepStatsCallback


# -- training runs -----------------------------------------------------------------------------------------------


def sft_command(recipe: str, model: Path, rows: Path, out: Path, scale: Scale) -> list[str]:
    """``swift sft`` of a recipe with the check's overrides (printed with the results)."""
    command = [swift_cli(), "sft", str(RECIPES[recipe]), "--model", str(model), "--dataset", str(rows),
               "--output_dir", str(out), "--add_version", "false", "--max_steps", str(scale.steps),
               "--per_device_train_batch_size", str(scale.batch), "--gradient_accumulation_steps", "1",
               "--logging_steps", "1", "--report_to", "none", "--external_plugins", str(Path(__file__).resolve()),
               "--callbacks", STATS_CALLBACK, "--warmup_ratio", "0"]  # fmt: skip
    if recipe == "lora" and model.name == "dense":  # its adapter is what the encoding step loads
        command += ["--save_strategy", "steps", "--save_steps", str(scale.steps), "--save_only_model", "true"]
    else:  # a full 3B MoE checkpoint with optimizer states would be ~100 GB of disk
        command += ["--save_strategy", "no"]
    if scale.device == "cpu":  # the tiny recipe's CPU settings
        command += ["--use_cpu", "true", "--torch_dtype", "float32", "--bf16", "false", "--fp16", "false",
                    "--ddp_backend", "gloo", "--dataloader_num_workers", "0"]  # fmt: skip
    else:
        command += ["--torch_dtype", "bfloat16", "--bf16", "true", "--fp16", "false"]
    if recipe == "full":
        command += ["--deepspeed", "zero2"]
    return command


def sft_env(recipe: str, scale: Scale, boxes: Path, stats: Path) -> dict[str, str]:
    """The recipe's moon_infonce settings scaled to the check's batch (the queue must fill within its max age),
    crops from the box store; the full run on one GPU queues without the momentum encoder (see ``main``)."""
    per_step = 2 * scale.batch  # anchor + positive per row (the negative adds more: the queue then fills sooner)
    env = {STATS_ENV: str(stats), "MOON_BOXES": str(boxes), "MOON_IMAGE_VIEWS": "both", "NPROC_PER_NODE": "1",
           "MOON_INFONCE_QUEUE_SIZE": str(16 * per_step), "MOON_INFONCE_QUEUE_MAX_AGE": "32",
           "MOON_INFONCE_QUEUE_START": str(max(1, scale.steps // 3))}  # fmt: skip
    if recipe == "full":
        env["MOON_INFONCE_QUEUE_MODE"] = "split"
    return env


def logged_losses(out: Path) -> list[float]:
    log = out / "logging.jsonl"
    if not log.is_file():
        return []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [float(entry["loss"]) for entry in entries if "loss" in entry and "global_step/max_steps" in entry]


def run_figures(stats: dict[str, Any], losses: list[float]) -> dict[str, Any]:
    """Throughput of the steady steps (after ``WARMUP_STEPS``), memory, losses."""
    steady = stats["steps"][WARMUP_STEPS:] or stats["steps"]
    seconds = sum(step["seconds"] for step in steady)
    return {"steps": len(stats["steps"]), "timed_steps": len(steady), "step_time_s": seconds / len(steady),
            "samples_per_s": stats["rows_per_step"] * len(steady) / seconds,
            "sequences_per_s": sum(step["sequences"] for step in steady) / seconds,
            "tokens_per_s": sum(step["tokens"] for step in steady) / seconds,
            "memory_kind": stats["memory_kind"], "peak_allocated": stats["peak_allocated"],
            "peak_reserved": stats["peak_reserved"], "losses": losses,
            "losses_finite": bool(losses) and all(math.isfinite(loss) for loss in losses)}  # fmt: skip


def format_memory(figures: dict[str, Any]) -> str:
    text = f"{figures['peak_allocated'] / GIB:.2f} GiB"
    if figures["peak_reserved"] is not None:
        text += f" allocated, {figures['peak_reserved'] / GIB:.2f} GiB reserved"
    return text


# -- the driver --------------------------------------------------------------------------------------------------


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("torch", "transformers", "peft", "ms-swift", "deepspeed"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} missing")
    return ", ".join(found)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, help="fashion catalog (products.csv + images/), e.g. the bundle's")
    parser.add_argument("--boxes", type=Path, help="box store (moon-swift detect) covering the catalog's images")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "runs" / "gpu_check", help="models, data, logs")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (default 30; --cpu-tiny 4)")
    parser.add_argument("--batch", type=int, help="rows per step (default 8; --cpu-tiny 2)")
    parser.add_argument("--products", type=int, help="products trained on and encoded (default 1000; --cpu-tiny 24)")
    parser.add_argument("--cpu-tiny", action="store_true", help="the same pipeline at tiny sizes on the CPU")
    parser.add_argument("--keep", action="store_true", help="keep the workdir's models (several GB at 3B)")
    parser.add_argument("--phase", nargs=3, help=argparse.SUPPRESS)  # phase, payload JSON, result file
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "products"):
        value = getattr(args, name)
        if value is not None and value < (WARMUP_STEPS + 1 if name == "steps" else 1):
            least = WARMUP_STEPS + 1 if name == "steps" else 1
            parser.error(f"--{name} must be at least {least}, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.phase:
        phase, payload, result = args.phase
        return run_subphase(phase, json.loads(payload), Path(result))
    import torch

    from moon_swift.integrations.swift.exit_abort import aborted_after_finishing

    if not args.cpu_tiny and not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA GPU (torch.cuda.is_available() is False); --cpu-tiny runs the tiny "
              "CPU path")  # fmt: skip
        return 0
    if args.catalog is None or args.boxes is None:
        raise fail("both --catalog and --boxes are needed (benchmarks/gpu_wheelhouse.sh writes them)",
                   "--catalog/--boxes")  # fmt: skip
    scale = scale_of(args)
    started = time.perf_counter()
    workdir = args.workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    device_name = torch.cuda.get_device_name(0) if scale.device == "cuda" else "CPU"
    print(f"gpu_check: {scale.name} on {device_name} ({versions()})", flush=True)

    catalog = workdir / "catalog"
    count = subset_catalog(args.catalog.resolve(), catalog, scale.products)
    data = workdir / "data"
    prepared = run_logged([moon_swift_cli(), "prepare-data", "--catalog", str(catalog), "--out", str(data),
                           "--hard-negatives", "1"], workdir / "prepare.log")  # fmt: skip
    if prepared != 0:
        raise RuntimeError(f"moon-swift prepare-data failed:\n{tail(workdir / 'prepare.log')}")
    rows = data / "train.jsonl"
    needed = scale.steps * scale.batch
    available = len(rows.read_text().splitlines())
    if available < needed:
        raise fail(f"{count} products give {available} training rows; {scale.steps} steps x {scale.batch} rows "
                   f"need {needed}", "--products")  # fmt: skip
    boxes = args.boxes.resolve()
    check_boxes(boxes, sorted((catalog / "images").iterdir()))
    print(f"data: {count} products, {available} training rows (1 hard negative each), boxes from {boxes}")

    built = run_phase("build", {"tiny": args.cpu_tiny}, workdir)
    print(f"models: base built in {built['build_s']:.1f} s; upcycled in "
          + ", ".join(f"{m} {built[m]['upcycle_s']:.1f} s" for m in MODELS))  # fmt: skip
    for name in MODELS:
        print(f"{name} parameters: {built[name]['parameters']:,} ({built[name]['per_routed_token']:,} per routed "
              f"token, {built[name]['moe_layers']} guided-MoE layers)")  # fmt: skip

    results: dict[tuple[str, str], dict[str, Any]] = {}
    failed = []
    for recipe in RECIPES:
        for name in MODELS:
            out = workdir / "runs" / f"{recipe}_{name}"
            out.mkdir(parents=True)
            command = sft_command(recipe, workdir / "models" / name, rows, out, scale)
            env = sft_env(recipe, scale, boxes, out / "stats.json")
            if name == MODELS[0]:
                overrides = " ".join(command[command.index("--max_steps") :])
                settings = " ".join(f"{k}={v}" for k, v in env.items() if k != STATS_ENV)
                print(f"{recipe} recipe: swift sft {RECIPES[recipe].relative_to(REPO_ROOT)} {overrides}; {settings}")
            start = time.perf_counter()
            status = run_logged(command, out / "sft.log", env)
            wall = time.perf_counter() - start
            if status != 0 and aborted_after_finishing((out / "sft.log").read_text(errors="replace")):
                print(f"{recipe} {name}: swift sft aborted at exit after finishing (exit {status}; known gloo "
                      f"teardown race, moon_swift/integrations/swift/exit_abort.py): its results are kept")  # fmt: skip
                status = 0
            if status != 0 or not (out / "stats.json").is_file():
                failed.append(f"{recipe} {name}")
                print(f"{recipe} {name}: FAILED (exit {status}, log {out / 'sft.log'}):\n{tail(out / 'sft.log')}")
                continue
            figures = run_figures(json.loads((out / "stats.json").read_text()), logged_losses(out))
            figures["wall_s"] = wall
            results[recipe, name] = figures
            print_run(recipe, name, figures)
    for recipe in RECIPES:
        if (recipe, "dense") in results and (recipe, "moe") in results:
            ratio = results[recipe, "moe"]["step_time_s"] / results[recipe, "dense"]["step_time_s"]
            print(f"{recipe} moe/dense step-time ratio: {ratio:.3f}")

    adapter = workdir / "runs" / "lora_dense" / f"checkpoint-{scale.steps}"
    encoded = None
    if adapter.is_dir():
        payload = {"model": str(workdir / "models" / "dense"), "adapter": str(adapter), "catalog": str(catalog),
                   "device": scale.device, "batch": scale.encode_batch}  # fmt: skip
        encoded = run_phase("encode", payload, workdir)
        print(f"encode products: {encoded['products']} ({encoded['dim']}-d, bf16, crops, dense + LoRA adapter)")
        print(f"encode model load s: {encoded['load_s']:.1f}")
        print(f"encode products/s: {encoded['products'] / encoded['encode_s']:.2f}")
        print(f"encode peak {encoded['memory_kind']} memory: {format_memory(encoded)}")
        print(f"encode embeddings finite: {'yes' if encoded['finite'] else 'NO'} (norms {encoded['norm_min']:.4f}-"
              f"{encoded['norm_max']:.4f})")  # fmt: skip
    else:
        failed.append("encode (no adapter from the lora dense run)")
    if not args.keep:
        shutil.rmtree(workdir / "models", ignore_errors=True)
    bad = [f"{r} {m}" for (r, m), f in results.items() if not f["losses_finite"]]
    if encoded is not None and not encoded["finite"]:
        bad.append("encode")
    print(f"gpu_check wall s: {time.perf_counter() - started:.0f}")
    print("gpu_check: " + ("OK" if not failed and not bad else f"FAILED: {', '.join(failed + bad)}"))
    return 0 if not failed and not bad else 1


def print_run(recipe: str, name: str, figures: dict[str, Any]) -> None:
    """One line per figure of a run, ``<recipe> <model> <figure>: <value>``."""
    prefix = f"{recipe} {name}"
    losses = figures["losses"]
    print(f"{prefix} steps: {figures['steps']} ({figures['timed_steps']} timed; run {figures['wall_s']:.0f} s)")
    print(f"{prefix} step time s: {figures['step_time_s']:.4f}")
    print(f"{prefix} samples/s: {figures['samples_per_s']:.2f}")
    print(f"{prefix} sequences/s: {figures['sequences_per_s']:.2f}")
    print(f"{prefix} tokens/s: {figures['tokens_per_s']:.1f}")
    print(f"{prefix} peak {figures['memory_kind']} memory: {format_memory(figures)}")
    first, last = (f"{losses[0]:.4f}", f"{losses[-1]:.4f}") if losses else ("none", "none")
    print(f"{prefix} losses finite: {'yes' if figures['losses_finite'] else 'NO'} ({len(losses)} logged, first "
          f"{first}, last {last})")  # fmt: skip


def run_subphase(phase: str, payload: dict[str, Any], result: Path) -> int:
    if phase == "build":
        figures = build_models(result.parent, payload["tiny"])
    elif phase == "encode":
        figures = encode_products(**payload)
    else:
        raise SystemExit(f"gpu_check: unknown phase {phase!r}")
    result.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif os.environ.get(STATS_ENV):  # imported by swift through --external_plugins
    register_stats_callback()
