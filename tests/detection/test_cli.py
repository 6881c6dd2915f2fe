import json
import shutil
import sys

import pytest
from helpers import FASHION_CATALOG, STREET_PHOTOS, run_cli

from moon_swift.apps.cli import main
from moon_swift.detection.store import BoxStore

ENV = {"OMP_NUM_THREADS": "1"}


def moon_swift(*args: str):
    return run_cli([sys.executable, "-m", "moon_swift.apps.cli", *args], env=ENV, timeout=300)


@pytest.mark.slow  # two CLI processes, each importing torch + mmdet: ~25 s
def test_detect_a_swift_dataset_twice_with_the_bundled_detector(tmp_path):
    photos = sorted((STREET_PHOTOS / "train" / "hat").glob("*.jpg"))[:3]
    images = [str(shutil.copy(photo, tmp_path / photo.name)) for photo in photos]
    row = {"messages": [{"role": "user", "content": "<image>"}], "images": [images[0]],
           "positive_messages": [[{"role": "user", "content": "<image><image>"}]],
           "positive_images": [[images[1], images[2]]]}  # fmt: skip
    dataset = tmp_path / "train.jsonl"
    dataset.write_text(json.dumps(row) + "\n" + json.dumps({**row, "images": [images[2]]}) + "\n")
    out = tmp_path / "boxes.jsonl"
    first = moon_swift("detect", "--dataset", str(dataset), "--out", str(out), "--quiet", "--max-crops", "2")
    assert first.returncode == 0, first.stdout
    assert "3 images: 3 detected, 0 cache hits" in first.stdout and str(out) in first.stdout
    second = moon_swift("detect", "--dataset", str(dataset), "--out", str(out), "--quiet", "--max-crops", "2")
    assert "3 images: 0 detected, 3 cache hits" in second.stdout, second.stdout
    store = BoxStore(out)
    assert len(store) == 3 and all(store.lookup(image) is not None for image in images)
    assert store.entry(images[0])["detector"]["config"] == "rtmdet_product_tiny.py"
    assert store.entry(images[0])["policy"]["max_crops"] == 2


def test_detect_errors_exit_2_with_the_reason(tmp_path, capsys):
    missing = ["--config", str(tmp_path / "missing.py"), "--checkpoint", str(tmp_path / "missing.pth")]
    assert main(["detect", "--dataset", str(tmp_path), "--out", str(tmp_path / "b.jsonl"), *missing]) == 2
    assert "missing.py: detector config file does not exist" in capsys.readouterr().err
    (tmp_path / "broken.jpg").write_bytes(b"")
    assert main(["detect", "--dataset", str(tmp_path), "--out", str(tmp_path / "b.jsonl"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "broken.jpg" in error and "0 bytes" in error
    skip = ["--on-bad-image", "skip", "--quiet"]
    assert main(["detect", "--dataset", str(tmp_path), "--out", str(tmp_path / "b.jsonl"), *skip]) == 0
    assert "bad images skipped: 1 (image file is empty: 1)" in capsys.readouterr().out


def test_build_data_command(tmp_path, capsys):
    sources = ["--catalog", str(FASHION_CATALOG), "--backgrounds", str(STREET_PHOTOS), "--max-catalog", "8"]
    result = main(["detector", "build-data", "--out", str(tmp_path), "--num-train", "3", "--num-val", "2", *sources])
    assert result == 0 and "composited 3 train + 2 val images (seed 0)" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "annotations_val.json").read_text())["images"]) == 2
    assert len(list((tmp_path / "train").glob("*.jpg"))) == 3
