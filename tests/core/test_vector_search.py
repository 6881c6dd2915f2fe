import faiss
import numpy as np
import pytest

from moon_swift.core.errors import MoonInputError
from moon_swift.core.vector_search import (
    HNSW_EF_SEARCH,
    IVF_LIST_SIZE,
    IVF_NPROBE,
    SelfSearchIVF,
    build_index,
    ivf_lists,
    set_search_depth,
)


def _unit(x):
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n, d=32, clusters=300, spread=0.5, seed=0):
    """Products around fixed category centroids (the shape the defaults were chosen on, small): each a
    centroid plus noise of norm ``spread``."""
    centres = _unit(np.random.default_rng(100).standard_normal((clusters, d)))
    rng = np.random.default_rng(seed)
    return _unit(centres[rng.integers(clusters, size=n)] + spread * _unit(rng.standard_normal((n, d))))


def recall_at_10(index, catalog, queries):
    truth = np.argsort(-(queries @ catalog.T), axis=1)[:, :10]
    found = index.search(queries, 10)[1]
    return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])


def test_flat_is_exact_and_searches_row_numbers():
    catalog, queries = clustered(1000, seed=1), clustered(30, seed=2)
    ids = build_index(catalog, "flat").search(queries, 5)[1]
    assert (ids == np.argsort(-(queries @ catalog.T), axis=1)[:, :5]).all()


def test_ivf_lists_follow_sqrt_n_with_the_exact_coarse_search_and_n_with_the_graph():
    assert ivf_lists(10) == 1 and ivf_lists(100_000) == 1265 and ivf_lists(1_000_000) == 4000
    assert ivf_lists(10_000) == 10_000 // 39  # at least 39 vectors a list, k-means needs them
    assert ivf_lists(100 * IVF_LIST_SIZE, "hnsw") == 100 and ivf_lists(1000 * IVF_LIST_SIZE, "hnsw") == 1000
    index = build_index(clustered(40 * IVF_LIST_SIZE), "ivf", coarse="hnsw")
    assert index.nlist == 40 and index.nprobe == IVF_NPROBE
    quantizer = faiss.downcast_index(index.quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat) and quantizer.ntotal == 40
    assert quantizer.hnsw.efSearch >= index.nprobe


@pytest.mark.parametrize("coarse", ["flat", "hnsw"])
def test_ivf_at_the_defaults_keeps_recall_that_one_probe_loses(coarse):
    catalog, queries = clustered(40_000, seed=3), clustered(300, seed=4)
    index = build_index(catalog, "ivf", coarse=coarse)
    assert recall_at_10(index, catalog, queries) >= 0.95
    set_search_depth(index, nprobe=1)
    assert recall_at_10(index, catalog, queries) < 0.95  # the bound is one the default probing has to earn


def test_hnsw_at_the_default_depth_reaches_the_bound():
    catalog, queries = clustered(20_000, seed=5), clustered(300, seed=6)
    index = build_index(catalog, "hnsw")
    assert index.hnsw.efSearch == HNSW_EF_SEARCH
    assert recall_at_10(index, catalog, queries) >= 0.95


def test_eight_bit_storage_is_a_quarter_of_the_vectors_and_ranks_like_them():
    catalog, queries = clustered(10_000, seed=7), clustered(200, seed=8)
    codes = build_index(catalog, "ivf", coarse="hnsw", storage="sq8")
    assert codes.code_size == catalog.shape[1]  # one byte per dimension, not four
    assert recall_at_10(codes, catalog, queries) >= 0.9


