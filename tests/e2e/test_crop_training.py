"""`swift sft` with core-product crops: `moon-swift detect` writes the boxes once with the bundled
MMDetection detector, the `moon` template feeds [original, crop] for every product image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FASHION_CATALOG, REPO_ROOT, run_cli, swift_executable

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"


def moon_swift_cli() -> str:
    return str(Path(swift_executable()).with_name("moon-swift"))


def sft(model_dir, data: Path, output_dir: Path, boxes: Path):
    args = [swift_executable(), "sft", str(RECIPE), "--model", str(model_dir), "--dataset", str(data / "train.jsonl"),
            "--output_dir", str(output_dir), "--max_steps", "3", "--save_steps", "3", "--logging_steps", "1",
            "--per_device_train_batch_size", "4"]  # fmt: skip
    return run_cli(args, env={"MOON_BOXES": str(boxes), "MOON_IMAGE_VIEWS": "both"})


def test_swift_sft_trains_on_original_plus_detected_crop(tiny_moon_dir, tmp_path):
    data = tmp_path / "data"
    prepared = run_cli([moon_swift_cli(), "prepare-data", "--catalog", str(FASHION_CATALOG), "--out", str(data),
                        "--limit", "48", "--hard-negatives", "1"])  # fmt: skip
    assert prepared.returncode == 0, prepared.stdout[-3000:]
    boxes = data / "boxes.jsonl"
    detected = run_cli([moon_swift_cli(), "detect", "--dataset", str(data / "train.jsonl"), "--out", str(boxes),
                        "--quiet"])  # fmt: skip
    assert detected.returncode == 0, detected.stdout[-3000:]
    lines = [json.loads(line) for line in boxes.read_text().splitlines()]
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    groups = [group for row in rows for group in row.get("positive_images", []) + row.get("negative_images", [])]
    images = {image for group in groups for image in group}
    assert len(lines) == len(images) and all(line["boxes"] for line in lines)

    trained = sft(tiny_moon_dir, data, tmp_path / "out", boxes)
    assert trained.returncode == 0, trained.stdout[-4000:]
    assert (tmp_path / "out" / "checkpoint-3" / "model.safetensors").is_file()
    record = json.loads((tmp_path / "out" / "checkpoint-3" / "moon_training.json").read_text())
    assert record["image_views"] == "both" and record["detector"] == lines[0]["detector"]  # for the model card

    # The template really consults the store while training: with one image's line only, the first
    # batch meets an image that has no box, and training stops naming it.
    partial = data / "partial_boxes.jsonl"
    partial.write_text(boxes.read_text().splitlines()[0] + "\n")
    stopped = sft(tiny_moon_dir, data, tmp_path / "out2", partial)
    assert stopped.returncode != 0
    assert "is not in the box store" in stopped.stdout and f"{FASHION_CATALOG.resolve()}/images/" in stopped.stdout
