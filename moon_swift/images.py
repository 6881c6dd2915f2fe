"""Reading and sizing product images: one place, so training, evaluation and serving agree."""

from __future__ import annotations

import base64
import binascii
import io
import os
import re

from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from .errors import MoonInputError

_DATA_URI = re.compile(r"data:[^;,]*;base64,(.*)", re.DOTALL)


def inline_image_bytes(value: str) -> bytes | None:
    """The bytes of a ``data:...;base64,`` URI or a bare base64 string (how ``swift deploy`` passes
    images), or None when ``value`` is neither (then it is a path). Paths never pass: they hold a '.'."""
    match = _DATA_URI.match(value)
    if match is None and (len(value) < 64 or len(value) % 4):
        return None
    try:
        return base64.b64decode(match.group(1) if match else value, validate=True)
    except (binascii.Error, ValueError):
        return None


def load_image(path: str, *, field: str = "image", row: int | None = None) -> Image.Image:
    """Decode ``path`` (a file, or inline base64) into an upright RGB image, or raise
    :class:`MoonInputError` saying why not."""
    source: str | io.BytesIO = path
    if os.path.isfile(path):
        if os.path.getsize(path) == 0:
            raise MoonInputError("image file is empty (0 bytes)", file=path, row=row, field=field)
    else:
        data = inline_image_bytes(path)
        if data is None:
            shown = path if len(path) <= 300 else f"{path[:80]}... ({len(path)} characters)"
            raise MoonInputError("image file does not exist", file=shown, row=row, field=field)
        source, path = io.BytesIO(data), f"<inline image, {len(data)} bytes>"
    try:
        with Image.open(source) as image:
            image.load()
            return to_rgb(image)
    except Image.DecompressionBombError as error:
        message = f"image is too large to decode safely ({error})"
        raise MoonInputError(message, file=path, row=row, field=field) from error
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        message = f"image cannot be read ({type(error).__name__}: {error})"
        raise MoonInputError(message, file=path, row=row, field=field) from error


def image_problem(path: str) -> str | None:
    """Why ``path`` is not a usable image (missing, empty, unreadable, too large), or None."""
    try:
        load_image(path)
    except MoonInputError as error:
        return error.reason
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB: applies the EXIF orientation and puts transparent pixels on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.split()[3])
        return background
    return image.convert("RGB")


def fit_image(image: Image.Image, *, factor: int, min_pixels: int, max_pixels: int) -> Image.Image:
    """Resize to sides that are multiples of ``factor`` (patch x merge) within the pixel budget.

    This is Qwen2-VL's ``smart_resize`` rule, applied here rather than through ``qwen_vl_utils``
    (which imports torchvision, often absent beside CPU torch builds).
    """
    image = to_rgb(image)
    height, width = smart_resize(image.height, image.width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return image
