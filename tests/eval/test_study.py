"""The study's tasks: every query kind against the held-out products, street photo -> category, and the
baselines beside them, on real products with the tiny model."""

import numpy as np
import pytest
from helpers import FASHION_CATALOG, STREET_PHOTOS

from moon_swift.data import read_fashion_catalog
from moon_swift.data.records import ProductRecord
from moon_swift.data.study import RETRIEVAL_TASKS, HeldOutQuery, build_study_data
from moon_swift.eval.encode import ProductEncoder
from moon_swift.eval.study import _category_outcome, baseline_metrics, study_metrics, study_outcomes


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    records = read_fashion_catalog(FASHION_CATALOG, limit=48)
    return build_study_data(records, STREET_PHOTOS, tmp_path_factory.mktemp("study"), val_fraction=0.25)


def test_every_task_is_reported_for_the_model_and_the_image_tasks_for_the_thumbnail(study, tiny_moon_dir):
    encoder = ProductEncoder(str(tiny_moon_dir), batch_size=8)
    metrics = study_metrics(study_outcomes(encoder, study.val, study.queries))
    for task in RETRIEVAL_TASKS:
        assert f"retrieval/{task}->product/recall@10" in metrics
    assert {"street/photo->category/hit@1", "classification/level3/accuracy", "attributes/gender/accuracy"} <= set(
        metrics)  # fmt: skip
    baselines = baseline_metrics(study.val, study.train, study.queries, boxes=None)
    thumbnail = baselines["thumbnail match"]
    assert {key.split("/")[1] for key in thumbnail} == {"photo->product", "multimodal->product", "product->product",
                                                        "photo->category"}  # fmt: skip
    chance = baselines["chance"]
    assert chance["retrieval/photo->product/recall@1"] == pytest.approx(1 / len(study.val))
    assert set(baselines["majority class"]) == {k for k in chance if k.startswith(("classification", "attributes"))}


def test_street_photo_to_category_counts_the_nearest_products_of_the_photos_categories():
    catalog = [ProductRecord(str(i), "", [], ["Apparel", "Topwear", leaf]) for i, leaf in
               enumerate(["Tshirts", "Shirts", "Jeans", "Tshirts"])]  # fmt: skip
    vectors = np.eye(4, dtype=np.float32)
    queries = [HeldOutQuery("street photo", image="a.jpg", label="t-shirt"),
               HeldOutQuery("street photo", image="b.jpg", label="pants")]  # fmt: skip
    near = np.array([[0.9, 0.1, 0.0, 0.5], [0.8, 0.0, 0.6, 0.0]], dtype=np.float32)  # t-shirt: 0, 3 | pants: 0, 2
    metrics = _category_outcome(near, vectors, queries, catalog).metrics()
    assert metrics["hit@1"] == 0.5  # the t-shirt photo's nearest is a Tshirt, the pants photo's is not
    assert metrics["precision@10"] == pytest.approx((2 / 4 + 1 / 4) / 2)  # 4 products: k = 4
