import json
import random

import numpy as np
import pytest
from helpers import FASHION_CATALOG, STREET_PHOTOS
from PIL import Image
from pycocotools.coco import COCO

from moon_swift.detection.training.synth import (
    SynthConfig,
    build_dataset,
    compose,
    core_boxes,
    cutout,
    foreground_mask,
    mask_box,
)

CATALOG_PHOTO = FASHION_CATALOG / "images" / "10005.jpg"


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_box_from_white_background_is_where_the_product_was_pasted():
    photo = Image.open(CATALOG_PHOTO).convert("RGB")
    own_box = mask_box(foreground_mask(photo))
    canvas = Image.new("RGB", (500, 400), "white")
    canvas.paste(photo, (150, 90))  # the photo's white border vanishes into the white canvas
    found = mask_box(foreground_mask(canvas))
    expected = (own_box[0] + 150, own_box[1] + 90, own_box[2] + 150, own_box[3] + 90)
    assert iou(found, expected) > 0.98
    assert own_box[2] - own_box[0] < photo.width  # the product is tighter than the photo


def test_empty_and_full_frame_photos_are_rejected():
    assert foreground_mask(Image.new("RGB", (224, 224), "white")) is None
    assert foreground_mask(Image.new("RGB", (224, 224), (250, 250, 250))) is None  # JPEG-ish near-white
    noise = np.random.default_rng(0).integers(0, 200, (224, 224, 3), dtype=np.uint8)
    assert foreground_mask(Image.fromarray(noise)) is None  # not on white: the box is the whole frame


def test_composite_annotations_match_the_pasted_pixels():
    config = SynthConfig()
    core = cutout(CATALOG_PHOTO, config)
    background = Image.new("RGB", (320, 240), (40, 90, 160))
    canvas, annotations = compose(background, core, [], random.Random(0), config)
    (annotation,) = annotations
    changed = np.abs(np.asarray(canvas, dtype=int) - np.asarray(background, dtype=int)).sum(axis=2) > 60
    x, y, w, h = annotation["bbox"]
    assert annotation["core"] is True
    assert iou(mask_box(changed), (x, y, x + w, y + h)) > 0.9


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    files = build_dataset(FASHION_CATALOG, STREET_PHOTOS, out, num_train=12, num_val=6, seed=3, max_catalog=30)
    return out, files


def test_build_writes_loadable_coco_with_one_core_per_image(built):
    out, files = built
    for split, count in (("train", 12), ("val", 6)):
        coco = COCO(str(files[split]))
        assert len(coco.getImgIds()) == count and coco.getCatIds() == [1]
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            image = Image.open(out / info["file_name"])
            assert image.size == (info["width"], info["height"]) and max(image.size) == 320
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert 1 <= len(annotations) <= 3 and sum(a["core"] for a in annotations) == 1
            core = next(a for a in annotations if a["core"])
            assert core["area"] == max(a["area"] for a in annotations)  # the core is the large one
            for a in annotations:
                x, y, w, h = a["bbox"]
                assert 0 <= x and 0 <= y and x + w <= info["width"] and y + h <= info["height"]
    assert len(core_boxes(files["val"])) == 6


def test_train_and_val_share_no_catalog_photo_or_background(built):
    _, files = built
    sources = {}
    for split, path in files.items():
        coco = json.loads(path.read_text())
        sources[split] = ({a["source"] for a in coco["annotations"]}, {i["background"] for i in coco["images"]})
    assert not sources["train"][0] & sources["val"][0]
    assert not sources["train"][1] & sources["val"][1]


def test_same_seed_same_dataset(built, tmp_path):
    out, files = built
    again = build_dataset(FASHION_CATALOG, STREET_PHOTOS, tmp_path, num_train=12, num_val=6, seed=3, max_catalog=30)
    assert again["val"].read_text() == files["val"].read_text()
    assert (tmp_path / "val" / "000000.jpg").read_bytes() == (out / "val" / "000000.jpg").read_bytes()
