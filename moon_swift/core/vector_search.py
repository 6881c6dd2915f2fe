"""The one place faiss indexes are built, so evaluation (``eval.index``) and mining (``data.negatives``) search
with the same measured parameters (``benchmarks/ann_search.py``) instead of two copies drifting apart.

Inner product over L2-normalised vectors throughout. Kinds:

- ``flat``: exact (``IndexFlatIP``);
- ``hnsw``: an HNSW graph over the vectors (``IndexHNSWFlat``);
- ``ivf``: an inverted file. ``coarse="flat"`` (for serving): :data:`IVF_LISTS_PER_SQRT` x sqrt(N) lists
  found by an exact search over the centroids; ``coarse="hnsw"`` (for mining, where every product is a
  query): a list per :data:`IVF_LIST_SIZE` vectors found by an HNSW graph over the centroids, so the work per
  query (``nprobe`` lists of a constant mean size plus a graph walk) stays about constant as the catalog grows
  while the lists stay about equal (dense clusters make them unequal: mining also caps the codes scanned,
  ``data.negatives.MINING_MAX_CODES``).
  ``storage="sq8"`` keeps 8-bit codes (a quarter of the vectors' memory) for callers that re-rank with the
  vectors they already hold; ``refine_factor=F`` makes the index re-rank itself: it keeps a float copy too
  (``IndexRefineFlat``) and orders the codes' best ``F x k`` by the exact inner product. Scanning 8-bit codes
  is faster than scanning floats, and the re-ranking gives back the recall the codes lose: at 1M products
  this reached recall@10 0.958 at 32x flat where ``IndexIVFFlat`` reached it at 18-21x (README).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import MoonInputError

Kind = Literal["flat", "hnsw", "ivf"]
KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")
#: HNSW graph degree, construction depth (faiss's default) and search depth (HNSW index and IVF quantizer)
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 40, 64
#: inverted lists: this many times sqrt(N) with the exact coarse search; with the HNSW one, a list per this many
IVF_LISTS_PER_SQRT, IVF_LIST_SIZE = 4, 100
#: inverted lists searched per query, and the search depth of the HNSW graph over the lists (at least nprobe)
IVF_NPROBE, IVF_QUANTIZER_EF = 16, 32
#: k-means sample: this many vectors per list, at most IVF_TRAIN_MAX in all (so training time stops growing with
#: N where the lists follow N), and iterations (faiss's defaults, 256 per list and 25, take minutes at 1M)
IVF_TRAIN_PER_LIST, IVF_TRAIN_MAX, IVF_TRAIN_ITERATIONS = 32, 2**17, 10
#: candidates re-ranked exactly per result wanted (``refine_factor``): 4 found no more of the true top 10 than 2
IVF_REFINE_FACTOR = 2


Coarse = Literal["flat", "hnsw"]


def ivf_lists(count: int, coarse: Coarse = "flat") -> int:
    """The number of inverted lists for ``count`` vectors (at least one, at most one per 39 vectors)."""
    wanted = round(IVF_LISTS_PER_SQRT * count**0.5) if coarse == "flat" else count // IVF_LIST_SIZE
    return max(1, min(wanted, count // 39))


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise MoonInputError(f"must be a positive integer, got {value!r}", field=name)
    return int(value)


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise MoonInputError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}", field="kind")
    return kind


def build_index(
    vectors: np.ndarray,
    kind: Kind,
    *,
    hnsw_m: int = HNSW_M,
    ef_search: int = HNSW_EF_SEARCH,
    nlist: int | None = None,
    nprobe: int = IVF_NPROBE,
    quantizer_ef: int = IVF_QUANTIZER_EF,
    coarse: Coarse = "flat",
    storage: Literal["flat", "sq8"] = "flat",
    refine_factor: int = 0,
    add: bool = True,
):
    """A faiss index of ``kind`` holding ``vectors`` (row numbers are the ids), its search depth set.

    ``nlist`` defaults to :func:`ivf_lists`; ``coarse``, ``storage`` and ``refine_factor`` (0: no exact
    re-ranking) apply to ``ivf`` only. ``add=False``: trained on ``vectors`` but empty (:class:`SelfSearchIVF`
    adds them itself)."""
    import faiss

    check_kind(kind)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        raise MoonInputError(f"need a non-empty 2-D array of vectors, got shape {vectors.shape}", field="vectors")
    count, dim = vectors.shape
    hnsw_m, ef_search, nprobe = (_positive(name, value) for name, value in
                                 (("hnsw_m", hnsw_m), ("ef_search", ef_search), ("nprobe", nprobe)))  # fmt: skip
    if isinstance(refine_factor, bool) or not isinstance(refine_factor, int | np.integer) or refine_factor < 0:
        raise MoonInputError(f"must be 0 (off) or a positive integer, got {refine_factor!r}", field="refine_factor")
    if storage not in ("flat", "sq8"):
        raise MoonInputError(f"storage must be flat or sq8, got {storage!r}", field="storage")
    if coarse not in ("flat", "hnsw"):
        raise MoonInputError(f"coarse search must be flat or hnsw, got {coarse!r}", field="coarse")
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        nlist = ivf_lists(count, coarse) if nlist is None else _positive("nlist", nlist)
        if nlist > count:
            raise MoonInputError(f"{nlist} lists for {count} vectors: at most one list per vector", field="nlist")
        if coarse == "hnsw":
            quantizer = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            quantizer.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            quantizer = faiss.IndexFlatIP(dim)
        if storage == "sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # inner product: centroids on the sphere
        index.cp.niter = IVF_TRAIN_ITERATIONS
        index.cp.max_points_per_centroid = IVF_TRAIN_PER_LIST
        index.cp.min_points_per_centroid = 1
        index.train(_training_sample(vectors, nlist))
        if refine_factor:
            index = _refined(index, int(refine_factor))
    if add:
        index.add(vectors)
    set_search_depth(index, ef_search=ef_search, nprobe=nprobe, quantizer_ef=quantizer_ef)
    return index


class SelfSearchIVF:
    """An IVF over ``vectors`` whose queries are its own rows (mining: every product asks for its neighbours).

    ``index.add`` then ``index.search`` walk the coarse quantizer twice per vector: once for the list it is
    stored in, once for the lists its search scans. Here one walk gives both (the nearest of its ``nprobe``
    lists stores it), and the lists are kept between the two (``nprobe`` int32 per vector: 128 MB at 1M with 32
    probes). Options as :func:`build_index` (``kind="ivf"``); ``max_codes`` > 0 ends a search's scan at that
    many codes (faiss ``max_codes``), inside the last list it reaches: that list gives only the entries stored
    first, so the vectors are stored in a shuffled order (``seed``), and the ones a cut list gives are a random
    sample of it, not the catalog's first rows."""

    def __init__(self, vectors: np.ndarray, *, max_codes: int = 0, seed: int = 0, chunk: int = 65_536,
                 **options) -> None:  # fmt: skip
        import faiss

        if options.get("refine_factor"):
            raise MoonInputError("re-rank with the vectors (``vectors[search(...)]``) instead", field="refine_factor")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = build_index(self.vectors, "ivf", add=False, **options)
        self.index.max_codes = max_codes
        self.index.parallel_mode = 3  # threads over the queries inside search_preassigned (mode 0: serial there)
        quantizer = self.index.quantizer
        self.centroids = quantizer.reconstruct_n(0, self.index.nlist)
        self.probes = np.empty((len(self.vectors), self.index.nprobe), dtype=np.int32)
        order = np.random.default_rng(seed).permutation(len(self.vectors))
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]  # int64: faiss's ids
            part = self.vectors[rows]
            lists = quantizer.search(part, self.index.nprobe)[1]
            own = lists[:, 0].copy()
            if (own < 0).any():  # a graph walk that came back short: the nearest list exactly
                own[own < 0] = faiss.knn(part[own < 0], self.centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)[1][:, 0]
            self.index.add_core(len(part), faiss.swig_ptr(part), faiss.swig_ptr(rows), faiss.swig_ptr(own))
            self.probes[rows] = lists

    def search(self, rows: slice | np.ndarray, k: int) -> np.ndarray:
        """The ids of the ``k`` nearest indexed vectors to ``vectors[rows]`` (best first; -1 = none)."""
        queries, probes = self.vectors[rows], self.probes[rows].astype(np.int64)  # faiss's idx_t
        # the lists' inner products with the query: the 8-bit codes hold residuals, the scan adds them back
        coarse = gathered_inner_products(queries, self.centroids, probes)
        return self.index.search_preassigned(queries, k, probes, coarse)[1]


