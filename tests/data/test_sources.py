import json

import pytest
from helpers import write_generic_catalog

from moon_swift.core.errors import MoonInputError
from moon_swift.data.sources import load_products
from moon_swift.data.swift_rows import read_records, write_records


def test_every_format_loads_through_one_entry_point_with_limit_and_pairs(tmp_path):
    catalog, pairs = write_generic_catalog(tmp_path)
    records, found = load_products(str(catalog), "generic", pairs=str(pairs))
    assert [r.product_id for r in records] == ["P0", "P1", "P2", "P3"] and len(found) == 3
    write_records(records, tmp_path / "products.jsonl")
    again, none = load_products(str(tmp_path / "products.jsonl"), "records", limit=3)
    assert [r.product_id for r in again] == ["P0", "P1", "P2"] and none == []


def test_unknown_format_and_missing_or_broken_records_files_are_named(tmp_path):
    with pytest.raises(MoonInputError, match="unknown catalog format 'csv'"):
        load_products(str(tmp_path), "csv")
    with pytest.raises(MoonInputError, match="products file does not exist"):
        read_records(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"product_id": "a", "title": "t", "images": []}) + "\n{not json\n")
    with pytest.raises(MoonInputError, match=f"file {broken}, row 2: not a product record"):
        read_records(broken)
