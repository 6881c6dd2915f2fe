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
    ranks = target_ranks(similarity, np.asarray(targets))
    metrics = {f"recall@{k}": float((ranks < k).mean()) for k in ks}
    metrics["mrr"] = float((1.0 / (ranks + 1)).mean())
    return metrics
