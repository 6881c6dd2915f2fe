import numpy as np
import pytest

from moon_swift.eval.index import VectorIndex


def _unit(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_is_exact_inner_product_search():
    catalog, queries = _unit(500, 32, 0), _unit(20, 32, 1)
    scores, ids = VectorIndex(32).add(catalog).search(queries, 5)
    expected = np.argsort(-(queries @ catalog.T), axis=1)[:, :5]
    assert (ids == expected).all()
    np.testing.assert_allclose(scores[:, 0], (queries @ catalog.T).max(axis=1), rtol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_exact_neighbour_of_catalog_items(kind, tmp_path):
    catalog = _unit(2000, 32, 2)
    index = VectorIndex(32, kind, nlist=16, nprobe=4).add(catalog)
    _, ids = index.search(catalog[:100], 1)
    assert (ids[:, 0] == np.arange(100)).mean() >= 0.95
    index.save(tmp_path / "catalog.faiss")
    assert (tmp_path / "catalog.faiss").stat().st_size > 0
