"""The ablation study's tasks on held-out products, for a model and for the baselines beside it.

Retrieval of the held-out products (full view: images, title, category, attributes) from each query kind of
:data:`~moon_swift.data.study.RETRIEVAL_TASKS`; street photo -> category (are the nearest products of the
photo's categories?); zero-shot classification per category level and attribute prediction per attribute
(products as images + title). Every task also has its baselines (:mod:`~moon_swift.eval.baselines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.records import ProductRecord
from ..data.study import RETRIEVAL_TASKS, STREET_CATEGORIES, HeldOutQuery
from .baselines import ThumbnailEncoder, chance_accuracy, chance_retrieval, majority_accuracy
from .encode import Encoder, image_query_request, product_request, query_request
from .index import VectorIndex
from .report import flatten, metrics_by_task
from .tasks import (
    Outcome,
    attribute_truth,
    category_levels,
    label_outcomes,
    level_truth,
    predictable_attributes,
    retrieval_outcome,
)

#: the street photo -> category metrics: the nearest product is of the photo's categories; share of the nearest 10
STREET_METRICS = ("hit@1", "precision@10")
#: the tasks a thumbnail can do: those whose queries are photos (a multimodal query: its photo)
IMAGE_TASKS = ("photo", "multimodal", "product")


@dataclass
class CategoryOutcome:
    """For each street photo, whether each of its nearest products is of its categories; ``top``: their positions."""

    relevant: np.ndarray  # (queries, 10) bool
    top: np.ndarray

    def metrics(self) -> dict[str, float]:
        return {"hit@1": float(self.relevant[:, 0].mean()), "precision@10": float(self.relevant.mean()),
                "queries": float(len(self.relevant))}  # fmt: skip


def query_requests(queries: Sequence[HeldOutQuery], products: dict[str, ProductRecord]) -> list[dict]:
    """How each held-out query is encoded: text, photo (+ text), or a product view (photo, category, attributes)."""
    requests = []
    for query in queries:
        if query.task == "product":
            record = products[query.product_id]
            view = ProductRecord(record.product_id, "", [query.image], record.category_path, record.attributes)
            requests.append(product_request(view, with_title=False))
        elif query.image:
            requests.append(image_query_request(query.image, query.text or ""))
        else:
            requests.append(query_request(query.text or ""))
    return requests


def street_queries(queries: Sequence[HeldOutQuery], catalog: Sequence[ProductRecord]) -> list[HeldOutQuery]:
    """The street photos whose categories the catalog has (a photo of a category with no product is not asked)."""
    leaves = {r.category_path[-1] for r in catalog if r.category_path}
    return [q for q in queries if q.task == "street photo" and leaves & set(STREET_CATEGORIES[q.label])]


def _category_outcome(embedded: np.ndarray, catalog_vectors: np.ndarray, chosen: Sequence[HeldOutQuery],
                      catalog: Sequence[ProductRecord]) -> CategoryOutcome:  # fmt: skip
    k = min(10, len(catalog))
    _, ids = VectorIndex(catalog_vectors.shape[1], "flat").add(catalog_vectors).search(embedded, k)
    leaf = [r.category_path[-1] if r.category_path else None for r in catalog]
    relevant = np.array([[leaf[i] in STREET_CATEGORIES[q.label] for i in row]
                         for q, row in zip(chosen, ids, strict=True)])  # fmt: skip
    return CategoryOutcome(relevant.reshape(len(chosen), k), ids)


def study_outcomes(encoder: Encoder, records: Sequence[ProductRecord], queries: Sequence[HeldOutQuery], *,
                   name: str = "model", image_only: bool = False) -> dict[str, Outcome | CategoryOutcome]:  # fmt: skip
    """Every task's per-query outcome for one encoder (``image_only``: only the tasks whose queries are photos)."""
    products = {r.product_id: r for r in records}
    position = {r.product_id: i for i, r in enumerate(records)}
    catalog = encoder.encode_products(records, desc=f"products {name}")
    outcomes: dict[str, Outcome | CategoryOutcome] = {}
    for task in RETRIEVAL_TASKS:
        chosen = [q for q in queries if q.task == task]
        if not chosen or (image_only and task not in IMAGE_TASKS):
            continue
        embedded = encoder.encode(query_requests(chosen, products), desc=f"{task} queries {name}")
        targets = [position[q.product_id] for q in chosen]
        outcomes[f"retrieval/{task}->product"] = retrieval_outcome(embedded, catalog, targets)
    street = street_queries(queries, records)
    if street:
        embedded = encoder.encode(query_requests(street, products), desc=f"street photos {name}")
        outcomes["street/photo->category"] = _category_outcome(embedded, catalog, street, records)
    if not image_only:
        outcomes.update(label_outcomes(encoder, records, name))
    return outcomes


def study_metrics(outcomes: dict[str, Outcome | CategoryOutcome]) -> dict[str, float]:
    """Flat metric names (``retrieval/photo->product/recall@10``, ``classification/level1/accuracy``, ...)."""
    return flatten(metrics_by_task(outcomes))


def baseline_metrics(records: Sequence[ProductRecord], train: Sequence[ProductRecord],
                     queries: Sequence[HeldOutQuery], boxes: str | None) -> dict[str, dict[str, float]]:  # fmt: skip
    """The baseline rows: ``chance`` (exact expectation), ``majority class`` and ``thumbnail match``."""
    chance: dict[str, float] = {}
    for task in RETRIEVAL_TASKS:
        if any(q.task == task for q in queries):
            chance.update({f"retrieval/{task}->product/{k}": v for k, v in chance_retrieval(len(records)).items()})
    street = street_queries(queries, records)
    if street:
        leaves = [r.category_path[-1] if r.category_path else None for r in records]
        share = float(np.mean([np.mean([leaf in STREET_CATEGORIES[q.label] for leaf in leaves]) for q in street]))
        chance.update({f"street/photo->category/{metric}": share for metric in STREET_METRICS})
    majority: dict[str, float] = {}
    for level, name in enumerate(category_levels(records)):
        _, truth = level_truth(records, level)
        _, train_truth = level_truth(train, level)
        chance[f"classification/{name}/accuracy"] = chance_accuracy(truth)
        majority[f"classification/{name}/accuracy"] = majority_accuracy(train_truth, truth)
    for attribute in predictable_attributes(records):
        _, truth = attribute_truth(records, attribute)
        _, train_truth = attribute_truth(train, attribute)
        chance[f"attributes/{attribute}/accuracy"] = chance_accuracy(truth)
        majority[f"attributes/{attribute}/accuracy"] = majority_accuracy(train_truth, truth)
    thumbnails = study_metrics(study_outcomes(ThumbnailEncoder(boxes), records, queries, name="thumbnail",
                                              image_only=True))  # fmt: skip
    return {"chance": chance, "majority class": majority, "thumbnail match": thumbnails}
