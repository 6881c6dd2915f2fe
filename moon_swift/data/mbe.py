"""Reader for the MBE (MM-Bench-E-Commerce) JSON layout: ``doc_*`` product fields, optional queries.

Fields seen in its test split: ``doc_title``, ``doc_image``, ``doc_industry_name``,
``doc_cate1_name``..``doc_cate4_name``, ``doc_attributes``. Missing category levels are skipped;
fields this reader does not know are counted and reported (they may carry data worth mapping).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..core.errors import MoonInputError
from ..core.rows import iter_rows
from .catalog_files import QueryPair, parse_attributes, split_list
from .records import BadRowLog, OnBadRow, ProductRecord, checked_record, logger

ID_FIELDS = ("doc_id", "item_id", "nid", "id")
CATEGORY_FIELDS = ("doc_industry_name", "doc_cate1_name", "doc_cate2_name", "doc_cate3_name", "doc_cate4_name")
QUERY_FIELDS = ("query", "query_text", "query_image")
KNOWN_FIELDS = {*ID_FIELDS, *CATEGORY_FIELDS, *QUERY_FIELDS, "doc_title", "doc_image", "doc_attributes"}


def _rows(path: Path):
    """A JSON array file, or JSONL."""
    if path.is_file() and path.suffix.lower() == ".json":
        text = path.read_text(encoding="utf-8").lstrip()
        if text.startswith("["):
            yield from enumerate(json.loads(text), start=1)
            return
    yield from iter_rows(path)


def read_mbe(
    path: str | Path, *, on_bad_row: OnBadRow = "error", check_images: bool = True
) -> tuple[list[ProductRecord], list[QueryPair]]:
    """Products (one per distinct id; rows repeating an id only add queries) and the rows' queries."""
    path = Path(path)
    log, records, pairs, seen, unknown, total = BadRowLog(on_bad_row), [], [], set(), Counter(), 0
    for number, row in _rows(path):
        total += 1
        unknown.update(key for key in row if key not in KNOWN_FIELDS)
        where = {"file": str(path), "row": number}
        product_id = next((str(row[f]).strip() for f in ID_FIELDS if str(row.get(f) or "").strip()), f"row{number}")
        if product_id not in seen:
            try:
                attributes = parse_attributes(row.get("doc_attributes"))
            except (ValueError, json.JSONDecodeError) as error:
                log.bad(MoonInputError(f"cannot parse ({error})", field="doc_attributes", **where), "bad attributes")
                continue
            images = [image if image.startswith(("http://", "https://")) else str((path.parent / image).resolve())
                      for image in split_list(row.get("doc_image"), ";")]  # fmt: skip
            record = checked_record(
                log,
                seen,
                where,
                product_id=product_id,
                title=str(row.get("doc_title") or "").strip(),
                images=images,
                category_path=[str(row[f]).strip() for f in CATEGORY_FIELDS if str(row.get(f) or "").strip()],
                attributes=attributes,
                check_images=check_images and not any(i.startswith("http") for i in images),
                fields=("doc_id", "doc_title", "doc_image"),
            )
            if record is None:
                continue
            records.append(record)
        text = str(row.get("query") or row.get("query_text") or "").strip() or None
        image = str(row.get("query_image") or "").strip() or None
        if text or image:
            pairs.append(QueryPair(product_id, text, image))
    logger.info(log.summary(total, str(path)))
    if unknown:
        fields = ", ".join(f"{name} ({count} rows)" for name, count in unknown.most_common())
        logger.info("%s: fields not read by the MBE reader: %s", path, fields)
    return records, pairs
