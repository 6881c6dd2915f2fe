"""Hard negatives for each training pair: same-category products, or model-mined nearest neighbours."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .records import ProductRecord, logger


def group_of(record: ProductRecord) -> str:
    return record.group_id or record.product_id


def category_negatives(records: Sequence[ProductRecord], k: int, seed: int = 0) -> list[list[ProductRecord]]:
    """For each record, up to ``k`` products of its leaf category, topped up from the parent level.

    Never the product itself or another product of its group. Draws depend only on ``seed`` and
    the product id (not on row order), so a rerun or a re-sorted catalog gives the same negatives.
    Rows that find fewer than ``k`` are kept with what there is and counted in the log.
    """
    by_path: dict[tuple[str, ...], list[ProductRecord]] = defaultdict(list)
    for record in records:
        for depth in range(1, len(record.category_path) + 1):
            by_path[tuple(record.category_path[:depth])].append(record)
    result, short = [], 0
    for record in records:
        rng = random.Random(f"{seed}:{record.product_id}")
        chosen: list[ProductRecord] = []
        taken = {group_of(record)}
        path = tuple(record.category_path)
        for depth in range(len(path), 0, -1):  # leaf first, then the parent levels
            pool = sorted((r for r in by_path[path[:depth]] if group_of(r) not in taken), key=lambda r: r.product_id)
            rng.shuffle(pool)
            for candidate in pool[: k - len(chosen)]:
                chosen.append(candidate)
                taken.add(group_of(candidate))
            if len(chosen) == k:
                break
        short += len(chosen) < k
        result.append(chosen)
    if short:
        logger.info("hard negatives: %d of %d products found fewer than %d same-category negatives", short,
                    len(records), k)  # fmt: skip
    return result


def mined_negatives(
    records: Sequence[ProductRecord], embeddings: np.ndarray, k: int, *, chunk: int = 4096
) -> list[list[ProductRecord]]:
    """For each record, the ``k`` most similar other-group products by inner product of ``embeddings``."""
    if len(records) != len(embeddings):
        raise ValueError(f"{len(records)} records but {len(embeddings)} embeddings")
    groups = np.array([group_of(r) for r in records])
    result = []
    for start in range(0, len(records), chunk):
        scores = embeddings[start : start + chunk] @ embeddings.T
        same = groups[start : start + chunk, None] == groups[None, :]
        scores[same] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :k]
        for row, indices in enumerate(top):
            result.append([records[i] for i in indices if np.isfinite(scores[row, i])])
    return result
