"""`swift sft` with core-product crops: `moon-swift detect` writes the boxes once with the bundled
MMDetection detector, the `moon` template feeds [original, crop] for every product image, and the
checkpoint carries those settings: evaluation and `swift deploy` in a clean environment embed exactly
as training did, or stop naming what is missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import FASHION_CATALOG, REPO_ROOT, run_cli, swift_deploy, swift_executable

from moon_swift.core.errors import MoonInputError

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"


def moon_swift_cli() -> str:
    return str(Path(swift_executable()).with_name("moon-swift"))


def sft(model_dir, data: Path, output_dir: Path, boxes: Path):
    args = [swift_executable(), "sft", str(RECIPE), "--model", str(model_dir), "--dataset", str(data / "train.jsonl"),
            "--output_dir", str(output_dir), "--max_steps", "3", "--save_steps", "3", "--logging_steps", "1",
            "--per_device_train_batch_size", "4"]  # fmt: skip
    return run_cli(args, env={"MOON_BOXES": str(boxes), "MOON_IMAGE_VIEWS": "both"})


@pytest.fixture(scope="module")
def trained(tiny_moon_dir, tmp_path_factory):
    """(checkpoint, data dir, box store) of a 3-step run on [original, crop]."""
    root = tmp_path_factory.mktemp("crops")
    data = root / "data"
    prepared = run_cli([moon_swift_cli(), "prepare-data", "--catalog", str(FASHION_CATALOG), "--out", str(data),
                        "--limit", "48", "--hard-negatives", "1"])  # fmt: skip
    assert prepared.returncode == 0, prepared.stdout[-3000:]
    boxes = data / "boxes.jsonl"
    detected = run_cli([moon_swift_cli(), "detect", "--dataset", str(data / "train.jsonl"),
                        str(data / "val_products.jsonl"), "--out", str(boxes), "--quiet"])  # fmt: skip
    assert detected.returncode == 0, detected.stdout[-3000:]
    result = sft(tiny_moon_dir, data, root / "out", boxes)
    assert result.returncode == 0, result.stdout[-4000:]
    return root / "out" / "checkpoint-3", data, boxes


def requests_of(data: Path) -> list[dict]:
    products = [json.loads(line) for line in (data / "val_products.jsonl").read_text().splitlines()[:2]]
    photo_query = {"messages": [{"role": "user", "content": "<image>"}], "images": products[0]["images"]}
    return [{"messages": [{"role": "user", "content": "<image>" + p["title"]}], "images": p["images"]}
            for p in products] + [photo_query]  # fmt: skip


def encode(checkpoint: Path, requests, **env) -> np.ndarray:
    from moon_swift.eval.encode import ProductEncoder

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MOON_") and k != "MOON_SWIFT_AUTOLOAD"}
    os.environ.update(env)
    try:
        return ProductEncoder(str(checkpoint)).encode(requests, progress=False)
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def test_detect_then_train_on_original_plus_crop_records_the_settings(trained):
    checkpoint, data, boxes = trained
    lines = [json.loads(line) for line in boxes.read_text().splitlines()]
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    groups = [group for row in rows for group in row.get("positive_images", []) + row.get("negative_images", [])]
    assert {image for group in groups for image in group} <= {line["image"] for line in lines}
    assert all(line["boxes"] for line in lines)
    assert (checkpoint / "model.safetensors").is_file()
    settings = json.loads((checkpoint / "moon_embedding.json").read_text())
    assert settings["image_views"] == "both" and settings["boxes"] == str(boxes)
    assert settings["detector"]["fingerprint"] == lines[0]["detector"]["fingerprint"]  # what made the crops
    assert settings["box_policy"] == lines[0]["policy"] and settings["training"]["loss_type"] == "infonce"


def test_a_clean_environment_embeds_as_training_did_in_eval_and_swift_deploy(trained, tmp_path):
    checkpoint, data, boxes = trained
    requests = requests_of(data)
    as_trained = encode(checkpoint, requests, MOON_BOXES=str(boxes), MOON_IMAGE_VIEWS="both")
    clean = encode(checkpoint, requests)
    assert np.abs(clean - as_trained).max() <= 1e-5
    from moon_swift.eval.service import ServiceEncoder

    with swift_deploy(checkpoint, tmp_path / "deploy.log") as url:
        served = ServiceEncoder(url, model="moon-tiny").encode(requests, progress=False)
    assert np.abs(served - as_trained).max() <= 1e-5


def test_without_its_box_store_a_crop_checkpoint_stops_naming_what_is_missing(trained, tmp_path):
    checkpoint, data, boxes = trained
    moved = tmp_path / "moved_boxes.jsonl"
    boxes.rename(moved)
    try:
        with pytest.raises(MoonInputError, match="its box store is not here") as error:
            encode(checkpoint, requests_of(data))
        assert str(boxes) in str(error.value) and "MOON_BOXES" in str(error.value)
        # the store given anew where it now is: the same embeddings
        assert encode(checkpoint, requests_of(data), MOON_BOXES=str(moved)).shape == (3, 64)
        detected = encode(checkpoint, requests_of(data), MOON_BOXES_MISSING="detect")  # detect on the fly
        assert np.abs(detected - encode(checkpoint, requests_of(data), MOON_BOXES=str(moved))).max() <= 1e-5
    finally:
        moved.rename(boxes)
    with pytest.raises(MoonInputError, match="MOON_IMAGE_VIEWS='original' conflicts with the checkpoint"):
        encode(checkpoint, requests_of(data), MOON_IMAGE_VIEWS="original")


def test_training_reads_the_store_and_stops_naming_an_image_without_a_box(tiny_moon_dir, trained, tmp_path):
    _, data, boxes = trained
    partial = tmp_path / "partial_boxes.jsonl"
    partial.write_text(boxes.read_text().splitlines()[0] + "\n")
    stopped = sft(tiny_moon_dir, data, tmp_path / "out2", partial)
    assert stopped.returncode != 0
    assert "is not in the box store" in stopped.stdout and f"{FASHION_CATALOG.resolve()}/images/" in stopped.stdout
