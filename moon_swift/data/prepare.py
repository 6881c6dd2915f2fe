"""``moon-swift prepare-data``: a catalog (+ behaviour pairs) -> swift embedding rows and a held-out split.

The split is by product id (:func:`~moon_swift.data.swift_rows.is_held_out`), so no held-out product,
and no query of a held-out product, is ever trained on. Behaviour pairs become rows of their own query
kind (text, photo, or photo + text -> the full product); without pairs, rows are built from the catalog
itself (``title``, ``image``, ``category`` pair kinds).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .catalog_files import QueryPair
from .negatives import category_negatives, check_mining_search, mined_negatives
from .records import ProductRecord
from .swift_rows import (
    behaviour_rows,
    catalog_rows,
    is_held_out,
    query_kind,
    split_records,
    write_jsonl,
    write_records,
)


class ProductEmbedder(Protocol):
    """What mining hard negatives needs of a model (``moon_swift.eval.encode.ProductEncoder`` is one)."""

    def encode_products(self, records: Sequence[ProductRecord], **kwargs: Any) -> np.ndarray: ...


logger = logging.getLogger("moon_swift.data")


@dataclass
class PrepareReport:
    """What :func:`prepare_data` wrote, in counts (``moon-swift prepare-data`` prints it)."""

    out: Path
    products: int
    pairs: int
    train_rows: int
    rows_kind: str
    train_products: int
    held_out_products: int
    val_fraction: float
    held_out_pairs: int = 0
    query_kinds: dict[str, int] = field(default_factory=dict)
    hard_negatives: list[int] | None = None
    negatives_how: str = ""

    def lines(self) -> list[str]:
        lines = []
        if self.hard_negatives is not None:
            counts = self.hard_negatives
            lines.append(f"  hard negatives ({self.negatives_how}): {sum(counts)} in all, "
                         f"{min(counts, default=0)}..{max(counts, default=0)} per product")  # fmt: skip
        kinds = ", ".join(f"{kind}: {count}" for kind, count in self.query_kinds.items())
        lines.append(f"  {self.out / 'train.jsonl'}: {self.train_rows} {self.rows_kind} (swift embedding format)"
                     + (f"; queries {kinds}" if kinds else ""))  # fmt: skip
        lines.append(f"  {self.out / 'val_products.jsonl'}: {self.held_out_products} held-out products "
                     f"(val fraction {self.val_fraction})")  # fmt: skip
        if self.pairs:
            lines.append(f"  {self.out / 'val_pairs.jsonl'}: {self.held_out_pairs} held-out behaviour pairs")
        return lines


def limit_catalog(records: list[ProductRecord], pairs: list[QueryPair], limit: int | None):
    """The first ``limit`` products and the pairs that lead to them; logs how many pairs were left out."""
    if not limit or len(records) <= limit:
        return records, pairs
    records = records[:limit]
    kept = {record.product_id for record in records}
    chosen = [pair for pair in pairs if pair.product_id in kept]
    if len(chosen) < len(pairs):
        logger.warning("--limit %d: left out %d behaviour pairs of products beyond the limit", limit,
                       len(pairs) - len(chosen))  # fmt: skip
    return records, chosen


def prepare_data(
    records: list[ProductRecord],
    pairs: Sequence[QueryPair],
    out: str | Path,
    *,
    catalog_pairs: Sequence[str] = ("title",),
    val_fraction: float = 0.1,
    hard_negatives: int = 0,
    seed: int = 0,
    mine_with: ProductEmbedder | None = None,
    mine_search: str = "exact",
) -> PrepareReport:
    """Write ``train.jsonl`` (+ ``train_products.jsonl``, ``val_products.jsonl``, and ``val_pairs.jsonl``
    with pairs) into ``out``. ``mine_with``: hard negatives are that model's nearest other products
    instead of same-category draws, found by ``mine_search`` (``exact``, ``ivf`` or ``hnsw``, see
    :func:`~moon_swift.data.negatives.mined_negatives`)."""
    out = Path(out)
    train, val = split_records(records, val_fraction)
    negatives = None
    if hard_negatives:
        if mine_with is not None:
            check_mining_search(mine_search)  # a wrong choice stops before the encoding
            embeddings = mine_with.encode_products(train, desc="mining negatives")
            negatives = mined_negatives(train, embeddings, hard_negatives, search=mine_search)
        else:
            negatives = category_negatives(train, hard_negatives, seed=seed)
    report = PrepareReport(out, len(records), len(pairs), 0, "", len(train), len(val), val_fraction)
    if negatives is not None:
        report.hard_negatives = [len(n) for n in negatives]
        mined = f"mined ({mine_search} search)"
        report.negatives_how = mined if mine_with is not None else "same category, then parent category"
    if pairs:
        by_id = {r.product_id: r for r in records}
        by_train_id = dict(zip([r.product_id for r in train], negatives, strict=True)) if negatives else None
        train_pairs = [p for p in pairs if not is_held_out(p.product_id, val_fraction)]
        val_pairs = [p for p in pairs if is_held_out(p.product_id, val_fraction)]
        report.train_rows = write_jsonl(behaviour_rows(train_pairs, by_id, by_train_id), out / "train.jsonl")
        write_jsonl(({**vars(p)} for p in val_pairs), out / "val_pairs.jsonl")
        report.held_out_pairs = len(val_pairs)
        report.rows_kind = "behaviour (query -> product) rows"
        for pair in train_pairs:
            kind = query_kind(pair.query_text, pair.query_image)
            report.query_kinds[kind] = report.query_kinds.get(kind, 0) + 1
    else:
        report.train_rows = write_jsonl(catalog_rows(train, catalog_pairs, negatives), out / "train.jsonl")
        report.rows_kind = f"catalog pair rows ({', '.join(catalog_pairs)} -> product)"
    write_records(train, out / "train_products.jsonl")
    write_records(val, out / "val_products.jsonl")
    return report
