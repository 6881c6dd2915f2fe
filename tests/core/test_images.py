import re

import pytest
from PIL import Image

from moon_swift.core.errors import MoonInputError
from moon_swift.core.images import fit_image, image_problem, load_image


def test_load_image_decodes_a_real_photo(catalog_images):
    image = load_image(str(catalog_images[0]))
    assert image.mode == "RGB" and image.size == (224, 224)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
        (lambda p: p.write_bytes(b"not an image at all"), "cannot be read"),
    ],
)
def test_bad_image_files_are_named_with_a_reason(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(MoonInputError, match=re.escape(reason)) as error:
        load_image(str(path), field="images[0]", row=7)
    assert str(path) in str(error.value) and "row 7" in str(error.value) and "images[0]" in str(error.value)
    assert reason in image_problem(str(path))


def test_truncated_jpeg_is_reported(tmp_path, catalog_images):
    data = catalog_images[0].read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert "cannot be read" in image_problem(str(path))


def test_transparent_and_rotated_images_come_out_upright_rgb_on_white(tmp_path):
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 10, 20))
    rgba.save(tmp_path / "t.png")
    image = load_image(str(tmp_path / "t.png"))
    assert image.mode == "RGB" and image.getpixel((30, 10)) == (255, 255, 255)
    rotated = Image.new("RGB", (40, 20), (0, 255, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    rotated.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(str(tmp_path / "r.jpg")).size == (20, 40)
    cmyk = Image.new("CMYK", (30, 30), (0, 0, 0, 0))
    cmyk.save(tmp_path / "c.jpg")
    assert load_image(str(tmp_path / "c.jpg")).mode == "RGB"


def test_fit_image_snaps_to_the_patch_grid_within_the_budget():
    image = fit_image(Image.new("RGB", (400, 533)), factor=28, min_pixels=56 * 56, max_pixels=112 * 112)
    assert image.width % 28 == 0 and image.height % 28 == 0
    assert image.width * image.height <= 112 * 112
    tiny = fit_image(Image.new("RGB", (5, 5)), factor=28, min_pixels=56 * 56, max_pixels=112 * 112)
    assert tiny.width * tiny.height >= 56 * 56


def test_inline_base64_images_decode_like_files(catalog_images):
    """`swift deploy` hands the template base64 strings (bare, or as data URIs) instead of paths."""
    import base64

    data = base64.b64encode(catalog_images[0].read_bytes()).decode()
    from_file = load_image(str(catalog_images[0]))
    for inline in (data, f"data:image/jpeg;base64,{data}"):
        assert load_image(inline).tobytes() == from_file.tobytes()


def test_a_long_string_that_is_neither_file_nor_base64_is_reported_shortened():
    bogus = "/no/such/dir/" + "x" * 500 + ".jpg"
    with pytest.raises(MoonInputError, match="does not exist") as error:
        load_image(bogus, field="images[0]")
    assert "(517 characters)" in str(error.value) and len(str(error.value)) < 200


def _same_pixels(a, b) -> bool:
    return a.size == b.size and a.tobytes() == b.tobytes()


def test_every_form_an_image_arrives_in_decodes_to_the_same_picture(catalog_images, tmp_path):
    """Paths, HF datasets dicts (how swift hands over a row's images), bytes, base64, PIL images."""
    import base64

    from moon_swift.core.images import read_image

    path = catalog_images[0]
    data = path.read_bytes()
    expected = load_image(str(path))
    forms = [str(path), path, {"bytes": data, "path": str(path)}, {"bytes": None, "path": str(path)},
             {"bytes": data, "path": None}, data, base64.b64encode(data).decode(),
             "data:image/jpeg;base64," + base64.b64encode(data).decode(), Image.open(path)]  # fmt: skip
    for form in forms:
        loaded = read_image(form, field="images[0]")
        assert _same_pixels(loaded.image, expected), type(form).__name__
    assert read_image(str(path)).sha256 == read_image({"bytes": data, "path": None}).sha256  # the box store's key
    assert read_image(Image.open(path)).sha256 is None  # an in-memory picture has no file content to look up


@pytest.mark.parametrize(
    "value, reason",
    [
        (12, "not an image: expected a path, URL, base64 string, bytes, PIL image or {'bytes', 'path'} dict, got int"),
        ({"url": "x"}, "image dict has neither 'bytes' nor 'path'"),
        (b"", "image bytes are empty"),
        (b"garbage bytes", "image cannot be read"),
        (None, "not an image"),
    ],
)
def test_malformed_image_values_are_named_never_a_type_error(value, reason):
    from moon_swift.core.images import read_image

    with pytest.raises(MoonInputError, match=re.escape(reason)) as error:
        read_image(value, field="anchor images[0]", row=3)
    assert "field 'anchor images[0]'" in str(error.value) and "row 3" in str(error.value)


def test_urls_are_downloaded_and_an_unreachable_one_is_refused_clearly(catalog_images, tmp_path):
    import functools
    import http.server
    import socket
    import threading

    from moon_swift.core.images import read_image

    (tmp_path / "photo.jpg").write_bytes(catalog_images[0].read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/photo.jpg"
        assert _same_pixels(read_image(url).image, load_image(str(catalog_images[0])))
    finally:
        server.shutdown()
    with socket.socket() as probe:  # a port nothing listens on: what a machine without network meets
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/photo.jpg"
    with pytest.raises(MoonInputError, match="cannot download the image .*without network access") as error:
        read_image(closed, field="images[0]")
    assert closed in str(error.value)
