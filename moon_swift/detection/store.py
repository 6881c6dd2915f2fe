"""Detect once, look up forever: boxes for a whole dataset in a JSONL keyed by each image's content hash.

Keying by sha256 of the file bytes means a renamed or duplicated image is detected once, and a rerun
over a grown dataset only detects the new images (their lines are appended). A stored result is reused
only when it came from the same detector (config + weights fingerprint) and the same box policy; otherwise
the image is detected again and the newer line wins.

Bad images are never dropped silently: unreadable ones (missing, 0-byte, truncated, garbage, decompression
bomb) raise by default or are skipped and counted with ``on_bad_image="skip"``; images smaller than
``min_image_side`` px are not run through the detector but stored as a full-image fallback with that reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from ..core.errors import MoonInputError
from ..core.images import load_image
from ..core.rows import iter_rows
from .box_index import write_box_index
from .selection import BoxPolicy, Selection, full_image, select_boxes

logger = logging.getLogger("moon_swift.detection")

OnBadImage = Literal["error", "skip"]


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BoxStore:
    """The results of :func:`detect_images`, by content hash; :meth:`lookup` takes a path or the bytes.

    Hashing a path is cached by (path, size, mtime), so repeated lookups of the same files cost a stat.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict[str, Any]] = {}
        self._hashes: dict[str, tuple[int, int, str]] = {}
        if self.path and self.path.exists():
            self._read(self.path)

    def _read(self, path: Path) -> None:
        for row, entry in iter_rows(path):  # bad JSON: an error naming the file and row
            if not isinstance(entry.get("sha256"), str):
                raise MoonInputError("not a box store line (no 'sha256')", file=str(path), row=row)
            self.entries[entry["sha256"]] = entry  # later lines win (a newer detector or policy)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self.entries

    def hash_of(self, path: str | Path) -> str:
        """sha256 of the file's bytes (cached while its size and mtime do not change)."""
        key = os.path.abspath(path)
        try:
            stat = os.stat(key)
        except FileNotFoundError as error:
            raise MoonInputError("image file does not exist", file=str(path), field="image") from error
        cached = self._hashes.get(key)
        if cached and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        digest = hashlib.sha256()
        with open(key, "rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
        self._hashes[key] = (stat.st_size, stat.st_mtime_ns, digest.hexdigest())
        return digest.hexdigest()

    def entry(self, image: str | Path | bytes) -> dict[str, Any] | None:
        """The stored line for this image (by content), or None."""
        sha = bytes_sha256(image) if isinstance(image, bytes) else self.hash_of(image)
        return self.entries.get(sha)

    def lookup(self, image: str | Path | bytes) -> Selection | None:
        """The stored :class:`Selection` for an image path or its bytes, or None if it was never detected."""
        entry = self.entry(image)
        return None if entry is None else Selection.from_dict(entry)

    def lookup_sha256(self, sha256: str) -> Selection | None:
        """The stored :class:`Selection` for an image's content hash (the image already read), or None."""
        entry = self.entries.get(sha256)
        return None if entry is None else Selection.from_dict(entry)

    def detector_fingerprints(self) -> set[str]:
        """The fingerprints of the detectors whose results the store holds (its effective lines)."""
        return {str(e.get("detector", {}).get("fingerprint")) for e in self.entries.values() if e.get("detector")}

    def first_entry(self) -> dict[str, Any] | None:
        """Any stored line (they share detector and policy in a store written by one ``moon-swift detect``)."""
        return next(iter(self.entries.values()), None)

    def add(self, entry: dict[str, Any]) -> None:
        self.entries[entry["sha256"]] = entry


@dataclass
class DetectReport:
    """What :func:`detect_images` did, image by image, in counts."""

    out: Path
    images: int = 0  # paths given
    detected: int = 0  # images run through the detector
    cache_hits: int = 0  # already in the store (same detector and policy)
    duplicates: int = 0  # same bytes as an earlier path of this run
    fallbacks: int = 0  # full image used (among newly stored results)
    tiny: int = 0  # below min_image_side: full-image fallback without detection
    bad: Counter = field(default_factory=Counter)  # skipped unreadable images, per reason
    bad_examples: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(self.bad.values())

    def summary(self) -> str:
        bad = ", ".join(f"{reason}: {count}" for reason, count in self.bad.most_common())
        lines = [
            f"{self.images} images: {self.detected} detected, {self.cache_hits} cache hits, "
            f"{self.duplicates} duplicates of an earlier file, {self.tiny} too small (full image)",
            f"  fallbacks to the full image: {self.fallbacks} of the newly stored results",
            f"  bad images skipped: {self.skipped}" + (f" ({bad}); e.g. {self.bad_examples[0]}" if bad else ""),
            f"  boxes: {self.out}",
        ]
        return "\n".join(lines)


def detect_images(
    detector,
    image_paths: Iterable[str | Path],
    policy: BoxPolicy | None = None,
    out_jsonl: str | Path = "boxes.jsonl",
    batch_size: int = 8,
    progress: bool = True,
    *,
    on_bad_image: OnBadImage = "error",
    min_image_side: int = 32,
) -> DetectReport:
    """Detect the boxes of every image not yet in ``out_jsonl`` (by content), appending one line per image.

    ``detector`` is a :class:`~moon_swift.detection.backend.Detector` (anything with ``detect_rgb`` and
    ``describe``). Lines are written batch by batch, so an interrupted run keeps what it finished.
    """
    from tqdm.auto import tqdm

    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    policy = policy or BoxPolicy()
    out = Path(out_jsonl)
    store = BoxStore(out)
    report = DetectReport(out=out)
    described, policy_dict = detector.describe(), policy.to_dict()

    def bad(error: MoonInputError, reason: str) -> None:
        if on_bad_image == "error":
            raise error
        report.bad[reason] += 1
        if len(report.bad_examples) < 5:
            report.bad_examples.append(str(error))

    queue: list[tuple[str, str]] = []  # (sha256, path) to detect, first path seen per content
    queued: set[str] = set()
    for path in image_paths:
        report.images += 1
        path = str(path)
        try:
            sha = store.hash_of(path)
        except MoonInputError as error:
            bad(error, "missing file")
            continue
        known = store.entries.get(sha)
        if (
            known
            and known.get("detector", {}).get("fingerprint") == described["fingerprint"]
            and (known.get("policy") == policy_dict)
        ):
            report.cache_hits += 1
        elif sha in queued:
            report.duplicates += 1
        else:
            queued.add(sha)
            queue.append((sha, path))

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as file, tqdm(total=len(queue), desc="detecting", disable=not progress) as bar:
        for start in range(0, len(queue), batch_size):
            batch = queue[start : start + batch_size]
            decoded: list[tuple[str, str, Image.Image]] = []
            lines = []
            for sha, path in batch:
                try:
                    image = load_image(path)
                except MoonInputError as error:
                    bad(error, error.reason.split(" (")[0])
                    continue
                if min(image.size) < min_image_side:
                    report.tiny += 1
                    reason = f"image smaller than {min_image_side} px ({image.width}x{image.height}): not detected"
                    lines.append(_line(sha, path, full_image(image.width, image.height, reason), described, policy))
                else:
                    decoded.append((sha, path, image))
            detections = detector.detect_rgb([image for _, _, image in decoded])
            report.detected += len(decoded)
            for (sha, path, image), found in zip(decoded, detections, strict=True):
                selection = select_boxes(found.boxes, found.scores, image.width, image.height, policy)
                lines.append(_line(sha, path, selection, described, policy))
            for line in lines:
                report.fallbacks += bool(line["fallback"])
                store.add(line)
                file.write(json.dumps(line) + "\n")
            file.flush()
            bar.update(len(batch))
    write_box_index(out)  # what training and serving read: built once here, not parsed by every process
    logger.info(report.summary())
    return report


def _line(sha: str, path: str, selection: Selection, detector: dict, policy: BoxPolicy) -> dict[str, Any]:
    return {"sha256": sha, "image": path, **selection.to_dict(), "detector": detector, "policy": policy.to_dict()}
