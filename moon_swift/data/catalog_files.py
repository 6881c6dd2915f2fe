"""Readers for the generic catalog + pairs format (CSV or JSONL; documented in the README).

catalog rows: ``product_id``, ``title``, ``images`` (JSON list or ``;``-separated, relative to
the file), ``category_path`` (JSON list or ``" > "``-separated), ``attributes`` (JSON object or
``"name: value; name: value"``), optional ``group_id``.
pairs rows (user behaviour): ``query_text`` and/or ``query_image``, and the ``product_id`` bought.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import MoonInputError
from ..core.images import image_problem
from ..core.rows import iter_rows
from .records import BadRowLog, OnBadRow, ProductRecord, checked_record, logger


@dataclass
class QueryPair:
    """One behaviour row: a text and/or image query and the product it led to."""

    product_id: str
    query_text: str | None = None
    query_image: str | None = None


def split_list(value: Any, separator: str) -> list[str]:
    """A JSON list (or list) of strings, or ``separator``-separated text."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        return split_list(json.loads(text), separator)
    return [part.strip() for part in text.split(separator) if part.strip()]


def parse_attributes(value: Any) -> dict[str, str]:
    """A JSON object, or ``"name: value; name: value"`` text."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k).strip(): str(v).strip() for k, v in value.items() if str(v).strip()}
    text = str(value).strip()
    if text.startswith("{"):
        return parse_attributes(json.loads(text))
    pairs = [part.split(":", 1) for part in text.split(";") if part.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"expected 'name: value; ...', got {text[:60]!r}")
    return {name.strip(): v.strip() for name, v in pairs if v.strip()}


def read_catalog(path: str | Path, *, on_bad_row: OnBadRow = "error", check_images: bool = True) -> list[ProductRecord]:
    """Products of a catalog file; bad rows raise (file, row, field) or are skipped and counted."""
    path = Path(path)
    log, records, seen, total = BadRowLog(on_bad_row), [], set(), 0
    for number, row in iter_rows(path):
        total += 1
        where = {"file": str(path), "row": number}
        try:
            images = [str((path.parent / image).resolve()) for image in split_list(row.get("images"), ";")]
            category_path = split_list(row.get("category_path"), " > ")
            attributes = parse_attributes(row.get("attributes"))
        except (ValueError, json.JSONDecodeError) as error:
            log.bad(MoonInputError(f"cannot parse ({error})", field="images/category_path/attributes", **where),
                    "unparsable field")  # fmt: skip
            continue
        record = checked_record(
            log,
            seen,
            where,
            product_id=str(row.get("product_id") or "").strip(),
            title=str(row.get("title") or "").strip(),
            images=images,
            category_path=category_path,
            attributes=attributes,
            group_id=str(row.get("group_id") or "").strip() or None,
            check_images=check_images,
        )
        if record is not None:
            records.append(record)
    logger.info(log.summary(total, str(path)))
    return records


def read_pairs(path: str | Path, catalog: list[ProductRecord], *, on_bad_row: OnBadRow = "error") -> list[QueryPair]:
    """Behaviour pairs whose product is in ``catalog``; a pair pointing elsewhere is a bad row."""
    path = Path(path)
    known = {record.product_id for record in catalog}
    log, pairs, total = BadRowLog(on_bad_row), [], 0
    for number, row in iter_rows(path):
        total += 1
        where = {"file": str(path), "row": number}
        product_id = str(row.get("product_id") or "").strip()
        text = str(row.get("query_text") or "").strip() or None
        image = str(row.get("query_image") or "").strip() or None
        if not text and not image:
            log.bad(MoonInputError("neither query_text nor query_image", field="query_text", **where), "empty query")
            continue
        if product_id not in known:
            log.bad(MoonInputError(f"product {product_id!r} is not in the catalog", field="product_id", **where),
                    "unknown product")  # fmt: skip
            continue
        if image:
            image = str((path.parent / image).resolve())
            problem = image_problem(image)
            if problem:
                log.bad(MoonInputError(f"{problem}: {image}", field="query_image", **where), "bad query image")
                continue
        pairs.append(QueryPair(product_id, text, image))
    logger.info(log.summary(total, str(path)))
    return pairs