def gathered_inner_products(queries: np.ndarray, table: np.ndarray, ids: np.ndarray, chunk: int = 512) -> np.ndarray:
    """``queries[i] . table[ids[i, j]]`` for every ``i, j`` (-inf where ``ids`` is -1, faiss's "none"): scores
    of each query's own candidates only, ``chunk`` queries at a time so the gathered rows stay small."""
    scores = np.empty(ids.shape, dtype=np.float32)
    for at in range(0, len(queries), chunk):
        part = slice(at, at + chunk)
        scores[part] = np.einsum("qd,qcd->qc", queries[part], table[np.maximum(ids[part], 0)])
    scores[ids < 0] = -np.inf
    return scores


def _refined(ivf, factor: int):
    """``ivf`` (trained, empty) inside an exact re-ranker; ``add`` fills both, the wrapper owns the IVF."""
    import faiss

    refined = faiss.IndexRefineFlat(ivf)
    ivf.this.disown()  # freed with the wrapper, which also writes and reads it with write_index / read_index
    refined.own_fields = True
    refined.k_factor = factor
    return refined


def _training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    """Evenly spaced rows (reproducible, no copy of the whole array): k-means needs a sample, not all rows."""
    want = min(len(vectors), nlist * IVF_TRAIN_PER_LIST, max(IVF_TRAIN_MAX, nlist))
    step = max(1, len(vectors) // want)
    return np.ascontiguousarray(vectors[::step][:want])


def set_search_depth(index, *, ef_search: int = HNSW_EF_SEARCH, nprobe: int = IVF_NPROBE,
                     quantizer_ef: int = IVF_QUANTIZER_EF) -> None:  # fmt: skip
    """efSearch of an HNSW index, or nprobe of an IVF and the efSearch of its HNSW quantizer (at least nprobe);
    of the IVF inside an exact re-ranker (:func:`build_index` ``refine_factor``, or one read back from disk)."""
    import faiss

    ef_search, nprobe = _positive("ef_search", ef_search), _positive("nprobe", nprobe)
    quantizer_ef = _positive("quantizer_ef", quantizer_ef)
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.base_index)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = ef_search
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = min(nprobe, index.nlist)
        quantizer = faiss.downcast_index(index.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = max(quantizer_ef, index.nprobe)
