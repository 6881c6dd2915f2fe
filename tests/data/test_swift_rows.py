import json

from moon_swift.data import (
    ProductRecord,
    read_records,
    split_records,
    title_to_product_rows,
    write_jsonl,
    write_records,
)
from moon_swift.data.swift_rows import product_content


def _records(n):
    return [ProductRecord(str(i), f"title {i}", [f"/img/{i}a.jpg", f"/img/{i}b.jpg"], ["A", "B"]) for i in range(n)]


def test_product_content_marks_category_and_attributes():
    record = ProductRecord("1", "Blue Tee", ["/a.jpg"], ["Apparel", "Tshirts"], {"colour": "Blue", "gender": "Men"})
    assert product_content(record) == (
        "<group_id>1</group_id><image>Blue Tee\n<category>Apparel > Tshirts</category>\n"
        "<attributes>colour: Blue; gender: Men</attributes>"
    )
    plain = ProductRecord("2", "Plain", ["/b.jpg"], group_id="G7")
    assert product_content(plain, with_title=False) == "<group_id>G7</group_id><image>"


def test_rows_are_in_swift_embedding_format_with_every_product_image(tmp_path):
    rows = list(title_to_product_rows(_records(2)))
    assert rows[0] == {
        "messages": [{"role": "user", "content": "title 0"}],
        "positive_messages": [
            [{"role": "user", "content": "<group_id>0</group_id><image><image><category>A > B</category>"}]
        ],
        "positive_images": [["/img/0a.jpg", "/img/0b.jpg"]],
    }
    assert write_jsonl(rows, tmp_path / "rows.jsonl") == 2
    assert json.loads((tmp_path / "rows.jsonl").read_text().splitlines()[1]) == rows[1]


def test_split_is_by_product_id_and_stable():
    records = _records(400)
    train, val = split_records(records, 0.1)
    assert len(train) + len(val) == 400 and 20 < len(val) < 60
    assert {r.product_id for r in train}.isdisjoint(r.product_id for r in val)
    _, val_reversed = split_records(records[::-1], 0.1)
    assert sorted(r.product_id for r in val_reversed) == sorted(r.product_id for r in val)


def test_records_round_trip(tmp_path):
    records = _records(3)
    write_records(records, tmp_path / "p.jsonl")
    assert read_records(tmp_path / "p.jsonl") == records


def test_catalog_pair_kinds_give_title_image_and_category_queries():
    from moon_swift.data.swift_rows import catalog_rows

    record = ProductRecord("7", "Blue Tee", ["/a.jpg", "/b.jpg"], ["Apparel", "Tshirts"], {"colour": "Blue"})
    title, image, category = catalog_rows([record], ("title", "image", "category"))
    assert (
        title["messages"][0]["content"] == "Blue Tee" and "Blue Tee" not in title["positive_messages"][0][0]["content"]
    )
    assert image["messages"][0]["content"] == "<image>" and image["images"] == ["/a.jpg"]
    assert "Blue Tee" in image["positive_messages"][0][0]["content"]  # the full product
    assert category["messages"][0]["content"] == "Apparel > Tshirts"
    assert "<category>" not in category["positive_messages"][0][0]["content"]  # the answer is not in the product
    assert image["positive_images"] == [["/a.jpg", "/b.jpg"]]


def test_behaviour_rows_point_queries_at_the_full_product():
    from moon_swift.data.catalog_files import QueryPair
    from moon_swift.data.swift_rows import behaviour_rows

    record = ProductRecord("7", "Blue Tee", ["/a.jpg"], ["Apparel"])
    negative = ProductRecord("8", "Red Tee", ["/r.jpg"], ["Apparel"])
    pairs = [QueryPair("7", query_text="blue t-shirt"), QueryPair("7", query_image="/photo.jpg")]
    text_row, image_row = behaviour_rows(pairs, {"7": record}, {"7": [negative]})
    assert text_row["messages"][0]["content"] == "blue t-shirt" and "images" not in text_row
    assert image_row["messages"][0]["content"] == "<image>" and image_row["images"] == ["/photo.jpg"]
    assert "Blue Tee" in text_row["positive_messages"][0][0]["content"]
    assert text_row["negative_images"] == [["/r.jpg"]]


def test_with_hard_negatives_a_product_without_any_still_has_the_negative_columns():
    from moon_swift.data.swift_rows import catalog_rows

    records = _records(3)
    rows = list(catalog_rows(records, ("title",), negatives=[[records[1]], [], [records[0]]]))
    assert [len(row["negative_messages"]) for row in rows] == [1, 0, 1]  # swift reads a missing column as None
    assert rows[1]["negative_images"] == []
    assert "negative_messages" not in next(catalog_rows(records, ("title",)))  # no hard negatives asked for
