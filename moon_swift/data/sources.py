"""One entry point for every product source the commands accept (``--products`` + ``--format``)."""

from __future__ import annotations

from typing import Literal

from ..core.errors import MoonInputError
from .catalog_files import QueryPair, read_catalog, read_pairs
from .fashion_catalog import read_fashion_catalog
from .mbe import read_mbe
from .records import OnBadRow, ProductRecord
from .swift_rows import read_records

CatalogFormat = Literal["records", "generic", "mbe", "fashion"]
CATALOG_FORMATS: tuple[str, ...] = ("records", "generic", "mbe", "fashion")


def load_products(
    path: str,
    format: CatalogFormat = "records",
    *,
    pairs: str | None = None,
    on_bad_row: OnBadRow = "error",
    limit: int | None = None,
) -> tuple[list[ProductRecord], list[QueryPair]]:
    """(records, behaviour pairs) from a catalog in ``format`` plus an optional pairs file.

    ``records``: products JSONL from ``prepare-data``; ``generic``: catalog CSV/JSONL; ``mbe``: MBE
    JSON (its queries become the pairs); ``fashion``: a ``products.csv`` + ``images/`` directory.
    """
    if format not in CATALOG_FORMATS:
        raise MoonInputError(f"unknown catalog format {format!r}; use one of {', '.join(CATALOG_FORMATS)}", file=path)
    found_pairs: list[QueryPair] = []
    if format == "records":
        records = read_records(path)
    elif format == "fashion":
        records = read_fashion_catalog(path, on_bad_row=on_bad_row, limit=limit)
    elif format == "mbe":
        records, found_pairs = read_mbe(path, on_bad_row=on_bad_row)
    else:
        records = read_catalog(path, on_bad_row=on_bad_row)
    if limit is not None and format != "fashion":
        records = records[:limit]
        kept = {r.product_id for r in records}
        found_pairs = [p for p in found_pairs if p.product_id in kept]
    if pairs:
        found_pairs = read_pairs(pairs, records, on_bad_row=on_bad_row)
    if not records:
        raise MoonInputError("no products in the catalog", file=path)
    return records, found_pairs
