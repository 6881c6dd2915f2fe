import json
import logging
import shutil

import pytest
from helpers import FASHION_CATALOG

from moon_swift.core.errors import MoonInputError
from moon_swift.data.catalog_files import parse_attributes, read_catalog, read_pairs
from moon_swift.data.mbe import read_mbe


@pytest.fixture
def photos(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("10002.jpg", "10005.jpg", "10008.jpg"):
        shutil.copy(FASHION_CATALOG / "images" / name, tmp_path / "img" / name)
    return tmp_path


def test_generic_csv_catalog_and_jsonl_pairs(photos):
    (photos / "catalog.csv").write_text(
        "product_id,title,images,category_path,attributes,group_id\n"
        'A1,Blue Skirt,img/10002.jpg;img/10005.jpg,Apparel > Skirts,"colour: Blue; gender: Women",G1\n'
        'B2,Grey Tee,"[""img/10008.jpg""]","[""Apparel"", ""Tshirts""]","{""colour"": ""Grey""}",\n'
    )
    records = read_catalog(photos / "catalog.csv")
    assert [r.product_id for r in records] == ["A1", "B2"]
    assert len(records[0].images) == 2 and records[0].images[1].endswith("img/10005.jpg")
    assert records[0].category_path == ["Apparel", "Skirts"] and records[0].group_id == "G1"
    assert records[1].attributes == {"colour": "Grey"} and records[1].group_id is None
    pairs_file = photos / "pairs.jsonl"
    pairs_file.write_text(
        json.dumps({"query_text": "blue skirt", "product_id": "A1"}) + "\n"
        + json.dumps({"query_image": "img/10008.jpg", "product_id": "B2"}) + "\n"
    )  # fmt: skip
    pairs = read_pairs(pairs_file, records)
    assert [(p.product_id, p.query_text) for p in pairs] == [("A1", "blue skirt"), ("B2", None)]


def test_pairs_pointing_outside_the_catalog_are_bad_rows(photos, caplog):
    (photos / "catalog.jsonl").write_text(json.dumps({"product_id": "A", "title": "t", "images": ["img/10002.jpg"]}))
    records = read_catalog(photos / "catalog.jsonl")
    (photos / "pairs.jsonl").write_text(
        json.dumps({"query_text": "q", "product_id": "Z"}) + "\n" + json.dumps({"product_id": "A"}) + "\n"
    )
    with pytest.raises(MoonInputError, match=r"row 1, field 'product_id': product 'Z' is not in the catalog"):
        read_pairs(photos / "pairs.jsonl", records)
    with caplog.at_level(logging.INFO, logger="moon_swift"):
        assert read_pairs(photos / "pairs.jsonl", records, on_bad_row="skip") == []
    assert "skipped 2 of 2 rows (unknown product: 1, empty query: 1)" in caplog.text


def test_catalog_bad_rows_are_located(photos):
    (photos / "catalog.jsonl").write_text(
        json.dumps({"product_id": "A", "title": "t", "images": ["img/10002.jpg"]}) + "\n"
        + json.dumps({"product_id": "A", "title": "dup", "images": ["img/10002.jpg"]}) + "\n"
    )  # fmt: skip
    with pytest.raises(MoonInputError, match=r"row 2, field 'product_id': duplicate product id 'A'"):
        read_catalog(photos / "catalog.jsonl")


def test_attribute_text_forms():
    assert parse_attributes("colour: Blue; size:  M ") == {"colour": "Blue", "size": "M"}
    with pytest.raises(ValueError, match="expected 'name: value"):
        parse_attributes("just words")


def test_mbe_layout_with_missing_levels_queries_and_unknown_fields(photos, caplog):
    rows = [
        {"doc_id": "n1", "doc_title": "Running shoes", "doc_image": "img/10002.jpg", "doc_industry_name": "Sports",
         "doc_cate1_name": "Shoes", "doc_cate2_name": "", "doc_cate3_name": "Running",
         "doc_attributes": "colour:White;brand:Acme", "query": "white running shoes", "click_count": 3},
        {"doc_id": "n1", "doc_title": "Running shoes", "doc_image": "img/10002.jpg", "query": "acme runners"},
        {"doc_id": "n2", "doc_title": "", "doc_image": "img/10005.jpg"},
    ]  # fmt: skip
    path = photos / "mbe_test.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(MoonInputError, match=r"row 3, field 'doc_title': empty title"):
        read_mbe(path)
    with caplog.at_level(logging.INFO, logger="moon_swift"):
        records, pairs = read_mbe(path, on_bad_row="skip")
    assert [r.product_id for r in records] == ["n1"]
    assert records[0].category_path == ["Sports", "Shoes", "Running"]
    assert records[0].attributes == {"colour": "White", "brand": "Acme"}
    assert [p.query_text for p in pairs] == ["white running shoes", "acme runners"]
    assert "skipped 1 of 3 rows (empty title: 1)" in caplog.text
    assert "fields not read by the MBE reader: click_count (1 rows)" in caplog.text
