"""Photo queries composited from the catalog onto real street photos, as behaviour pairs."""

import json
from pathlib import Path

import numpy as np
from helpers import FASHION_CATALOG, STREET_PHOTOS
from PIL import Image

from moon_swift.data import read_fashion_catalog
from moon_swift.data.catalog_files import read_pairs
from moon_swift.data.photo_queries import short_text, write_photo_queries
from moon_swift.data.swift_rows import is_held_out
from moon_swift.detection.training.synth import split_of


def test_each_product_gets_a_photo_and_a_photo_plus_text_query_unlike_its_catalog_photo(tmp_path):
    records = read_fashion_catalog(FASHION_CATALOG, limit=40)
    report = write_photo_queries(records, STREET_PHOTOS, tmp_path, seed=3)
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    kept = len(records) - sum(report.skipped.values())
    assert report.queries == {"image": kept, "multimodal": kept} and len(pairs) == 2 * kept
    by_id = {r.product_id: r for r in records}
    for pair in pairs[:6]:
        query = np.asarray(Image.open(tmp_path / pair["query_image"]).convert("L").resize((64, 64)), dtype=float)
        catalog = np.asarray(Image.open(by_id[pair["product_id"]].images[0]).convert("L").resize((64, 64)), float)
        assert np.abs(query - catalog).mean() > 20  # a scene, not the studio shot
        assert ("query_text" in pair) == pair["query_image"].endswith("_multimodal.jpg")
    multimodal = next(p for p in pairs if "query_text" in p)
    assert multimodal["query_text"] == short_text(by_id[multimodal["product_id"]])  # e.g. "Blue Skirts"
    found = read_pairs(tmp_path / "pairs.jsonl", records)  # the format prepare-data and eval read
    assert len(found) == len(pairs) and all(p.query_image and (tmp_path / "images").is_dir() for p in found)


def test_held_out_products_are_queried_on_backgrounds_no_training_query_uses(tmp_path):
    records = read_fashion_catalog(FASHION_CATALOG, limit=60)
    write_photo_queries(records, STREET_PHOTOS, tmp_path, kinds=["image"], val_fraction=0.3)
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    split_of_pair = {"val" if is_held_out(p["product_id"], 0.3) else "train" for p in pairs}
    assert split_of_pair == {"train", "val"}
    backgrounds = {
        split: {p["background"] for p in pairs if ("val" if is_held_out(p["product_id"], 0.3) else "train") == split}
        for split in ("train", "val")
    }
    assert backgrounds["train"] and backgrounds["val"] and not backgrounds["train"] & backgrounds["val"]
    assert all(split_of(f"background:{Path(b).stem}", 0.3) == "val" for b in backgrounds["val"])
