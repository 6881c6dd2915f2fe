"""MBE-style evaluation tasks on embeddings: retrieval, zero-shot classification, attribute prediction.

Each task first yields an *outcome* per evaluated item (the target's rank, or the predicted label),
then metrics from those outcomes. ``moon-swift eval`` reports the metrics; the ``swift eval``
benchmark reports the same outcomes item by item, so both agree by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.records import ProductRecord
from .index import IndexKind, VectorIndex
from .metrics import classification_metrics, ranking_metrics, ranks_from_search


@dataclass
class RetrievalOutcome:
    """0-based rank of each query's target (``search_k`` when not found) and the top hits' catalog positions."""

    ranks: np.ndarray
    top: np.ndarray

    def metrics(self) -> dict[str, float]:
        return ranking_metrics(self.ranks)

    def item_metrics(self, item: int) -> dict[str, float]:
        return ranking_metrics(self.ranks[item : item + 1])


@dataclass
class ClassificationOutcome:
    """Predicted and true label of each evaluated product (``rows``: positions in the record list)."""

    labels: list[str]
    predicted: np.ndarray
    truth: np.ndarray
    rows: list[int]

    def metrics(self) -> dict[str, float]:
        metrics = classification_metrics(self.predicted, self.truth)
        return {**metrics, "classes": float(len(self.labels)), "products": float(len(self.rows))}

    def item_metrics(self, item: int) -> dict[str, float]:
        return {"accuracy": float(self.predicted[item] == self.truth[item])}


Outcome = RetrievalOutcome | ClassificationOutcome


def retrieval_outcome(queries: np.ndarray, catalog: np.ndarray, targets: Sequence[int], *, index: IndexKind = "flat",
                      search_k: int = 100) -> RetrievalOutcome:  # fmt: skip
    """Where ``catalog[targets[i]]`` ranks among the catalog for ``queries[i]`` (MRR is cut at ``search_k``)."""
    _, ids = VectorIndex(catalog.shape[1], index).add(catalog).search(queries, search_k)
    return RetrievalOutcome(ranks_from_search(ids, np.asarray(targets)), ids[:, :10])


def retrieval(queries: np.ndarray, catalog: np.ndarray, targets: Sequence[int], **kwargs) -> dict[str, float]:
    """Recall@1/5/10, MRR and nDCG@10 of ``queries[i]`` finding ``catalog[targets[i]]``."""
    return retrieval_outcome(queries, catalog, targets, **kwargs).metrics()


def _nearest_label(products: np.ndarray, labels: list[str], truth: list[str], label_embeddings: np.ndarray,
                   rows: list[int]) -> ClassificationOutcome:  # fmt: skip
    index_of = {label: i for i, label in enumerate(labels)}
    predicted = (products[rows] @ label_embeddings.T).argmax(axis=1)
    return ClassificationOutcome(labels, predicted, np.array([index_of[t] for t in truth]), rows)


def category_levels(records: Sequence[ProductRecord]) -> list[str]:
    """The zero-shot classification tasks: one per category level present."""
    return [f"level{level + 1}" for level in range(max((len(r.category_path) for r in records), default=0))]


def predictable_attributes(records: Sequence[ProductRecord]) -> list[str]:
    """Attributes with at least two values (with one, there is nothing to predict)."""
    names = sorted({name for r in records for name in r.attributes})
    return [name for name in names if len({r.attributes[name] for r in records if name in r.attributes}) > 1]


def level_truth(records: Sequence[ProductRecord], level: int) -> tuple[list[int], list[str]]:
    """(positions, true labels) of the products that have category ``level`` (0-based)."""
    rows = [i for i, r in enumerate(records) if len(r.category_path) > level]
    return rows, [records[i].category_path[level] for i in rows]


def attribute_truth(records: Sequence[ProductRecord], name: str) -> tuple[list[int], list[str]]:
    """(positions, true values) of the products that have attribute ``name``."""
    rows = [i for i, r in enumerate(records) if name in r.attributes]
    return rows, [records[i].attributes[name] for i in rows]


def classification_outcomes(encoder, products: np.ndarray, records: Sequence[ProductRecord]) -> dict[str, Outcome]:
    """Per category level: the nearest label text (the level's distinct values) to each product embedding."""
    outcomes = {}
    for level, name in enumerate(category_levels(records)):
        rows, truth = level_truth(records, level)
        labels = sorted(set(truth))
        label_embeddings = encoder.encode_queries(labels, desc=f"labels {name}", progress=False)
        outcomes[name] = _nearest_label(products, labels, truth, label_embeddings, rows)
    return outcomes


def attribute_outcomes(encoder, products: np.ndarray, records: Sequence[ProductRecord]) -> dict[str, Outcome]:
    """Per attribute: the nearest ``"name: value"`` text among the attribute's values."""
    outcomes = {}
    for name in predictable_attributes(records):
        rows, truth = attribute_truth(records, name)
        values = sorted(set(truth))
        label_embeddings = encoder.encode_queries([f"{name}: {v}" for v in values], progress=False)
        outcomes[name] = _nearest_label(products, values, truth, label_embeddings, rows)
    return outcomes


def label_outcomes(encoder, records: Sequence[ProductRecord], name: str = "model") -> dict[str, Outcome]:
    """Classification per category level and prediction per attribute, the products encoded as images +
    title only (the label must not be in the input): ``classification/<level>``, ``attributes/<name>``."""
    plain = encoder.encode_products(records, with_fields=False, desc=f"plain    {name}")
    outcomes = {f"classification/{level}": o for level, o in classification_outcomes(encoder, plain, records).items()}
    outcomes.update({f"attributes/{a}": o for a, o in attribute_outcomes(encoder, plain, records).items()})
    return outcomes


def zero_shot_classification(encoder, products: np.ndarray, records: Sequence[ProductRecord]) -> dict[str, dict]:
    return {name: o.metrics() for name, o in classification_outcomes(encoder, products, records).items()}


def attribute_prediction(encoder, products: np.ndarray, records: Sequence[ProductRecord]) -> dict[str, dict]:
    return {name: o.metrics() for name, o in attribute_outcomes(encoder, products, records).items()}
