"""Retrieval metrics from a query x catalog similarity matrix."""

from __future__ import annotations

import numpy as np


def target_ranks(similarity: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each query's target column (ties count against the target)."""
    target_scores = similarity[np.arange(len(targets)), targets]
    return (similarity > target_scores[:, None]).sum(axis=1) + ((similarity == target_scores[:, None]).sum(axis=1) - 1)


def retrieval_metrics(
    similarity: np.ndarray, targets: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K and MRR for queries whose single relevant item is column ``targets[i]``."""
    return ranking_metrics(target_ranks(similarity, np.asarray(targets)), ks, ndcg_k=None)


def ranks_from_search(result_ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target in a top-k search result; ``k`` (= not found) when absent."""
    hits = result_ids == np.asarray(targets)[:, None]
    found = hits.any(axis=1)
    return np.where(found, hits.argmax(axis=1), result_ids.shape[1])


def ranking_metrics(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5, 10), ndcg_k: int | None = 10) -> dict[str, float]:
    """Recall@K, MRR and nDCG@k (``ndcg_k=None``: none) for one relevant item per query, from its 0-based rank."""
    ranks = np.asarray(ranks)
    metrics = {f"recall@{k}": float((ranks < k).mean()) for k in ks}
    metrics["mrr"] = float((1.0 / (ranks + 1)).mean())
    if ndcg_k is not None:
        metrics[f"ndcg@{ndcg_k}"] = float(np.where(ranks < ndcg_k, 1.0 / np.log2(ranks + 2), 0.0).mean())
    return metrics


def classification_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 (over the classes present in ``truth``)."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    f1s = []
    for label in np.unique(truth):
        tp = float(((predicted == label) & (truth == label)).sum())
        precision = tp / max(1.0, float((predicted == label).sum()))
        recall = tp / float((truth == label).sum())
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return {"accuracy": float((predicted == truth).mean()), "macro_f1": float(np.mean(f1s))}
