"""Every image path a dataset names: swift embedding JSONL, products JSONL, a catalog CSV, or a directory."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import MoonInputError
from ..core.rows import iter_rows

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: swift embedding rows keep images here (lists, or lists of lists for positives/negatives); products JSONL in
#: "images"; behaviour pairs (``val_pairs.jsonl``, ``photo-queries``) in "query_image"
IMAGE_FIELDS = ("images", "positive_images", "negative_images", "image", "query_image")


def _flatten(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict) and isinstance(value.get("path"), str):  # swift's {"path": ..., "bytes": ...}
        yield value["path"]
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _flatten(item)


def _resolve(image: str, base: Path) -> str:
    """As written when it exists from the working directory (swift's rule), else relative to the data file."""
    if Path(image).is_absolute() or Path(image).exists():
        return image
    beside = base / image
    return str(beside) if beside.exists() else image


def jsonl_images(path: Path) -> Iterator[str]:
    for _, row in iter_rows(path):
        for key in IMAGE_FIELDS:
            for image in _flatten(row.get(key)):
                yield _resolve(image, path.parent)


def csv_images(path: Path) -> Iterator[str]:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        column = next((name for name in ("image", "images", "image_path") if name in (reader.fieldnames or [])), None)
        if column is None:
            raise MoonInputError("no 'image' column", file=str(path))
        for row in reader:
            if row.get(column):
                yield _resolve(row[column], path.parent)


def dataset_images(sources: list[str | Path]) -> list[str]:
    """Image paths named by each source, in order, each path once (equal content is the store's job)."""
    seen: dict[str, None] = {}
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif not source.is_file():
            raise MoonInputError("dataset not found", file=str(source))
        elif source.suffix.lower() in (".jsonl", ".json"):
            found = list(jsonl_images(source))
        elif source.suffix.lower() == ".csv":
            found = list(csv_images(source))
        else:
            raise MoonInputError("expected a .jsonl/.csv file or an image directory", file=str(source))
        seen.update(dict.fromkeys(found))
    if not seen:
        raise MoonInputError(f"no images in {', '.join(map(str, sources))}")
    return list(seen)
