import numpy as np
import pytest

from moon_swift.apps.cli import build_parser
from moon_swift.data import ProductRecord, negatives
from moon_swift.data.negatives import MINING_SEARCHES, category_negatives, check_mining_search, mined_negatives


def _catalog():
    records = [ProductRecord(f"s{i}", f"shirt {i}", [f"/{i}.jpg"], ["Apparel", "Topwear", "Shirts"]) for i in range(4)]
    records += [ProductRecord(f"t{i}", f"tee {i}", [f"/t{i}.jpg"], ["Apparel", "Topwear", "Tshirts"]) for i in range(3)]
    records += [ProductRecord("j0", "jeans", ["/j.jpg"], ["Apparel", "Bottomwear", "Jeans"])]
    records[1].group_id = records[2].group_id = "variant-group"  # two colours of one product
    return records


def test_same_leaf_category_first_never_the_product_or_its_group():
    records = _catalog()
    negatives = category_negatives(records, k=2, seed=7)
    for record, chosen in zip(records, negatives, strict=True):
        assert len(chosen) == 2
        assert record.product_id not in [c.product_id for c in chosen]
        if record.group_id:
            assert all(c.group_id != record.group_id for c in chosen)
    assert all(c.category_path[-1] == "Shirts" for c in negatives[0])  # s0 has 3 other shirts to draw from


def test_falls_back_to_the_parent_level_when_the_leaf_is_too_small():
    negatives = category_negatives(_catalog(), k=3, seed=0)
    jeans = negatives[-1]  # the only Jeans: negatives come from Apparel
    assert len(jeans) == 3 and all(c.category_path[0] == "Apparel" for c in jeans)
    tees = negatives[4]
    assert [c.category_path[-1] for c in tees].count("Tshirts") == 2  # both other tees, then a Topwear shirt
    assert any(c.category_path[-1] == "Shirts" for c in tees)


def _draw(records, seed):
    drawn = category_negatives(records, 2, seed)
    return {r.product_id: [c.product_id for c in n] for r, n in zip(records, drawn, strict=True)}


def test_draws_are_reproducible_and_independent_of_row_order():
    records = _catalog()
    assert _draw(records, 3) == _draw(records[::-1], 3) != _draw(records, 4)


def test_mined_negatives_are_nearest_other_group_products():
    records = _catalog()[:4]  # s1 and s2 share a group
    embeddings = np.array([[1.0, 0.0], [0.9, 0.1], [0.95, 0.05], [0.0, 1.0]])
    mined = mined_negatives(records, embeddings, k=2)
    assert [r.product_id for r in mined[1]] == ["s0", "s3"]  # s2 is the same group: never a negative
    assert [r.product_id for r in mined[0]] == ["s2", "s1"]


def _big_catalog(products: int, groups_of: int = 1) -> list[ProductRecord]:
    records = [ProductRecord(f"p{i:05d}", "", [], ["Apparel", "Topwear", "Tshirts"]) for i in range(products)]
    for i, record in enumerate(records):
        record.group_id = f"g{i // groups_of}"
    return records


def test_draws_from_a_large_category_are_distinct_other_groups_and_row_order_free():
    records = _big_catalog(2000, groups_of=3)
    drawn = category_negatives(records, k=5, seed=1)
    for record, chosen in zip(records, drawn, strict=True):
        groups = [c.group_id for c in chosen]
        assert len(groups) == 5 == len(set(groups)) and record.group_id not in groups
    shuffled = records[1::2] + records[::2]
    again = dict(zip([r.product_id for r in shuffled], category_negatives(shuffled, k=5, seed=1), strict=True))
    assert all([c.product_id for c in again[r.product_id]] == [c.product_id for c in n]
               for r, n in zip(records, drawn, strict=True))  # fmt: skip
    firsts = {n[0].product_id for n in drawn}
    assert len(firsts) > 1000  # spread over the category, not the same few products for everyone


def test_every_eligible_product_is_found_where_the_own_group_fills_the_category():
    records = _big_catalog(200)
    for record in records[:195]:
        record.group_id = "one-big-group"  # random picks nearly always hit it
    drawn = category_negatives(records, k=8, seed=0)
    assert sorted(c.product_id for c in drawn[0]) == [r.product_id for r in records[195:]]  # all 5 there are


def _brute_force_mined(records, embeddings, k):
    groups = np.array([r.group_id or r.product_id for r in records])
    scores = embeddings @ embeddings.T
    scores[groups[:, None] == groups[None, :]] = -np.inf
    return [[records[i].product_id for i in np.argsort(-row)[:k] if np.isfinite(row[i])] for row in scores]


