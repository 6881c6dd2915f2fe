"""Which detected boxes become crops: a policy, and a record of every decision it took.

The record (:class:`Selection`) is what the box store keeps, so a crop can always be traced back to
why it was chosen, or why the full image was used instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

RANK_MODES = ("score", "area", "centrality", "score*area*centrality", "weighted")


@dataclass(frozen=True)
class BoxPolicy:
    """How to turn detections into at most ``max_crops`` crops.

    ``rank_by``: ``score``; ``area`` (fraction of the image); ``centrality`` (1 at the centre, 0 at a
    corner); their product ``score*area*centrality``; or ``weighted``: ``weights`` = (score, area,
    centrality) as a weighted sum. ``margin`` expands each box by that fraction of its width/height per
    side, clipped to the image. Boxes smaller than ``min_size_px`` on either side or covering less than
    ``min_area_fraction`` of the image are dropped. When nothing qualifies, ``fallback_full_image`` keeps
    the full image as the one "crop" (otherwise the selection is empty).
    """

    score_threshold: float = 0.3
    max_crops: int = 1
    rank_by: str = "score*area*centrality"  # the detector finds every product; the core one is large and central
    weights: tuple[float, float, float] = (1.0, 0.5, 0.5)
    margin: float = 0.05
    min_size_px: float = 8.0
    min_area_fraction: float = 0.01
    fallback_full_image: bool = True

    def __post_init__(self):
        if self.rank_by not in RANK_MODES:
            raise ValueError(f"rank_by must be one of {RANK_MODES}, got {self.rank_by!r}")
        if self.max_crops < 1:
            raise ValueError(f"max_crops must be >= 1, got {self.max_crops}")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"margin is a fraction of the box size in [0, 1], got {self.margin}")
        if len(self.weights) != 3:
            raise ValueError(f"weights are (score, area, centrality), got {self.weights!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoxPolicy:
        return cls(**{**data, "weights": tuple(data.get("weights", cls.weights))})


@dataclass
class Selection:
    """The chosen crop boxes (x1, y1, x2, y2, upright-image pixels, margin applied) and why.

    ``fallback`` is True when ``boxes`` is the full image because no detection qualified; ``reason``
    says why in words; ``candidates`` counts detections in, ``dropped`` counts them per reason.
    """

    width: int
    height: int
    boxes: list[list[float]]
    scores: list[float]
    fallback: bool
    reason: str
    candidates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in names})


def full_image(width: int, height: int, reason: str, candidates: int = 0, dropped: dict | None = None) -> Selection:
    """The fallback selection: the whole image as the one crop (score 0: nothing was detected there)."""
    return Selection(width, height, [[0.0, 0.0, float(width), float(height)]], [0.0], True, reason,
                     candidates, dict(dropped or {}))  # fmt: skip


def rank_values(boxes: np.ndarray, scores: np.ndarray, width: int, height: int, policy: BoxPolicy) -> np.ndarray:
    """The ranking key of each box under ``policy.rank_by`` (higher = better)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / float(width * height)
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    offset = np.hypot((centre_x - width / 2) / (width / 2), (centre_y - height / 2) / (height / 2))
    centrality = np.clip(1 - offset / np.sqrt(2), 0, 1)
    if policy.rank_by == "score":
        return scores
    if policy.rank_by == "area":
        return area
    if policy.rank_by == "centrality":
        return centrality
    if policy.rank_by == "score*area*centrality":
        return scores * area * centrality
    w_score, w_area, w_centre = policy.weights
    return w_score * scores + w_area * area + w_centre * centrality


def expand(box: np.ndarray, margin: float, width: int, height: int) -> list[float]:
    """``box`` grown by ``margin`` x its size on each side, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return [max(0.0, x1 - dx), max(0.0, y1 - dy), min(float(width), x2 + dx), min(float(height), y2 + dy)]


def select_boxes(boxes, scores, width: int, height: int, policy: BoxPolicy | None = None) -> Selection:
    """Apply ``policy`` (default :class:`BoxPolicy`) to one image's detections (``boxes`` N x 4, ``scores`` N)."""
    policy = policy or BoxPolicy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    candidates = len(boxes)
    if candidates:  # clip to the image first: detectors can overshoot the border
        boxes = boxes.copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    dropped: dict[str, int] = {}
    keep = scores >= policy.score_threshold
    if (~keep).any():
        dropped["below score threshold"] = int((~keep).sum())
    box_w, box_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    small = keep & ((box_w < policy.min_size_px) | (box_h < policy.min_size_px)
                    | (box_w * box_h < policy.min_area_fraction * width * height))  # fmt: skip
    if small.any():
        dropped["below min size"] = int(small.sum())
    keep &= ~small
    if not keep.any():
        if not candidates:
            reason = "no detection"
        elif dropped.get("below score threshold") == candidates:
            reason = f"no box above score threshold {policy.score_threshold}"
        else:
            reason = "no box above score threshold and min size"
        if policy.fallback_full_image:
            return full_image(width, height, reason, candidates, dropped)
        return Selection(width, height, [], [], False, reason, candidates, dropped)
    index = np.flatnonzero(keep)
    values = rank_values(boxes[index], scores[index], width, height, policy)
    order = index[np.argsort(-values, kind="stable")][: policy.max_crops]
    if len(index) > len(order):
        dropped["beyond max crops"] = len(index) - len(order)
    chosen = [expand(boxes[i], policy.margin, width, height) for i in order]
    reason = f"top {len(order)} of {len(index)} qualifying by {policy.rank_by}"
    return Selection(width, height, chosen, [float(scores[i]) for i in order], False, reason, candidates, dropped)


def crop(image: Image.Image, selection: Selection) -> list[Image.Image]:
    """The crops of ``selection`` from ``image`` (the upright image; a resized copy works too: boxes are scaled)."""
    sx, sy = image.width / selection.width, image.height / selection.height
    crops = []
    for x1, y1, x2, y2 in selection.boxes:
        box = (round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            raise ValueError(f"empty crop box {box} for a {image.width}x{image.height} image")
        crops.append(image.crop(box))
    return crops
