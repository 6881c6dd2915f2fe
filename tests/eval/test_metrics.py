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


def test_ranking_metrics_from_search_results():
    from moon_swift.eval.metrics import ranking_metrics, ranks_from_search

    result_ids = np.array([[3, 0, 1], [2, 1, 0], [0, 1, 2]])
    ranks = ranks_from_search(result_ids, np.array([0, 2, 9]))  # 9 was not retrieved
    assert ranks.tolist() == [1, 0, 3]
    metrics = ranking_metrics(ranks, ks=(1, 2), ndcg_k=2)
    assert metrics["recall@1"] == pytest.approx(1 / 3) and metrics["recall@2"] == pytest.approx(2 / 3)
    assert metrics["mrr"] == pytest.approx((0.5 + 1 + 0.25) / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)


def test_classification_metrics_macro_f1_by_hand():
    from moon_swift.eval.metrics import classification_metrics

    metrics = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    # class 0: P=1/2 R=1 F1=2/3; class 1: P=1 R=2/3 F1=0.8
    assert metrics["accuracy"] == 0.75 and metrics["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
