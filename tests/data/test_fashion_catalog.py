import csv
import logging
import shutil

import pytest
from helpers import FASHION_CATALOG

from moon_swift.core.errors import MoonInputError
from moon_swift.data import read_fashion_catalog


def test_reads_real_catalog_rows_into_product_records():
    records = read_fashion_catalog(FASHION_CATALOG, limit=50)
    assert len(records) == 50
    first = records[0]
    assert first.product_id == "10002" and first.title == "Palm Tree Kids Sp Jema Skt Blue Skirts"
    assert first.category_path == ["Apparel", "Bottomwear", "Skirts"]
    assert first.attributes["baseColour"] == "Blue" and first.attributes["gender"] == "Women"
    assert first.images[0].endswith("images/10002.jpg")


@pytest.fixture
def broken_catalog(tmp_path):
    """A copy of 6 real rows where rows 3..6 (file rows) are broken in four different ways."""
    with (FASHION_CATALOG / "products.csv").open() as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames, [next(reader) for _ in range(6)]
    (tmp_path / "images").mkdir()
    for row in rows:
        shutil.copy(FASHION_CATALOG / row["image"], tmp_path / row["image"])
    rows[1]["image"] = "images/missing.jpg"  # file row 3
    rows[2]["productDisplayName"] = "  "  # file row 4
    rows[3]["id"] = rows[0]["id"]  # file row 5: duplicate id
    (tmp_path / rows[4]["image"]).write_bytes(b"")  # file row 6: 0-byte image
    with (tmp_path / "products.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path, [rows[0]["id"], rows[5]["id"]]


def test_bad_row_stops_with_file_row_and_field(broken_catalog):
    broken_catalog, _ = broken_catalog
    with pytest.raises(MoonInputError) as error:
        read_fashion_catalog(broken_catalog)
    assert error.value.row == 3 and error.value.field == "image"
    assert str(broken_catalog / "products.csv") in str(error.value) and "does not exist" in str(error.value)


def test_skip_policy_counts_every_skipped_row(broken_catalog, caplog):
    broken_catalog, good_ids = broken_catalog
    with caplog.at_level(logging.INFO, logger="moon_swift"):
        records = read_fashion_catalog(broken_catalog, on_bad_row="skip")
    assert [r.product_id for r in records] == good_ids
    summary = caplog.text
    assert "skipped 4 of 6 rows" in summary
    assert "bad image: 2" in summary and "empty title: 1" in summary and "duplicate id: 1" in summary


def test_missing_catalog_file_is_named(tmp_path):
    with pytest.raises(MoonInputError, match="products.csv"):
        read_fashion_catalog(tmp_path)
