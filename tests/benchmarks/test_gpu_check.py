"""benchmarks/gpu_check.py: the one-line skip without a GPU, a bad box store named, and the tiny CPU path end to end
(the real `swift sft` and DeepSpeed, real catalog images with their crops) with MMDetection, mmcv, mmengine, faiss
and Milvus unimportable, as on the air-gapped GPU machine."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers import FASHION_CATALOG, REPO_ROOT, load_script, run_cli, swift_executable

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"
#: what the GPU machine does not have and the check must not import
ABSENT = ("mmdet", "mmcv", "mmengine", "faiss", "pymilvus", "milvus_lite")
#: a sitecustomize that hides them from the file-system finder, where they are installed, so that they look absent
#: (``importlib.util.find_spec`` gives None, an import raises ModuleNotFoundError) in the check's process and in all
#: the processes it starts (the other finders stay as they are: some look themselves up in ``sys.meta_path``)
BLOCKER = f"""
import importlib.machinery

ABSENT = {ABSENT!r}
_find_spec = importlib.machinery.PathFinder.find_spec.__func__


def _find_present(cls, name, path=None, target=None):
    return None if name.split(".")[0] in ABSENT else _find_spec(cls, name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_find_present)
"""
RUN_FIGURES = ("step time s", "samples/s", "sequences/s", "tokens/s")


def load_check() -> ModuleType:
    return load_script(SCRIPT)


def moon_swift_cli() -> str:
    return str(Path(swift_executable()).with_name("moon-swift"))


def check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli([sys.executable, str(SCRIPT), *args], env={"CUDA_VISIBLE_DEVICES": "", **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(catalog, box store): the first 24 dev products and their boxes, detected here with MMDetection."""
    root = tmp_path_factory.mktemp("gpu-check-inputs")
    assert load_check().subset_catalog(FASHION_CATALOG, root / "catalog", 24) == 24
    prepared = run_cli([moon_swift_cli(), "prepare-data", "--catalog", str(root / "catalog"), "--out",
                        str(root / "rows"), "--hard-negatives", "1"])  # fmt: skip
    assert prepared.returncode == 0, prepared.stdout[-3000:]
    boxes = root / "boxes.jsonl"
    detected = run_cli([moon_swift_cli(), "detect", "--dataset", str(root / "rows" / "train.jsonl"),
                        str(root / "rows" / "val_products.jsonl"), "--out", str(boxes), "--quiet"])  # fmt: skip
    assert detected.returncode == 0, detected.stdout[-3000:]
    return root / "catalog", boxes


def test_without_a_gpu_it_prints_one_line_and_exits_0():
    result = check()
    assert result.returncode == 0, result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], result.stdout


def test_a_box_store_without_the_catalogs_images_is_named(tiny_inputs, tmp_path):
    catalog, boxes = tiny_inputs
    partial = tmp_path / "partial.jsonl"
    partial.write_text(boxes.read_text().splitlines()[0] + "\n")
    result = check("--cpu-tiny", "--catalog", str(catalog), "--boxes", str(partial), "--workdir", str(tmp_path / "w"))
    assert result.returncode != 0
    assert "--boxes: 23 of 24 images have no box" in result.stdout and "moon-swift detect" in result.stdout


def figure(output: str, name: str) -> float:
    """The number of the ``<name>: <number>`` line (exactly one)."""
    found = re.findall(rf"^{re.escape(name)}: ([-+0-9.eE]+|nan|inf)\b", output, flags=re.MULTILINE)
    assert len(found) == 1, f"{name!r}: {found}\n{output}"
    return float(found[0])


@pytest.mark.slow
def test_the_tiny_cpu_path_prints_finite_figures_without_mmdetection(tiny_inputs, tmp_path):
    catalog, boxes = tiny_inputs
    blocker = tmp_path / "absent"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    for name in ABSENT:  # it holds in every child process
        probe = run_cli([sys.executable, "-c", f"import importlib.util; assert importlib.util.find_spec({name!r}) is "
                         f"None; import {name}"], env=env)  # fmt: skip
        assert probe.returncode != 0 and f"No module named '{name}'" in probe.stdout, probe.stdout
    result = check("--cpu-tiny", "--catalog", str(catalog), "--boxes", str(boxes), "--workdir", str(tmp_path / "w"),
                   env=env)  # fmt: skip
    output = result.stdout
    assert result.returncode == 0, output[-6000:]
    assert "gpu_check: OK" in output
    for recipe in ("lora", "full"):
        for model in ("dense", "moe"):
            prefix = f"{recipe} {model}"
            assert figure(output, f"{prefix} steps") == 4
            for name in RUN_FIGURES:
                value = figure(output, f"{prefix} {name}")
                assert math.isfinite(value) and value > 0, (prefix, name, value)
            memory = re.search(rf"^{prefix} peak CPU RSS memory: ([0-9.]+) GiB$", output, flags=re.MULTILINE)
            assert memory and float(memory.group(1)) > 0, output
            losses = re.search(rf"^{prefix} losses finite: yes \(4 logged, first (\S+), last (\S+)\)$", output,
                               flags=re.MULTILINE)  # fmt: skip
            assert losses and all(math.isfinite(float(value)) for value in losses.groups()), output
        ratio = figure(output, f"{recipe} moe/dense step-time ratio")
        assert math.isfinite(ratio) and ratio > 0
    # a tokens/s figure counts what was trained: more tokens than sequences, each sequence at least one row
    assert figure(output, "lora dense tokens/s") > figure(output, "lora dense sequences/s")
    assert figure(output, "lora dense sequences/s") >= figure(output, "lora dense samples/s")
    assert "encode products: 24 (64-d, bf16, crops" in output
    assert figure(output, "encode products/s") > 0
    assert "encode embeddings finite: yes (norms 1.0000-1.0000)" in output
    assert "moe parameters:" in output and "1 guided-MoE layers" in output
    # the crops were on: the dense LoRA adapter records the views and the box store it trained with
    settings = (tmp_path / "w" / "runs" / "lora_dense" / "checkpoint-4" / "moon_embedding.json").read_text()
    assert '"image_views": "both"' in settings and str(boxes) in settings
