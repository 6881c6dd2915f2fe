"""What a learned embedder must beat: chance, the majority class, and a no-learning thumbnail match.

* chance: the exact expectation of each metric under a uniformly random ranking (or label), computed
  with the same metric functions as the models' figures, so it is a formula, not a draw;
* majority class: the most frequent label among the *training* products, predicted for every
  held-out product;
* thumbnail match: each image's core-product crop (the box store the models use) shrunk to a small
  colour thumbnail, mean-centred and compared by cosine. Photo queries below it have not learned to see.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MoonInputError
from ..core.images import read_image
from .encode import Encoder
from .metrics import ranking_metrics


def chance_retrieval(catalog_size: int, search_k: int = 100) -> dict[str, float]:
    """Every retrieval metric averaged over all ranks a random ranking gives the target equally often
    (ranks past ``search_k`` count as not found, as in :func:`~moon_swift.eval.tasks.retrieval_outcome`)."""
    if catalog_size < 1:
        raise ValueError("an empty catalog has no chance rate")
    return ranking_metrics(np.minimum(np.arange(catalog_size), search_k))


def chance_accuracy(truth: Sequence[str]) -> float:
    """A label drawn uniformly among the classes present is right with probability 1 / classes."""
    return 1.0 / len(set(truth))


def majority_accuracy(train_labels: Sequence[str], truth: Sequence[str]) -> float:
    """Accuracy of predicting the training set's most frequent label (0 when training has no labels)."""
    if not train_labels:
        return 0.0
    majority = Counter(train_labels).most_common(1)[0][0]
    return float(np.mean([label == majority for label in truth]))


class ThumbnailEncoder(Encoder):
    """Images only: the first image of a request, cropped to its stored core-product box, as an
    ``size`` x ``size`` RGB thumbnail (mean-centred, L2-normalised). A request without an image is refused."""

    def __init__(self, boxes: str | Path | None, size: int = 8):
        from ..detection.box_index import BoxIndex

        self.store = BoxIndex(boxes) if boxes else None
        self.size = size
        self.without_box = 0

    def encode(self, requests: Sequence[dict[str, Any]], *, desc: str = "encode", progress: bool = True) -> np.ndarray:
        if not requests:
            return np.zeros((0, 3 * self.size**2), dtype=np.float32)
        return np.stack([self._thumbnail(request) for request in requests])

    def _thumbnail(self, request: dict[str, Any]) -> np.ndarray:
        from PIL import Image

        from ..detection.selection import crop

        images = request.get("images") or []
        if not images:
            raise MoonInputError("the thumbnail match sees images only; this request has none", field="images")
        loaded = read_image(images[0], field="images[0]")
        selection = self.store.lookup_sha256(loaded.sha256) if self.store is not None and loaded.sha256 else None
        if selection is None:
            self.without_box += 1
            view = loaded.image
        else:
            view = crop(loaded.image, selection)[0]
        pixels = np.asarray(view.convert("RGB").resize((self.size, self.size), Image.Resampling.BOX), dtype=np.float32)
        vector = pixels.reshape(-1) - pixels.mean()
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else vector
