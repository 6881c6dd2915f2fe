"""Which views of each product image the model sees: the original, the core-product crop, or both.

MOON feeds the detector's crop next to the original so background clutter matters less. Boxes come
from a store written once by ``moon-swift detect`` (looked up by the image's content hash), so
training and serving never run the detector unless asked to (``MOON_BOXES_MISSING=detect``).
Settings are environment variables, like ``MOON_INFONCE_*``, so they reach swift's dataloader
workers and ``swift deploy`` alike (recipes set them in their ``ENV`` block):

* ``MOON_IMAGE_VIEWS``: ``original`` (default without boxes), ``both`` (default with boxes), ``crop``;
* ``MOON_BOXES``: the ``boxes.jsonl`` written by ``moon-swift detect``;
* ``MOON_BOXES_MISSING``: an image absent from the store: ``error`` (default), ``full`` (use the full
  image as its crop; counted and logged), ``detect`` (run the bundled detector, or
  ``MOON_DETECTOR_CONFIG`` + ``MOON_DETECTOR_CHECKPOINT``, in this process).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from PIL import Image

from .errors import MoonInputError
from .images import inline_image_bytes, load_image

logger = logging.getLogger(__name__)

ViewMode = Literal["original", "crop", "both"]
VIEW_MODES = ("original", "crop", "both")
MISSING_POLICIES = ("error", "full", "detect")


@dataclass(frozen=True)
class ViewSettings:
    views: ViewMode = "original"
    boxes: str | None = None
    missing: str = "error"

    @classmethod
    def from_env(cls) -> ViewSettings:
        boxes = os.environ.get("MOON_BOXES") or None
        views = os.environ.get("MOON_IMAGE_VIEWS") or ("both" if boxes else "original")
        missing = os.environ.get("MOON_BOXES_MISSING", "error")
        if views not in VIEW_MODES:
            raise MoonInputError(f"MOON_IMAGE_VIEWS must be one of {VIEW_MODES}, got {views!r}")
        if missing not in MISSING_POLICIES:
            raise MoonInputError(f"MOON_BOXES_MISSING must be one of {MISSING_POLICIES}, got {missing!r}")
        if views != "original" and boxes is None and missing != "detect":
            raise MoonInputError(
                f"MOON_IMAGE_VIEWS={views} needs core-product boxes: set MOON_BOXES to the output of "
                "`moon-swift detect`, or MOON_BOXES_MISSING=detect to detect while encoding"
            )
        if boxes is not None and not os.path.isfile(boxes):
            raise MoonInputError("box store does not exist (write it with `moon-swift detect`)", file=boxes)
        return cls(views, boxes, missing)  # type: ignore[arg-type]


class ImageViews:
    """Expands each image of a row into its views; one per template (and per dataloader worker)."""

    def __init__(self, settings: ViewSettings):
        self.settings = settings
        self.missing = Counter()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # datasets' multiprocess map pickles the template
        return {"settings": self.settings, "missing": self.missing}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["settings"])
        self.missing = state["missing"]

    @cached_property
    def store(self):
        from .detection.store import BoxStore

        return BoxStore(self.settings.boxes)

    @cached_property
    def detector(self):
        from .detection.backend import Detector, default_detector

        config, checkpoint = os.environ.get("MOON_DETECTOR_CONFIG"), os.environ.get("MOON_DETECTOR_CHECKPOINT")
        return Detector(config, checkpoint) if config and checkpoint else default_detector()

    def views_of(self, source: str | Image.Image, field: str) -> list[Image.Image]:
        """The images that stand for ``source`` (a path or inline base64): [original], [crops] or both."""
        image = source if isinstance(source, Image.Image) else load_image(source, field=field)
        if self.settings.views == "original":
            return [image]
        from .detection.selection import crop

        crops = crop(image, self._selection(source, image, field))
        return crops if self.settings.views == "crop" else [image, *crops]

    def _selection(self, source: str | Image.Image, image: Image.Image, field: str):
        from .detection.selection import full_image

        key = inline_image_bytes(source) if isinstance(source, str) else None
        found = None
        if self.settings.boxes is not None and not isinstance(source, Image.Image):
            found = self.store.lookup(key if key is not None else source)
        if found is not None:
            return found
        where = "an in-memory image" if isinstance(source, Image.Image) else (source if key is None else "inline")
        if self.settings.missing == "error":
            raise MoonInputError(
                f"image is not in the box store {self.settings.boxes}: run `moon-swift detect` on this "
                "dataset, or set MOON_BOXES_MISSING=full / detect",
                file=where,
                field=field,
            )
        if self.settings.missing == "detect":
            return self._detect(image)
        with self._lock:
            self.missing["full image (not in the box store)"] += 1
            if self.missing.total() in (1, 10, 100, 1000) or self.missing.total() % 10000 == 0:
                logger.warning("%d image(s) not in the box store so far: full image used as crop (e.g. %s)",
                               self.missing.total(), where)  # fmt: skip
        return full_image(image.width, image.height, "not in the box store")

    def _detect(self, image: Image.Image):
        from .detection.selection import select_boxes

        with self._lock:  # one detector per process, one image at a time
            (found,) = self.detector.detect([image])
        return select_boxes(found.boxes, found.scores, found.width, found.height)


def expand_image_tags(messages: list[dict], counts: list[int]) -> None:
    """Repeat the i-th ``<image>`` tag ``counts[i]`` times, in message order (string contents)."""
    index = 0
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str) or "<image>" not in content:
            continue
        parts = content.split("<image>")
        rebuilt = [parts[0]]
        for part in parts[1:]:
            rebuilt.append("<image>" * counts[index] + part)
            index += 1
        message["content"] = "".join(rebuilt)
    if index != len(counts):
        raise MoonInputError(f"the row has {len(counts)} images but {index} <image> tags", field="messages")
