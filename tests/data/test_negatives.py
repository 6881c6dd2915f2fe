import numpy as np

from moon_swift.data import ProductRecord
from moon_swift.data.negatives import category_negatives, mined_negatives


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
