"""Inner-product search over L2-normalised embeddings with faiss: exact for evaluation, approximate by choice or,
with ``auto``, above the catalog size where exact search stops being fast enough (``benchmarks/ann_search.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ..core.errors import MoonInputError
from ..core.vector_search import HNSW_EF_SEARCH, HNSW_M, IVF_NPROBE, IVF_REFINE_FACTOR, Kind, build_index, check_kind

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")
#: ``auto``: exact search up to this many catalog vectors, :data:`AUTO_APPROXIMATE` above
AUTO_EXACT_UP_TO = 100_000
#: ``auto``'s kind above :data:`AUTO_EXACT_UP_TO`, at the shared defaults of ``moon_swift.core.vector_search``
AUTO_APPROXIMATE: Kind = "ivf"
#: how ``ivf`` stores the catalog: 8-bit codes scanned, the best IVF_REFINE_FACTOR x k re-ranked exactly
#: (``benchmarks/ann_search.py``: faster than float lists at the same recall)
IVF_STORAGE = {"storage": "sq8", "refine_factor": IVF_REFINE_FACTOR}


def resolve_kind(kind: str, count: int) -> Kind:
    """The faiss kind ``kind`` means for a catalog of ``count`` vectors (``auto`` picks by size)."""
    if kind not in INDEX_KINDS:
        raise MoonInputError(f"must be one of {', '.join(INDEX_KINDS)}, got {kind!r}", field="--index")
    if kind == "auto":
        return "flat" if count <= AUTO_EXACT_UP_TO else AUTO_APPROXIMATE
    return check_kind(kind)  # type: ignore[return-value]


class VectorIndex:
    """``flat`` is exact (the default for evaluation); ``ivf`` and ``hnsw`` are approximate, for millions;
    ``auto`` is ``flat`` up to :data:`AUTO_EXACT_UP_TO` vectors. The faiss index is built by the first
    :meth:`add` (an IVF's lists and ``auto``'s choice depend on the catalog's size)."""

    def __init__(self, dim: int, kind: IndexKind = "flat", *, nlist: int | None = None, nprobe: int = IVF_NPROBE,
                 hnsw_m: int = HNSW_M, ef_search: int = HNSW_EF_SEARCH):  # fmt: skip
        resolve_kind(kind, 0)  # a wrong kind stops here, before any encoding
        for name, value in (("dim", dim), ("nprobe", nprobe), ("hnsw_m", hnsw_m), ("ef_search", ef_search),
                            ("nlist", 1 if nlist is None else nlist)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise MoonInputError(f"must be a positive integer, got {value!r}", field=name)
        self.dim, self.kind = int(dim), kind
        self.options = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_search": ef_search}
        self.index = None
        self.built_kind: Kind | None = None

    def add(self, vectors: np.ndarray) -> VectorIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise MoonInputError(f"vectors of shape {vectors.shape}, the index holds {self.dim}-d", field="vectors")
        if self.index is None:
            self.built_kind = resolve_kind(self.kind, len(vectors))
            storage = IVF_STORAGE if self.built_kind == "ivf" else {}
            self.index = build_index(vectors, self.built_kind, **self.options, **storage)
        else:
            self.index.add(vectors)
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each ``(len(queries), k)``, best first; ids are row numbers of ``add``."""
        if self.index is None:
            raise ValueError("search before add: the index is empty")
        k = min(k, self.index.ntotal)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: str | Path) -> None:
        import faiss

        if self.index is None:
            raise ValueError("save before add: the index is empty")
        faiss.write_index(self.index, str(path))
