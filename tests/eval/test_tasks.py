import numpy as np
from helpers import FASHION_CATALOG

from moon_swift.data import read_fashion_catalog
from moon_swift.eval.encode import ProductEncoder
from moon_swift.eval.report import flatten, format_side_by_side
from moon_swift.eval.tasks import attribute_prediction, retrieval, zero_shot_classification


def test_retrieval_finds_identical_vectors():
    catalog = np.eye(8, dtype=np.float32)
    metrics = retrieval(catalog[[3, 5]], catalog, [3, 5])
    assert metrics["recall@1"] == 1.0 and metrics["mrr"] == 1.0 and metrics["ndcg@10"] == 1.0


def test_classification_and_attribute_tasks_on_real_products(tiny_moon_dir):
    records = read_fashion_catalog(FASHION_CATALOG, limit=24)
    encoder = ProductEncoder(str(tiny_moon_dir), batch_size=8)
    products = encoder.encode_products(records, with_fields=False, progress=False)
    classes = zero_shot_classification(encoder, products, records)
    assert set(classes) == {"level1", "level2", "level3"}
    assert classes["level3"]["classes"] == len({r.category_path[2] for r in records})
    assert all(0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["macro_f1"] <= 1.0 for m in classes.values())
    attributes = attribute_prediction(encoder, products, records)
    assert "baseColour" in attributes and attributes["baseColour"]["products"] == 24
    table = format_side_by_side({"tiny": flatten({"classification": classes, "attributes": attributes})})
    assert "classification/level1/accuracy" in table and "attributes/baseColour/macro_f1" in table
