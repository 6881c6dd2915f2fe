import json

import pytest

from moon_swift.core.errors import MoonInputError
from moon_swift.data.validate import check_embedding_jsonl


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_valid_rows_pass(tmp_path, catalog_images):
    row = {"messages": [{"role": "user", "content": "shirt"}],
           "positive_messages": [[{"role": "user", "content": "<image>"}]],
           "positive_images": [[str(catalog_images[0])]]}  # fmt: skip
    total, log = check_embedding_jsonl(_write(tmp_path / "ok.jsonl", [row, row]))
    assert (total, log.skipped) == (2, 0)


def test_every_kind_of_bad_row_is_located(tmp_path, catalog_images):
    good = str(catalog_images[0])
    rows = [
        "{not json",
        {"messages": []},
        {"messages": [{"role": "user", "content": ""}]},
        {"messages": [{"role": "user", "content": "q"}],
         "positive_messages": [[{"role": "user", "content": "<image>"}]], "positive_images": [["/missing.jpg"]]},
        {"messages": [{"role": "user", "content": "<image>"}], "images": [good, good]},
    ]  # fmt: skip
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(MoonInputError, match=r"row 1.*not valid JSON"):
        check_embedding_jsonl(path)
    total, log = check_embedding_jsonl(path, on_bad_row="skip")
    assert total == 5 and log.skipped == 5
    joined = "\n".join(log.examples)
    assert "row 4, field 'positive_images[0][0]'" in joined and "/missing.jpg" in joined
    assert "row 5, field 'images'" in joined and "2 images for 1 <image> tags" in joined
