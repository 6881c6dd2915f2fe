"""Reading and sizing images: one loader for every form an image arrives in, so training, evaluation,
detection and serving decode it the same way.

An image may be handed over as

* a file path (``str`` or ``os.PathLike``);
* an ``http(s)://`` URL (downloaded; refused with a clear message when the network is unreachable);
* inline base64: a ``data:image/...;base64,`` URI or a bare base64 string (what ``swift deploy`` passes);
* raw encoded bytes;
* a Hugging Face ``datasets`` image dict ``{"bytes": ..., "path": ...}`` (how swift's dataset loader
  hands over a row's ``images``);
* a PIL image.

:func:`read_image` decodes it once and keeps the encoded bytes beside the picture, so that the box
store can find the image's crop by content hash without reading or decoding it again. Anything else,
or a value that does not decode, raises :class:`~moon_swift.core.errors.MoonInputError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from .errors import MoonInputError

_DATA_URI = re.compile(r"data:[^;,]*;base64,(.*)", re.DOTALL)
URL_PREFIXES = ("http://", "https://")
#: seconds to wait for an image URL before giving up
URL_TIMEOUT = 20.0

#: what :func:`read_image` accepts
ImageInput = str | os.PathLike | bytes | Image.Image | dict


@dataclass
class LoadedImage:
    """A decoded, upright RGB image, the encoded bytes it came from (None for an in-memory PIL image),
    and where it came from, in words, for messages."""

    image: Image.Image
    data: bytes | None
    origin: str

    @cached_property
    def sha256(self) -> str | None:
        """Content hash of the encoded bytes: the box store's key (None without bytes)."""
        return None if self.data is None else hashlib.sha256(self.data).hexdigest()


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


def describe_value(value: Any) -> str:
    """A short description of an image value for messages (never a whole base64 string)."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, Image.Image):
        return f"<PIL image {value.width}x{value.height} {value.mode}>"
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 300 else f"{text[:80]}... ({len(text)} characters)"


def read_image(value: ImageInput, *, field: str = "image", row: int | str | None = None) -> LoadedImage:
    """Decode ``value`` (any of the forms in the module docstring) into an upright RGB image, or raise
    :class:`MoonInputError` saying why not."""
    if isinstance(value, Image.Image):
        return LoadedImage(to_rgb(value), None, describe_value(value))
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if isinstance(data, bytes | bytearray) and data:
            return _decode(bytes(data), origin=path or f"<inline image, {len(data)} bytes>", field=field, row=row)
        if isinstance(path, str) and path:
            return read_image(path, field=field, row=row)
        raise MoonInputError(
            f"image dict has neither 'bytes' nor 'path' (got keys {sorted(map(str, value))})", row=row, field=field
        )
    if isinstance(value, bytes | bytearray):
        if not value:
            raise MoonInputError("image bytes are empty", row=row, field=field)
        return _decode(bytes(value), origin=f"<inline image, {len(value)} bytes>", field=field, row=row)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise MoonInputError(
            f"not an image: expected a path, URL, base64 string, bytes, PIL image or {{'bytes', 'path'}} dict, "
            f"got {type(value).__name__} {describe_value(value)}",
            row=row,
            field=field,
        )
    if value.startswith(URL_PREFIXES):
        return _decode(_download(value, field=field, row=row), origin=value, field=field, row=row)
    if os.path.isfile(value):
        if os.path.getsize(value) == 0:
            raise MoonInputError("image file is empty (0 bytes)", file=value, row=row, field=field)
        with open(value, "rb") as file:
            return _decode(file.read(), origin=value, field=field, row=row)
    data = inline_image_bytes(value)
    if data is None:
        raise MoonInputError("image file does not exist", file=describe_value(value), row=row, field=field)
    return _decode(data, origin=f"<inline image, {len(data)} bytes>", field=field, row=row)


def load_image(value: ImageInput, *, field: str = "image", row: int | str | None = None) -> Image.Image:
    """:func:`read_image`, the picture only."""
    return read_image(value, field=field, row=row).image


def image_problem(value: ImageInput) -> str | None:
    """Why ``value`` is not a usable image (missing, empty, unreadable, too large, not an image), or None."""
    try:
        read_image(value)
    except MoonInputError as error:
        return error.reason
    return None


def _download(url: str, *, field: str, row: int | str | None) -> bytes:
    import requests

    try:
        response = requests.get(url, timeout=URL_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as error:
        raise MoonInputError(
            f"cannot download the image ({type(error).__name__}: {str(error)[:200]}); without network access, "
            "download it first and pass the file path",
            file=url,
            row=row,
            field=field,
        ) from error
    return response.content


def _decode(data: bytes, *, origin: str, field: str, row: int | str | None) -> LoadedImage:
    where = origin if len(origin) <= 300 else describe_value(origin)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return LoadedImage(to_rgb(image), data, origin)
    except Image.DecompressionBombError as error:
        message = f"image is too large to decode safely ({error})"
        raise MoonInputError(message, file=where, row=row, field=field) from error
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        message = f"image cannot be read ({type(error).__name__}: {error})"
        raise MoonInputError(message, file=where, row=row, field=field) from error


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
