"""Image views (original / core-product crop / both) as the template builds them, with a real box store."""

import json

import pytest
from PIL import Image

from moon_swift.errors import MoonInputError
from moon_swift.image_views import ImageViews, ViewSettings, expand_image_tags


def write_store(path, image_path, box, width=224, height=224):
    from moon_swift.detection.store import BoxStore

    line = {"sha256": BoxStore().hash_of(image_path), "image": str(image_path), "width": width, "height": height,
            "boxes": [box], "scores": [0.9], "fallback": False, "reason": "test box"}  # fmt: skip
    path.write_text(json.dumps(line) + "\n")


def test_settings_come_from_the_environment_and_bad_values_are_named(monkeypatch, tmp_path):
    monkeypatch.delenv("MOON_BOXES", raising=False)
    monkeypatch.delenv("MOON_IMAGE_VIEWS", raising=False)
    assert ViewSettings.from_env().views == "original"
    monkeypatch.setenv("MOON_IMAGE_VIEWS", "both")
    with pytest.raises(MoonInputError, match="needs core-product boxes: set MOON_BOXES"):
        ViewSettings.from_env()
    monkeypatch.setenv("MOON_BOXES", str(tmp_path / "missing.jsonl"))
    with pytest.raises(MoonInputError, match="box store does not exist"):
        ViewSettings.from_env()
    monkeypatch.setenv("MOON_IMAGE_VIEWS", "crops")
    with pytest.raises(MoonInputError, match="MOON_IMAGE_VIEWS must be one of"):
        ViewSettings.from_env()


def test_both_views_are_the_original_and_the_stored_crop(catalog_images, tmp_path):
    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0])
    both = ImageViews(ViewSettings("both", str(store))).views_of(str(catalog_images[0]), field="images[0]")
    assert [v.size for v in both] == [(224, 224), (100, 160)]
    assert both[1].tobytes() == Image.open(catalog_images[0]).convert("RGB").crop((20, 40, 120, 200)).tobytes()
    (crop_only,) = ImageViews(ViewSettings("crop", str(store))).views_of(str(catalog_images[0]), field="images[0]")
    assert crop_only.size == (100, 160)


def test_an_image_missing_from_the_store_errors_or_falls_back_counted(catalog_images, tmp_path):
    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0])
    with pytest.raises(MoonInputError, match="not in the box store") as error:
        ImageViews(ViewSettings("both", str(store))).views_of(str(catalog_images[1]), field="images[0]")
    assert str(catalog_images[1]) in str(error.value) and "images[0]" in str(error.value)
    views = ImageViews(ViewSettings("both", str(store), missing="full"))
    original, fallback = views.views_of(str(catalog_images[1]), field="images[0]")
    assert original.tobytes() == fallback.tobytes() and views.missing.total() == 1


def test_image_tags_are_repeated_in_message_order():
    messages = [{"role": "user", "content": "<image>a<image>b"}, {"role": "user", "content": "c<image>"}]
    expand_image_tags(messages, [2, 1, 3])
    assert [m["content"] for m in messages] == ["<image><image>a<image>b", "c<image><image><image>"]
    with pytest.raises(MoonInputError, match="2 images but 1 <image> tags"):
        expand_image_tags([{"role": "user", "content": "<image>"}], [2, 2])


def test_template_feeds_original_and_crop_as_two_vision_blocks(tiny_moon_dir, catalog_images, tmp_path, monkeypatch):
    from moon_swift.eval.encode import ProductEncoder

    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0])
    request = {"messages": [{"role": "user", "content": "<image>a tee"}], "images": [str(catalog_images[0])]}
    counts = {}
    for views in ("original", "both", "crop"):
        monkeypatch.setenv("MOON_IMAGE_VIEWS", views)
        monkeypatch.setenv("MOON_BOXES", str(store))
        encoder = ProductEncoder(str(tiny_moon_dir))
        encoded = encoder.template.encode(request)
        counts[views] = (encoded["input_ids"].count(151652), encoded["image_grid_thw"].shape[0])
        assert encoder.encode([request], progress=False).shape[0] == 1
    assert counts == {"original": (1, 1), "both": (2, 2), "crop": (1, 1)}


def test_lazy_detection_crops_with_the_bundled_detector_when_asked(monkeypatch):
    from helpers import STREET_PHOTOS

    photo = sorted((STREET_PHOTOS / "train" / "t-shirt").glob("*.jpg"))[0]
    monkeypatch.delenv("MOON_BOXES", raising=False)
    monkeypatch.setenv("MOON_IMAGE_VIEWS", "both")
    monkeypatch.setenv("MOON_BOXES_MISSING", "detect")
    original, crop = ImageViews(ViewSettings.from_env()).views_of(str(photo), field="images[0]")
    assert original.size == Image.open(photo).size and crop.width <= original.width and crop.height <= original.height
