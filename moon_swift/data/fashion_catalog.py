"""Reader for the fashion catalog layout (``products.csv`` + ``images/``, Kaggle "Fashion Product Images")."""

from __future__ import annotations

import csv
from pathlib import Path

from ..core.errors import MoonInputError
from .records import BadRowLog, OnBadRow, ProductRecord, checked_record, logger

REQUIRED_COLUMNS = ("id", "image", "masterCategory", "subCategory", "articleType", "productDisplayName")
CATEGORY_COLUMNS = ("masterCategory", "subCategory", "articleType")
ATTRIBUTE_COLUMNS = ("gender", "baseColour", "season", "usage", "year")


def read_fashion_catalog(
    catalog_dir: str | Path, *, on_bad_row: OnBadRow = "error", limit: int | None = None
) -> list[ProductRecord]:
    """Read ``catalog_dir/products.csv``; rows are numbered as in the file (header = row 1).

    A row with a missing or unreadable image, an empty title or a duplicate id raises
    :class:`MoonInputError` naming file, row and field, or is skipped and counted with
    ``on_bad_row="skip"``.
    """
    catalog_dir = Path(catalog_dir)
    csv_path = catalog_dir / "products.csv"
    if not csv_path.is_file():
        raise MoonInputError("catalog file not found (expected products.csv + images/)", file=str(csv_path))
    log = BadRowLog(on_bad_row)
    records: list[ProductRecord] = []
    seen: set[str] = set()
    total = 0
    with csv_path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise MoonInputError(f"missing columns {missing}", file=str(csv_path), row=1)
        for row_number, row in enumerate(reader, start=2):
            if limit is not None and len(records) >= limit:
                break
            total += 1
            record = _record(row, row_number, csv_path, catalog_dir, seen, log)
            if record is not None:
                records.append(record)
    logger.info(log.summary(total, str(csv_path)))
    return records


def _record(
    row: dict[str, str], row_number: int, csv_path: Path, catalog_dir: Path, seen: set[str], log: BadRowLog
) -> ProductRecord | None:
    image = (row.get("image") or "").strip()
    return checked_record(
        log,
        seen,
        {"file": str(csv_path), "row": row_number},
        product_id=(row.get("id") or "").strip(),
        title=(row.get("productDisplayName") or "").strip(),
        images=[str((catalog_dir / image).resolve())] if image else [],
        category_path=[row[c].strip() for c in CATEGORY_COLUMNS if (row.get(c) or "").strip()],
        attributes={c: row[c].strip() for c in ATTRIBUTE_COLUMNS if (row.get(c) or "").strip()},
        fields=("id", "productDisplayName", "image"),
    )
