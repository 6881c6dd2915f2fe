"""MBE-style evaluation tasks on embeddings: retrieval, zero-shot classification, attribute prediction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.records import ProductRecord
from .encode import ProductEncoder
from .index import IndexKind, VectorIndex
from .metrics import classification_metrics, ranking_metrics, ranks_from_search


def retrieval(queries: np.ndarray, catalog: np.ndarray, targets: Sequence[int], *, index: IndexKind = "flat",
              search_k: int = 100) -> dict[str, float]:  # fmt: skip
    """Recall@1/5/10, MRR and nDCG@10 of ``queries[i]`` finding ``catalog[targets[i]]`` (MRR cut at ``search_k``)."""
    _, ids = VectorIndex(catalog.shape[1], index).add(catalog).search(queries, search_k)
    return ranking_metrics(ranks_from_search(ids, np.asarray(targets)))


def _predict(embeddings: np.ndarray, label_embeddings: np.ndarray) -> np.ndarray:
    return (embeddings @ label_embeddings.T).argmax(axis=1)


def zero_shot_classification(
    encoder: ProductEncoder, products: np.ndarray, records: Sequence[ProductRecord]
) -> dict[str, dict[str, float]]:
    """Per category level: the nearest label text (the level's distinct values) to each product embedding."""
    results = {}
    depth = max((len(r.category_path) for r in records), default=0)
    for level in range(depth):
        rows = [i for i, r in enumerate(records) if len(r.category_path) > level]
        truth = [records[i].category_path[level] for i in rows]
        labels = sorted(set(truth))
        label_embeddings = encoder.encode_queries(labels, desc=f"labels level {level + 1}", progress=False)
        predicted = _predict(products[rows], label_embeddings)
        index_of = {label: i for i, label in enumerate(labels)}
        metrics = classification_metrics(predicted, np.array([index_of[t] for t in truth]))
        results[f"level{level + 1}"] = {**metrics, "classes": float(len(labels)), "products": float(len(rows))}
    return results


def attribute_prediction(
    encoder: ProductEncoder, products: np.ndarray, records: Sequence[ProductRecord]
) -> dict[str, dict[str, float]]:
    """Per attribute: the nearest ``"name: value"`` text among the attribute's values, as accuracy."""
    results = {}
    names = sorted({name for r in records for name in r.attributes})
    for name in names:
        rows = [i for i, r in enumerate(records) if name in r.attributes]
        truth = [records[i].attributes[name] for i in rows]
        values = sorted(set(truth))
        if len(values) < 2:
            continue  # nothing to predict
        label_embeddings = encoder.encode_queries([f"{name}: {v}" for v in values], progress=False)
        predicted = _predict(products[rows], label_embeddings)
        index_of = {value: i for i, value in enumerate(values)}
        metrics = classification_metrics(predicted, np.array([index_of[t] for t in truth]))
        results[name] = {**metrics, "classes": float(len(values)), "products": float(len(rows))}
    return results
