import numpy as np
import pytest

from moon_swift.eval.metrics import retrieval_metrics


def test_retrieval_metrics_on_a_hand_checked_matrix():
    similarity = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.2], [0.1, 0.3, 0.2]])
    # ranks of targets [0, 1, 2]: 0, 1, 1
    metrics = retrieval_metrics(similarity, np.array([0, 1, 2]), ks=(1, 2))
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@2"] == pytest.approx(1.0)
    assert metrics["mrr"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_ties_count_against_the_target():
    assert retrieval_metrics(np.ones((2, 2)), np.array([0, 1]), ks=(1,))["recall@1"] == 0.0
