"""Catalog embeddings to a faiss index file and a Milvus collection (Milvus Lite file or a server)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.records import ProductRecord
from .index import IndexKind, VectorIndex


def write_faiss(embeddings: np.ndarray, records: Sequence[ProductRecord], path: Path, kind: IndexKind = "flat") -> None:
    """``path`` (the index) and ``path.with_suffix('.ids.json')`` (row -> product id)."""
    VectorIndex(embeddings.shape[1], kind).add(embeddings).save(path)
    path.with_suffix(".ids.json").write_text(json.dumps([r.product_id for r in records]))


def write_milvus(
    embeddings: np.ndarray,
    records: Sequence[ProductRecord],
    uri: str,
    collection: str,
    *,
    token: str | None = None,
    batch: int = 1000,
) -> int:
    """(Re)create ``collection`` at ``uri`` with one entity per product; returns the count inserted.

    ``uri`` is a local ``*.db`` file for Milvus Lite (embedded, no server) or ``http://host:19530``
    for a Milvus server / cluster: the same code serves both.
    """
    from pymilvus import MilvusClient

    client = MilvusClient(uri, token=token or "")
    if client.has_collection(collection):
        client.drop_collection(collection)
    client.create_collection(collection, dimension=int(embeddings.shape[1]), metric_type="IP", auto_id=False)
    for start in range(0, len(records), batch):
        rows = [
            {"id": start + i, "vector": embeddings[start + i].tolist(), "product_id": record.product_id,
             "title": record.title[:512], "category": " > ".join(record.category_path)[:512]}
            for i, record in enumerate(records[start : start + batch])
        ]  # fmt: skip
        client.insert(collection, rows)
    if hasattr(client, "flush"):
        client.flush(collection)
    return len(records)
