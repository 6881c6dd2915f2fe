"""Product records -> ms-swift embedding rows (``messages`` / ``positive_messages`` / ``*_images``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .records import ProductRecord


def product_messages(record: ProductRecord) -> list[dict[str, str]]:
    """The product side: every image of the product, as one user turn."""
    return [{"role": "user", "content": "<image>" * len(record.images)}]


def title_to_product_row(record: ProductRecord) -> dict[str, Any]:
    """Anchor = the title as a text query; positive = the product's images."""
    return {
        "messages": [{"role": "user", "content": record.title}],
        "positive_messages": [product_messages(record)],
        "positive_images": [list(record.images)],
    }


def title_to_product_rows(records: Iterable[ProductRecord]) -> Iterator[dict[str, Any]]:
    for record in records:
        yield title_to_product_row(record)


def is_held_out(product_id: str, fraction: float) -> bool:
    """Deterministic split by product id (stable across runs, machines and row order)."""
    digest = hashlib.sha1(product_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def split_records(records: list[ProductRecord], val_fraction: float) -> tuple[list[ProductRecord], list[ProductRecord]]:
    train = [r for r in records if not is_held_out(r.product_id, val_fraction)]
    val = [r for r in records if is_held_out(r.product_id, val_fraction)]
    return train, val


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_records(records: Iterable[ProductRecord], path: str | Path) -> int:
    """Product records as JSONL (the evaluation side reads them back with :func:`read_records`)."""
    return write_jsonl(({**vars(r)} for r in records), path)


def read_records(path: str | Path) -> list[ProductRecord]:
    with Path(path).open(encoding="utf-8") as file:
        return [ProductRecord(**json.loads(line)) for line in file if line.strip()]
