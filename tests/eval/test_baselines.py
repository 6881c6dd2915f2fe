"""Baselines a learned embedder must beat: exact chance rates, the majority class, the thumbnail match."""

import json

import numpy as np
import pytest
from PIL import Image

from moon_swift.core.errors import MoonInputError
from moon_swift.detection.selection import Selection
from moon_swift.detection.store import BoxStore, bytes_sha256
from moon_swift.eval.baselines import ThumbnailEncoder, chance_accuracy, chance_retrieval, majority_accuracy
from moon_swift.eval.encode import image_query_request, query_request


def test_chance_is_the_exact_expectation_of_a_random_rank():
    metrics = chance_retrieval(4)
    assert metrics["recall@1"] == 0.25 and metrics["recall@5"] == 1.0
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    rng = np.random.default_rng(0)  # a random ranking's average comes out the same
    ranks = np.array([rng.permutation(4).tolist().index(0) for _ in range(20_000)])
    assert (1 / (ranks + 1)).mean() == pytest.approx(metrics["mrr"], abs=0.01)
    far = chance_retrieval(300)  # past the search depth a target counts as not found, as for the models
    assert far["recall@10"] == pytest.approx(10 / 300) and far["mrr"] == pytest.approx(
        (sum(1 / r for r in range(1, 101)) + 200 / 101) / 300)  # fmt: skip


def test_majority_class_comes_from_training_labels():
    assert majority_accuracy(["a", "a", "b"], ["a", "b", "b", "b"]) == 0.25  # training's majority, not held-out's
    assert chance_accuracy(["a", "b", "b", "c"]) == pytest.approx(1 / 3)


def write_image(path, left, right):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20], pixels[:, 20:] = left, right
    Image.fromarray(pixels).save(path)
    return str(path)


def test_thumbnails_compare_the_stored_core_product_crops(tmp_path):
    photo = write_image(tmp_path / "photo.png", (200, 30, 30), (20, 20, 220))  # a red product on blue
    red = write_image(tmp_path / "red.png", (200, 30, 30), (200, 30, 30))
    blue = write_image(tmp_path / "blue.png", (20, 20, 220), (20, 20, 220))
    store_path = tmp_path / "boxes.jsonl"
    store = BoxStore()
    box = Selection(40, 20, [[0, 0, 20, 20]], [0.9], False, "detected").to_dict()
    store.add({"sha256": bytes_sha256((tmp_path / "photo.png").read_bytes()), **box})
    store_path.write_text("".join(json.dumps(e) + "\n" for e in store.entries.values()))
    with_boxes, without = ThumbnailEncoder(store_path, size=4), ThumbnailEncoder(None, size=4)
    requests = [image_query_request(photo), image_query_request(red), image_query_request(blue)]
    cropped, whole = with_boxes.encode(requests), without.encode(requests)
    assert cropped[0] @ cropped[1] == pytest.approx(1.0, abs=1e-5)  # the crop is the red half only
    assert whole[0] @ whole[1] < 0.9 and with_boxes.without_box == 2
    assert np.allclose(np.linalg.norm(cropped, axis=1), 1.0)
    with pytest.raises(MoonInputError, match="images only"):
        with_boxes.encode([query_request("red shirt")])
