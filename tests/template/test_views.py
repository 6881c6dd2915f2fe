"""Image views (original / core-product crop / both) as the template builds them, with a real box store."""

import json
import shutil

import pytest
from helpers import STREET_PHOTOS
from PIL import Image

from moon_swift.core.errors import MoonInputError
from moon_swift.core.images import read_image
from moon_swift.core.settings import EmbeddingSettings
from moon_swift.template.views import ImageViews, expand_image_tags


def write_store(path, image_path, box, width=224, height=224, fingerprint="f" * 16):
    from moon_swift.detection.store import BoxStore

    line = {"sha256": BoxStore().hash_of(image_path), "image": str(image_path), "width": width, "height": height,
            "boxes": [box], "scores": [0.9], "fallback": False, "reason": "test box",
            "detector": {"config": "c.py", "checkpoint": "w.pth", "fingerprint": fingerprint}}  # fmt: skip
    path.write_text(json.dumps(line) + "\n")


def views(image_views, store, **settings):
    return ImageViews(EmbeddingSettings(image_views=image_views, boxes=str(store), **settings))


def test_crops_without_a_box_store_are_refused_naming_what_is_missing(tmp_path):
    with pytest.raises(MoonInputError, match="need core-product boxes"):
        ImageViews(EmbeddingSettings(image_views="both"))
    with pytest.raises(MoonInputError, match="its box store is not here") as error:
        views("both", tmp_path / "gone.jsonl")
    assert "gone.jsonl" in str(error.value) and "MOON_BOXES_MISSING=detect" in str(error.value)
    with pytest.raises(MoonInputError, match="image_views must be one of"):
        EmbeddingSettings(image_views="crops")


def test_both_views_are_the_original_and_the_stored_crop(catalog_images, tmp_path):
    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0])
    both = views("both", store).views_of(read_image(str(catalog_images[0])), field="images[0]")
    assert [v.size for v in both] == [(224, 224), (100, 160)]
    assert both[1].tobytes() == Image.open(catalog_images[0]).convert("RGB").crop((20, 40, 120, 200)).tobytes()
    (crop_only,) = views("crop", store).views_of(read_image(str(catalog_images[0])), field="images[0]")
    assert crop_only.size == (100, 160)


def test_the_crop_is_found_by_content_whatever_form_the_image_came_in(catalog_images, tmp_path):
    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0])
    data = catalog_images[0].read_bytes()
    renamed = tmp_path / "renamed.jpg"
    shutil.copy(catalog_images[0], renamed)
    for value in ({"bytes": data, "path": None}, {"bytes": None, "path": str(catalog_images[0])}, data, str(renamed)):
        _, crop = views("both", store).views_of(read_image(value), field="images[0]")
        assert crop.size == (100, 160)


def test_an_image_missing_from_the_store_errors_or_falls_back_counted(catalog_images, tmp_path):
    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0])
    with pytest.raises(MoonInputError, match="not in the box store") as error:
        views("both", store).views_of(read_image(str(catalog_images[1])), field="images[0]")
    assert str(catalog_images[1]) in str(error.value) and "images[0]" in str(error.value)
    fallback_views = views("both", store, missing_boxes="full")
    original, fallback = fallback_views.views_of(read_image(str(catalog_images[1])), field="images[0]")
    assert original.tobytes() == fallback.tobytes() and fallback_views.missing.total() == 1


def test_a_box_store_of_another_detector_than_the_checkpoints_is_refused(catalog_images, tmp_path):
    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0], fingerprint="a" * 16)
    expected = {"config": "c.py", "checkpoint": "w.pth", "fingerprint": "b" * 16}
    with pytest.raises(MoonInputError, match="made by detector") as error:
        views("both", store, detector=expected).views_of(read_image(str(catalog_images[0])), field="images[0]")
    assert "a" * 16 in str(error.value) and "b" * 16 in str(error.value)


def test_image_tags_are_repeated_in_message_order():
    messages = [{"role": "user", "content": "<image>a<image>b"}, {"role": "user", "content": "c<image>"}]
    expand_image_tags(messages, [2, 1, 3])
    assert [m["content"] for m in messages] == ["<image><image>a<image>b", "c<image><image><image>"]
    with pytest.raises(MoonInputError, match="2 images but 1 <image> tags"):
        expand_image_tags([{"role": "user", "content": "<image>"}], [2, 2])


def test_the_template_feeds_the_views_the_checkpoint_saved(tiny_moon_dir, catalog_images, tmp_path):
    from moon_swift.eval.encode import ProductEncoder

    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0])
    request = {"messages": [{"role": "user", "content": "<image>a tee"}], "images": [str(catalog_images[0])]}
    counts = {}
    for image_views in ("original", "both", "crop"):
        model = tmp_path / image_views
        shutil.copytree(tiny_moon_dir, model)
        EmbeddingSettings(image_views=image_views, boxes=str(store)).save(model)
        encoder = ProductEncoder(str(model))
        encoded = encoder.template.encode(request)
        counts[image_views] = (encoded["input_ids"].count(151652), encoded["image_grid_thw"].shape[0])
        assert encoder.encode([request], progress=False).shape[0] == 1
    assert counts == {"original": (1, 1), "both": (2, 2), "crop": (1, 1)}


def test_detection_while_encoding_crops_with_the_bundled_detector():
    photo = sorted((STREET_PHOTOS / "train" / "t-shirt").glob("*.jpg"))[0]
    detecting = ImageViews(EmbeddingSettings(image_views="both", missing_boxes="detect"))
    original, crop = detecting.views_of(read_image(str(photo)), field="images[0]")
    assert original.size == Image.open(photo).size and crop.width <= original.width and crop.height <= original.height
    assert crop.size != original.size  # a real box, not the full-image fallback


def test_a_url_image_is_downloaded_once_and_its_crop_found_in_the_store(tiny_moon_dir, catalog_images, tmp_path):
    import functools
    import http.server
    import threading

    from moon_swift.eval.encode import ProductEncoder

    (tmp_path / "web").mkdir()
    shutil.copy(catalog_images[0], tmp_path / "web" / "photo.jpg")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    handler = functools.partial(Handler, directory=str(tmp_path / "web"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = tmp_path / "boxes.jsonl"
    write_store(store, catalog_images[0], [20.0, 40.0, 120.0, 200.0])
    model = tmp_path / "model"
    shutil.copytree(tiny_moon_dir, model)
    EmbeddingSettings(image_views="both", boxes=str(store), missing_boxes="error").save(model)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/photo.jpg"
        encoded = ProductEncoder(str(model)).template.encode(
            {"messages": [{"role": "user", "content": "<image>a tee"}], "images": [url]}
        )
    finally:
        server.shutdown()
    assert requests == ["/photo.jpg"]  # hashed for the store and decoded from one download
    assert encoded["image_grid_thw"].shape[0] == 2  # original + the stored crop (missing would have raised)
