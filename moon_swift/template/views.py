"""Which views of each image the model sees: the original, the core-product crop, or both.

MOON feeds the detector's crop next to the original so background clutter matters less; product
images and photo queries alike. Boxes come from a store written once by ``moon-swift detect`` and
looked up by the image's content hash, so training and serving never run the detector unless the
checkpoint's settings say so (``missing_boxes="detect"``). What is used is decided by the
checkpoint's :class:`~moon_swift.core.settings.EmbeddingSettings`; a box store or detector
other than the one the checkpoint's crops came from is refused, never silently used.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from functools import cached_property
from pathlib import Path

from PIL import Image

from ..core.errors import MoonInputError
from ..core.images import LoadedImage
from ..core.settings import EmbeddingSettings

logger = logging.getLogger(__name__)


class ImageViews:
    """Expands each image into its views; one per template (and per dataloader worker)."""

    def __init__(self, settings: EmbeddingSettings):
        self.settings = settings
        self.missing = Counter()
        self._lock = threading.Lock()
        if settings.uses_crops and settings.missing_boxes != "detect":
            if settings.boxes is None:
                raise MoonInputError(
                    f"image views {settings.image_views!r} need core-product boxes: give a box store written by "
                    "`moon-swift detect` (MOON_BOXES), or detect while encoding (MOON_BOXES_MISSING=detect)",
                    field="boxes",
                )
            if not Path(settings.boxes).is_file():
                raise MoonInputError(
                    f"this checkpoint embeds image views {settings.image_views!r}, but its box store is not here. "
                    f"Give a box store made by {_detector_words(settings.detector)} (`moon-swift detect --dataset "
                    "... --out boxes.jsonl`, then MOON_BOXES=boxes.jsonl), or detect while encoding "
                    "(MOON_BOXES_MISSING=detect)",
                    file=settings.boxes,
                    field="boxes",
                )

    def __getstate__(self) -> dict:  # datasets' multiprocess map pickles the template
        return {"settings": self.settings, "missing": self.missing}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["settings"])
        self.missing = state["missing"]

    @cached_property
    def store(self):
        """The box store's index, checked to come from the checkpoint's detector (None: detect everything)."""
        from ..detection.box_index import BoxIndex

        path = self.settings.boxes
        if path is None or not Path(path).is_file():
            return None
        store = BoxIndex(path)  # memory-mapped: shared by every worker and rank, not parsed by each
        expected = (self.settings.detector or {}).get("fingerprint")
        found = store.detector_fingerprints()
        if expected and found and found != {expected}:
            raise MoonInputError(
                f"the box store was made by detector(s) {sorted(found)}, but this checkpoint's crops come from "
                f"{_detector_words(self.settings.detector)}: detect again with that detector, or train with these "
                "boxes",
                file=path,
                field="detector",
            )
        return store

    @cached_property
    def detector(self):
        from ..detection.backend import find_detector

        return find_detector(self.settings.detector)

    @cached_property
    def box_policy(self):
        from ..detection.selection import BoxPolicy

        return BoxPolicy.from_dict(self.settings.box_policy) if self.settings.box_policy else BoxPolicy()

    def views_of(self, loaded: LoadedImage, field: str) -> list[Image.Image]:
        """The images that stand for ``loaded``: [original], [crops] or [original, *crops]."""
        if self.settings.image_views == "original":
            return [loaded.image]
        from ..detection.selection import crop

        crops = crop(loaded.image, self._selection(loaded, field))
        return crops if self.settings.image_views == "crop" else [loaded.image, *crops]

    def _selection(self, loaded: LoadedImage, field: str):
        from ..detection.selection import full_image

        store = self.store
        found = store.lookup_sha256(loaded.sha256) if store is not None and loaded.sha256 else None
        if found is not None:
            return found
        if self.settings.missing_boxes == "detect":
            return self._detect(loaded.image)
        if self.settings.missing_boxes == "error":
            raise MoonInputError(
                f"image is not in the box store {self.settings.boxes}: run `moon-swift detect` on this dataset, or "
                "set the missing-box policy to full / detect (MOON_BOXES_MISSING)",
                file=loaded.origin,
                field=field,
            )
        with self._lock:
            self.missing["full image (not in the box store)"] += 1
            total = self.missing.total()
        if total in (1, 10, 100, 1000) or total % 10000 == 0:
            logger.warning("%d image(s) not in the box store so far: full image used as crop (e.g. %s)", total,
                           loaded.origin)  # fmt: skip
        return full_image(loaded.image.width, loaded.image.height, "not in the box store")

    def _detect(self, image: Image.Image):
        from ..detection.selection import select_boxes

        with self._lock:  # one detector per process, one image at a time
            (found,) = self.detector.detect_rgb([image])
        return select_boxes(found.boxes, found.scores, found.width, found.height, self.box_policy)


def _detector_words(detector: dict | None) -> str:
    if not detector:
        return "the bundled detector"
    name = f"{detector.get('config')} + {detector.get('checkpoint')}"
    return f"detector {name} (fingerprint {detector.get('fingerprint')})"


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
