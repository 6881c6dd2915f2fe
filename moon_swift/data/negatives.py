"""Hard negatives for each training pair: same-category products, or model-mined nearest neighbours."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from ..core.vector_search import (
    IVF_LIST_SIZE,
    SelfSearchIVF,
    build_index,
    gathered_inner_products,
    set_search_depth,
)
from .records import ProductRecord, logger


def group_of(record: ProductRecord) -> str:
    return record.group_id or record.product_id


def category_negatives(records: Sequence[ProductRecord], k: int, seed: int = 0) -> list[list[ProductRecord]]:
    """For each record, up to ``k`` products of its leaf category, topped up from the parent level.

    Never the product itself or another product of its group. Draws depend only on ``seed``, the product id
    and the catalog (each category's products in id order), not on row order, so a rerun or a re-sorted
    catalog gives the same negatives. Each record costs O(k) expected (random picks from its category, not a
    shuffle of it), so a million-product catalog takes time linear in its size, unless a category holds fewer
    than about ``k`` products outside a record's group: such records scan their category. Rows that find fewer
    than ``k`` are kept with what there is and counted in the log.
    """
    if k <= 0:
        return [[] for _ in records]
    by_path: dict[tuple[str, ...], list[ProductRecord]] = defaultdict(list)
    for record in records:
        for depth in range(1, len(record.category_path) + 1):
            by_path[tuple(record.category_path[:depth])].append(record)
    for pool in by_path.values():
        pool.sort(key=lambda r: r.product_id)
    result, short = [], 0
    for record in records:
        rng = random.Random(f"{seed}:{record.product_id}")
        chosen: list[ProductRecord] = []
        taken = {group_of(record)}
        path = tuple(record.category_path)
        for depth in range(len(path), 0, -1):  # leaf first, then the parent levels
            _draw_into(chosen, by_path[path[:depth]], k, taken, rng)
            if len(chosen) == k:
                break
        short += len(chosen) < k
        result.append(chosen)
    if short:
        logger.info("hard negatives: %d of %d products found fewer than %d same-category negatives", short,
                    len(records), k)  # fmt: skip
    return result


def _draw_into(chosen: list[ProductRecord], pool: list[ProductRecord], k: int, taken: set[str],
               rng: random.Random) -> None:  # fmt: skip
    """Add distinct members of ``pool`` whose group is not ``taken`` to ``chosen`` until it holds ``k``.

    Random picks without replacement; where they keep missing (a small pool, or one mostly of taken groups)
    the members not tried yet are scanned in random order, so every eligible member can be found."""
    need = k - len(chosen)
    tried: set[int] = set()
    if len(pool) > 4 * need:
        for _ in range(4 * need + 16):
            index = rng.randrange(len(pool))
            if index in tried:
                continue
            tried.add(index)
            if _take(pool[index], chosen, taken) and len(chosen) == k:
                return
    rest = [index for index in range(len(pool)) if index not in tried]
    rng.shuffle(rest)
    for index in rest:
        if _take(pool[index], chosen, taken) and len(chosen) == k:
            return


def _take(candidate: ProductRecord, chosen: list[ProductRecord], taken: set[str]) -> bool:
    group = group_of(candidate)
    if group in taken:
        return False
    chosen.append(candidate)
    taken.add(group)
    return True


MINING_SEARCHES = ("exact", "ivf", "hnsw")
#: HNSW search depth for mining (at least twice the depth asked)
MINING_EF_SEARCH = 128
#: IVF mining: lists probed per product, and candidates re-ranked exactly per hit wanted (8-bit codes rank them)
MINING_NPROBE, MINING_RERANK = 32, 2
#: IVF mining scans at most this many codes per product (faiss ``max_codes``, a random sample of the last list it
#: reaches: ``SelfSearchIVF``): what ``MINING_NPROBE`` lists of the mean size hold. Dense clusters fill a few large
#: lists that their own products then scan, so without it the work per product grows with the catalog (1.75x the
#: codes at 1M than at 100k products in ``benchmarks/catalog_scale.py``); there, the negatives found with it are
#: as similar to the product as the exact ones, to within 0.001 of mean similarity (README)
MINING_MAX_CODES = MINING_NPROBE * IVF_LIST_SIZE


def check_mining_search(how: str) -> str:
    """``how`` if it is one of :data:`MINING_SEARCHES` (checked before any embedding is computed)."""
    if how not in MINING_SEARCHES:
        raise ValueError(f"mining search must be one of {MINING_SEARCHES}, got {how!r}")
    return how


def _nearest(vectors: np.ndarray, how: str) -> Callable[[slice | np.ndarray, int], np.ndarray]:
    """``search(rows, depth) -> ids`` (best first, -1 = none): the nearest of ``vectors`` to ``vectors[rows]``
    by inner product, with faiss's exact ``knn`` (searches ``vectors`` in place, no index copy), an HNSW graph
    (a second copy of the vectors plus the graph), or an IVF of 8-bit codes (a quarter of the vectors' memory)
    whose candidates are re-ranked exactly against ``vectors``, at most :data:`MINING_MAX_CODES` codes
    scanned per query; indexes from :mod:`moon_swift.core.vector_search`."""
    import faiss

    if how == "exact":
        return lambda rows, depth: faiss.knn(vectors[rows], vectors, depth, metric=faiss.METRIC_INNER_PRODUCT)[1]
    if how == "hnsw":
        index = build_index(vectors, "hnsw")

        def graph_search(rows: slice | np.ndarray, depth: int) -> np.ndarray:
            set_search_depth(index, ef_search=max(MINING_EF_SEARCH, 2 * depth))
            return index.search(vectors[rows], depth)[1]

        return graph_search
    ivf = SelfSearchIVF(vectors, nprobe=MINING_NPROBE, coarse="hnsw", storage="sq8", max_codes=MINING_MAX_CODES)

    def list_search(rows: slice | np.ndarray, depth: int) -> np.ndarray:
        candidates = ivf.search(rows, min(len(vectors), MINING_RERANK * depth))
        scores = gathered_inner_products(vectors[rows], vectors, candidates)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
        return np.take_along_axis(candidates, order, axis=1)

    return list_search


def mined_negatives(
    records: Sequence[ProductRecord], embeddings: np.ndarray, k: int, *, chunk: int = 4096, search: str = "exact"
) -> list[list[ProductRecord]]:
    """For each record, the ``k`` most similar other-group products by inner product of ``embeddings``.

    ``search``: ``exact`` (faiss top-k: O(N^2) work, the default), ``ivf`` (approximate: the codes scanned per
    product bounded by :data:`MINING_MAX_CODES`, so the work per product grows only with the walk over the
    lists' centroids; the index a quarter of the embeddings' memory) or ``hnsw`` (approximate; slower than exact
    at 100k products on random embeddings). ``benchmarks/catalog_scale.py`` measures each, the share of the
    exact negatives the approximate ones find and how similar theirs are. ``chunk`` queries at a time: memory is
    the embeddings (plus the index) and ``chunk x depth`` results, not ``chunk x products`` scores.
    ``depth`` leaves room for the record's own group (which can hold the nearest hits); rows whose group took
    more are searched again, exactly and as deep as their group needs, in batches of at most ``chunk x depth``
    results."""
    if len(records) != len(embeddings):
        raise ValueError(f"{len(records)} records but {len(embeddings)} embeddings")
    if not records or k <= 0:
        return [[] for _ in records]
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    nearest = _nearest(vectors, check_mining_search(search))
    _, groups = np.unique(np.array([group_of(r) for r in records], dtype=object), return_inverse=True)
    group_sizes = np.bincount(groups)
    depth = min(len(records), k + min(int(group_sizes.max()), 64))
    picked: list[list[int]] = []
    for start in range(0, len(records), chunk):
        found = nearest(slice(start, start + chunk), depth)
        picked += [_other_group(hits, groups, row, k) for row, hits in enumerate(found, start=start)]
    # rows whose own group filled the first `depth` hits (or an approximate search came back short): searched
    # again exactly, as deep as their group needs, largest groups first so each batch's depth is its first row's
    short = sorted((row for row, hits in enumerate(picked) if len(hits) < k and depth < len(records)),
                   key=lambda row: -group_sizes[groups[row]])  # fmt: skip
    budget = chunk * depth  # result entries per search, as above
    exact = _nearest(vectors, "exact") if search != "exact" else nearest
    while short:
        deeper = min(len(records), k + int(group_sizes[groups[short[0]]]))
        size = max(1, budget // deeper)
        rows, short = short[:size], short[size:]
        for row, hits in zip(rows, exact(np.array(rows), deeper), strict=True):
            picked[row] = _other_group(hits, groups, row, k)
    return [[records[i] for i in hits] for hits in picked]


def _other_group(hits: np.ndarray, groups: np.ndarray, row: int, k: int) -> list[int]:
    """The first ``k`` of ``hits`` (faiss ids, best first; -1 = none) outside ``row``'s group."""
    hits = hits[hits >= 0]
    return hits[groups[hits] != groups[row]][:k].tolist()