def test_mined_negatives_equal_brute_force_top_k_also_past_a_large_group():
    rng = np.random.default_rng(0)
    records = _big_catalog(600, groups_of=2)
    for record in records[:150]:
        record.group_id = "large"  # more than the first search's room for the own group (64)
    embeddings = rng.standard_normal((600, 16)).astype(np.float32)
    embeddings[:150] += 3.0  # the large group's members are each other's nearest neighbours
    mined = mined_negatives(records, embeddings, k=4, chunk=128)
    assert [[c.product_id for c in n] for n in mined] == _brute_force_mined(records, embeddings, 4)


@pytest.mark.parametrize("search", ["hnsw", "ivf"])
def test_approximate_mining_finds_nearly_the_exact_neighbours_on_clustered_embeddings(search):
    rng = np.random.default_rng(1)
    records = _big_catalog(2000, groups_of=2)
    centres = rng.standard_normal((40, 16))
    embeddings = (centres[np.arange(2000) % 40] + 0.3 * rng.standard_normal((2000, 16))).astype(np.float32)
    exact = _brute_force_mined(records, embeddings, 4)
    approximate = [[c.product_id for c in n] for n in mined_negatives(records, embeddings, k=4, search=search)]
    found = sum(len(set(a) & set(e)) for a, e in zip(approximate, exact, strict=True)) / (4 * len(records))
    assert found >= 0.95, found
    assert all(r.group_id not in {f"g{int(p[1:]) // 2}" for p in a} for r, a in zip(records, approximate, strict=True))


def test_no_negatives_asked_or_no_products_give_empty_lists():
    records = _catalog()
    assert category_negatives(records, k=0) == [[] for _ in records]
    assert mined_negatives(records, np.eye(len(records)), k=0) == [[] for _ in records]
    assert mined_negatives([], np.zeros((0, 4)), k=3) == []


def test_ivf_mining_on_random_embeddings_finds_most_exact_negatives_never_the_own_group():
    rng = np.random.default_rng(2)
    records = _big_catalog(6000, groups_of=3)
    embeddings = rng.standard_normal((6000, 16)).astype(np.float32)
    exact = [[c.product_id for c in n] for n in mined_negatives(records, embeddings, k=3)]
    ivf = [[c.product_id for c in n] for n in mined_negatives(records, embeddings, k=3, search="ivf")]
    # 6000 products make 60 lists, 32 are probed (MINING_NPROBE): no structure to exploit, yet nearly all
    found = sum(len(set(a) & set(e)) for a, e in zip(ivf, exact, strict=True)) / (3 * len(records))
    assert found >= 0.95, found
    assert all(len(n) == 3 and r.group_id not in {f"g{int(p[1:]) // 3}" for p in n}
               for r, n in zip(records, ivf, strict=True))  # fmt: skip


@pytest.mark.parametrize("cap", [0, 300])
def test_ivf_mining_stops_scanning_lists_at_max_codes_and_still_fills_every_row(monkeypatch, cap):
    import faiss

    monkeypatch.setattr(negatives, "MINING_MAX_CODES", cap)  # 0: faiss's "no cap"
    records = _big_catalog(20_000, groups_of=3)
    embeddings = np.random.default_rng(3).standard_normal((20_000, 16)).astype(np.float32)
    faiss.cvar.indexIVF_stats.reset()
    mined = mined_negatives(records, embeddings, k=3, search="ivf")
    codes = faiss.cvar.indexIVF_stats.ndis / faiss.cvar.indexIVF_stats.nq
    # 200 lists of about 100, 32 probed: about 3,200 codes per product, unless the cap ends the scan
    assert codes > 3_000 if cap == 0 else codes <= cap, codes
    assert all(len(n) == 3 and r.group_id not in {f"g{int(p.product_id[1:]) // 3}" for p in n}
               for r, n in zip(records, mined, strict=True))  # fmt: skip


def test_the_mining_searches_are_the_command_lines_choices_and_others_are_refused():
    prepare = next(a for a in build_parser()._subparsers._group_actions[0].choices["prepare-data"]._actions
                   if a.dest == "mine_search")  # fmt: skip
    assert tuple(prepare.choices) == MINING_SEARCHES and "ivf" in MINING_SEARCHES
    with pytest.raises(ValueError, match="mining search"):
        check_mining_search("annoy")
