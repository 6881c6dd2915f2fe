import json
import os
import shutil

import pytest
from helpers import STREET_PHOTOS

from moon_swift.core.errors import MoonInputError
from moon_swift.detection import box_index
from moon_swift.detection.box_index import BoxIndex, index_dir
from moon_swift.detection.selection import BoxPolicy
from moon_swift.detection.store import BoxStore, detect_images


def line(sha: str, fingerprint: str, width: int) -> str:
    return json.dumps({"sha256": sha, "image": f"{sha[:4]}.jpg", "width": width, "height": 10, "boxes": [],
                       "scores": [], "fallback": True, "reason": "r", "detector": {"fingerprint": fingerprint},
                       "policy": {}})  # fmt: skip


def hand_store(tmp_path, rows: list[tuple[str, str, int]]):
    path = tmp_path / "boxes.jsonl"
    path.write_text("".join(line(*row) + "\n" for row in rows) + "\n")  # a trailing blank line is allowed
    return path


A, B, C = "a" * 64, "0" * 63 + "1", "0" * 63 + "2"  # B and C share their first 64 bits


def test_the_index_answers_what_the_parsed_store_answers_and_later_lines_win(tmp_path):
    path = hand_store(tmp_path, [(A, "old", 1), (B, "old", 2), (C, "old", 3), (A, "new", 4)])
    index, store = BoxIndex(path), BoxStore(path)
    assert len(index) == len(store) == 3 and index.meta["lines"] == 4
    for sha in (A, B, C):
        assert index.entry_sha256(sha) == store.entries[sha]
        assert index.lookup_sha256(sha) == store.lookup_sha256(sha)
    assert index.entry_sha256(A)["width"] == 4  # the re-detected line
    assert index.detector_fingerprints() == store.detector_fingerprints() == {"old", "new"}
    assert index.first_entry() == store.first_entry()
    assert index.entry_sha256("f" * 64) is None and "f" * 64 not in index and "not hex" not in index


def test_a_grown_store_is_indexed_again_and_a_fresh_index_is_only_opened(tmp_path, monkeypatch):
    path = hand_store(tmp_path, [(A, "x", 1)])
    BoxIndex(path)
    with path.open("a") as file:
        file.write(line(B, "x", 2) + "\n")
    assert BoxIndex(path).entry_sha256(B)["width"] == 2  # stale (size, mtime): rebuilt

    def no_scan(store):
        raise AssertionError("a fresh index must be opened, not rebuilt")

    monkeypatch.setattr(box_index, "build_box_index", no_scan)
    assert BoxIndex(path).entry_sha256(B)["width"] == 2


def test_an_unwritable_folder_indexes_in_memory_with_a_warning(tmp_path, monkeypatch, caplog):
    path = hand_store(tmp_path, [(A, "x", 1)])

    def refuse(store):
        raise PermissionError(f"read-only: {store}")

    monkeypatch.setattr(box_index, "write_box_index", refuse)
    with caplog.at_level("WARNING", logger="moon_swift.detection"):
        assert BoxIndex(path).entry_sha256(A)["width"] == 1
    assert "in memory" in caplog.text and not index_dir(path).exists()


@pytest.mark.parametrize("text, message", [("{not json\n", "not a box store line"),
                                           (json.dumps({"sha256": "abcd"}) + "\n", "not a sha256")])  # fmt: skip
def test_a_bad_line_names_the_store_and_its_row(tmp_path, text, message):
    path = tmp_path / "boxes.jsonl"
    path.write_text(line(A, "x", 1) + "\n" + text)
    with pytest.raises(MoonInputError, match=message) as error:
        BoxIndex(path)
    assert error.value.row == 2 and str(path) in str(error.value)


def test_detect_leaves_a_fresh_index_beside_the_store(counting_detector, tmp_path, monkeypatch):
    images = [shutil.copy(p, tmp_path / p.name) for p in sorted((STREET_PHOTOS / "train" / "shirt").glob("*.jpg"))[:2]]
    out = tmp_path / "boxes.jsonl"
    detect_images(counting_detector, images, BoxPolicy(), out, progress=False)
    monkeypatch.setattr(box_index, "build_box_index", lambda store: pytest.fail("detect left no fresh index"))
    index, store = BoxIndex(out), BoxStore(out)
    assert len(index) == 2 and {os.path.basename(p) for p in os.listdir(index_dir(out))} >= {"meta.json"}
    assert all(index.lookup_sha256(sha) == store.lookup_sha256(sha) for sha in store.entries)
