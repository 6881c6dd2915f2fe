"""Inner-product search over L2-normalised embeddings with faiss (exact by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

IndexKind = Literal["flat", "ivf", "hnsw"]


class VectorIndex:
    """``flat`` is exact (the default for evaluation); ``ivf`` and ``hnsw`` are approximate, for millions."""

    def __init__(self, dim: int, kind: IndexKind = "flat", *, nlist: int = 1024, nprobe: int = 16, hnsw_m: int = 32):
        import faiss

        self.kind = kind
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.nprobe = nprobe
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            raise ValueError(f"index kind must be flat, ivf or hnsw, got {kind!r}")

    def add(self, vectors: np.ndarray) -> VectorIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self.index.is_trained:
            self.index.train(vectors)
        self.index.add(vectors)
        return self

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each ``(len(queries), k)``, best first; ids are row numbers of ``add``."""
        k = min(k, self.index.ntotal)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: str | Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))