def test_exact_re_ranking_gives_back_what_the_codes_lose_and_survives_a_round_trip(tmp_path):
    import faiss

    catalog, queries = clustered(10_000, seed=9), clustered(300, seed=10)
    codes = build_index(catalog, "ivf", nlist=64, nprobe=8, storage="sq8")
    refined = build_index(catalog, "ivf", nlist=64, nprobe=8, storage="sq8", refine_factor=2)
    floats = build_index(catalog, "ivf", nlist=64, nprobe=8)
    assert isinstance(refined, faiss.IndexRefineFlat) and refined.k_factor == 2
    assert recall_at_10(refined, catalog, queries) > recall_at_10(codes, catalog, queries)
    assert recall_at_10(refined, catalog, queries) >= recall_at_10(floats, catalog, queries) - 0.01
    scores, ids = refined.search(queries, 10)  # re-ranked: the exact inner products, not the codes' estimate
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, catalog[ids]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(codes.search(queries, 10)[0], np.einsum("qd,qkd->qk", queries, catalog[codes.search(
        queries, 10)[1]]), rtol=1e-5, atol=1e-6)  # fmt: skip

    faiss.write_index(refined, str(tmp_path / "refined.faiss"))
    back = faiss.read_index(str(tmp_path / "refined.faiss"))
    assert (back.search(queries, 10)[1] == refined.search(queries, 10)[1]).all()
    set_search_depth(back, nprobe=1)  # reaches the IVF inside the wrapper
    assert faiss.downcast_index(back.base_index).nprobe == 1
    assert recall_at_10(back, catalog, queries) < recall_at_10(refined, catalog, queries)

    more = clustered(100, seed=11)
    refined.add(more)  # later rows go to the codes and to the re-ranking copy alike
    assert (refined.search(more[:20], 1)[1][:, 0] == np.arange(10_000, 10_020)).all()


@pytest.mark.parametrize(
    ("kind", "options", "field"),
    [
        ("annoy", {}, "kind"),
        ("ivf", {"nprobe": 0}, "nprobe"),
        ("hnsw", {"hnsw_m": -1}, "hnsw_m"),
        ("hnsw", {"ef_search": 2.5}, "ef_search"),
        ("ivf", {"nlist": 5000}, "nlist"),
        ("ivf", {"storage": "pq"}, "storage"),
        ("ivf", {"coarse": "kmeans"}, "coarse"),
        ("ivf", {"refine_factor": -1}, "refine_factor"),
    ],
)
def test_bad_kinds_and_parameters_are_refused_by_name(kind, options, field):
    with pytest.raises(MoonInputError) as error:
        build_index(clustered(1000), kind, **options)
    assert error.value.field == field


def test_no_vectors_is_refused():
    with pytest.raises(MoonInputError, match="non-empty"):
        build_index(np.zeros((0, 8), dtype=np.float32), "flat")


def test_self_search_ivf_stores_each_vector_in_its_nearest_probed_list_and_searches_as_the_index_would():
    vectors = clustered(8000, seed=9)
    ivf = SelfSearchIVF(vectors, coarse="hnsw", storage="sq8", nprobe=8)
    assert ivf.index.ntotal == len(vectors) and ivf.probes.shape == (len(vectors), 8)
    stored_in = np.full(len(vectors), -1)
    for number in range(ivf.index.nlist):
        size = ivf.index.invlists.list_size(number)
        stored_in[faiss.rev_swig_ptr(ivf.index.invlists.get_ids(number), size).copy()] = number
    np.testing.assert_array_equal(stored_in, ivf.probes[:, 0])  # each vector in the first list it probes,
    nearest = faiss.knn(vectors, ivf.centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)[1][:, 0]
    assert np.mean(stored_in == nearest) >= 0.99  # which is the nearest (the graph over 80 lists is near exact)
    rows = np.arange(0, len(vectors), 7)
    # the index's own search walks the quantizer again and scores the lists itself: the same neighbours, in
    # order (the 8-bit codes hold residuals: without the lists' own scores the ranking across lists breaks)
    own = ivf.index.search(vectors[rows], 10)[1]
    faiss.cvar.indexIVF_stats.reset()
    assert np.mean(ivf.search(rows, 10) == own) >= 0.99
    assert faiss.cvar.indexIVF_stats.quantization_time == 0  # the walk was the build's: no second one
    with pytest.raises(MoonInputError, match="re-rank with the vectors"):  # its search is the IVF's, not a wrapper's
        SelfSearchIVF(vectors, refine_factor=2)


def test_a_list_cut_by_max_codes_gives_a_random_sample_of_it_not_the_catalogs_first_rows():
    vectors = clustered(8000, clusters=80, seed=10)  # 80 lists of about 100, one probed, cut at 20 codes
    ivf = SelfSearchIVF(vectors, coarse="hnsw", nprobe=1, max_codes=20)
    faiss.cvar.indexIVF_stats.reset()
    found = ivf.search(slice(None), 10)
    assert faiss.cvar.indexIVF_stats.ndis <= 20 * len(vectors)  # fewer only where a list is shorter
    # stored in row order, a cut list would give its first fifth: rows in about the catalog's first fifth
    assert 0.4 < np.median(found[found >= 0]) / len(vectors) < 0.6
