import json
import shutil

import pytest
from helpers import FASHION_CATALOG

from moon_swift.core.errors import MoonInputError
from moon_swift.data.image_lists import dataset_images

NAMES = ["10002.jpg", "10005.jpg", "10008.jpg", "10011.jpg"]


@pytest.fixture
def images(tmp_path):
    (tmp_path / "img").mkdir()
    return [str(shutil.copy(FASHION_CATALOG / "images" / name, tmp_path / "img" / name)) for name in NAMES]


def test_swift_rows_give_every_anchor_positive_and_negative_image(tmp_path, images):
    rows = [
        {"messages": [{"role": "user", "content": "<image>q"}], "images": [images[0]],
         "positive_messages": [[{"role": "user", "content": "<image>p"}]], "positive_images": [[images[1]]],
         "negative_messages": [[{"role": "user", "content": "<image>n"}]] * 2,
         "negative_images": [[images[2]], [images[3]]]},
        {"messages": [{"role": "user", "content": "text only"}], "positive_images": [[{"path": "img/10005.jpg"}]]},
    ]  # fmt: skip
    data = tmp_path / "sub" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    # relative paths: from the working directory when they exist there, else beside the data file
    (data.parent / "img").mkdir()
    shutil.copy(images[1], data.parent / "img" / "10005.jpg")
    assert dataset_images([data]) == [*images, str(data.parent / "img" / "10005.jpg")]


def test_products_jsonl_csv_and_directories(tmp_path, images):
    products = tmp_path / "products.jsonl"
    products.write_text(json.dumps({"product_id": "P0", "images": images[:2]}) + "\n")
    table = tmp_path / "products.csv"
    table.write_text("id,image\n1,img/10008.jpg\n2,img/10011.jpg\n")
    assert dataset_images([products]) == images[:2]
    assert dataset_images([table]) == [str(tmp_path / "img" / n) for n in NAMES[2:]]
    assert dataset_images([tmp_path / "img", products]) == sorted(images)  # each path once


def test_bad_datasets_are_clear_errors(tmp_path):
    with pytest.raises(MoonInputError, match="dataset not found"):
        dataset_images([tmp_path / "nope.jsonl"])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"images": ["a.jpg"]}\n{oops\n')
    with pytest.raises(MoonInputError, match="row 2"):
        dataset_images([broken])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MoonInputError, match="no images"):
        dataset_images([empty])


def test_behaviour_pairs_give_their_query_photos(tmp_path, images):
    pairs = tmp_path / "val_pairs.jsonl"
    pairs.write_text(json.dumps({"query_image": images[0], "query_text": "blue", "product_id": "1"}) + "\n"
                     + json.dumps({"query_text": "only text", "product_id": "2"}) + "\n")  # fmt: skip
    assert dataset_images([pairs]) == [images[0]]
