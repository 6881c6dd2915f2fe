"""`--dataset moon-fashion-dev:<kinds>` through swift's own dataset loader (a fresh process: the
catalog location is read when swift.dataset is imported)."""

import json
import os
import subprocess
import sys

from helpers import FASHION_CATALOG

from moon_swift.data import read_fashion_catalog, split_records

PROBE = """
import json
from swift.dataset import load_dataset
train, _ = load_dataset(['moon-fashion-dev:title/category'], split_dataset_ratio=0)
print(json.dumps({'rows': len(train), 'first': train[0]['messages'][0]['content'],
                  'products': sorted({json.dumps(r['positive_images']) for r in train})}))
"""


def test_fashion_dataset_yields_catalog_pairs_for_training_products_only():
    env = {**os.environ, "MOON_FASHION_CATALOG": str(FASHION_CATALOG)}
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    train, held_out = split_records(read_fashion_catalog(FASHION_CATALOG, on_bad_row="skip"), 0.1)
    assert report["rows"] == 2 * len(train)  # one title and one category pair per training product
    assert report["first"] == train[0].title
    served_images = {image for products in report["products"] for group in json.loads(products) for image in group}
    assert not served_images & {image for r in held_out for image in r.images}
