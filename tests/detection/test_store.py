import json
import shutil
from pathlib import Path

import pytest
from helpers import FASHION_CATALOG, STREET_PHOTOS
from PIL import Image

from moon_swift.core.errors import MoonInputError
from moon_swift.detection.selection import BoxPolicy, crop
from moon_swift.detection.store import BoxStore, detect_images

STREET = sorted((STREET_PHOTOS / "train" / "shirt").glob("*.jpg"))


def copy_images(target: Path, count: int, start: int = 0) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, target / path.name)) for path in STREET[start : start + count]]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rerun_only_detects_new_images(counting_detector, tmp_path):
    out = tmp_path / "boxes.jsonl"
    first = copy_images(tmp_path / "img", 3)
    report = detect_images(counting_detector, first, out_jsonl=out, batch_size=2, progress=False)
    assert (report.detected, report.cache_hits, counting_detector.images_seen) == (3, 0, 3)
    more = first + copy_images(tmp_path / "img", 2, start=3)
    report = detect_images(counting_detector, more, out_jsonl=out, batch_size=2, progress=False)
    assert (report.detected, report.cache_hits, counting_detector.images_seen) == (2, 3, 5)
    stored = lines(out)
    assert len(stored) == 5 and {line["image"] for line in stored} == set(map(str, more))
    line = stored[0]
    assert set(line) >= {"sha256", "image", "width", "height", "boxes", "scores", "fallback", "reason", "detector",
                         "policy"}  # fmt: skip
    assert line["detector"]["fingerprint"] == counting_detector.fingerprint
    assert line["policy"] == BoxPolicy().to_dict()
    assert (line["width"], line["height"]) == Image.open(first[0]).size


def test_renamed_and_duplicated_files_are_detected_once(counting_detector, tmp_path):
    (original,) = copy_images(tmp_path / "a", 1)
    duplicate = tmp_path / "b" / "copy.jpg"
    duplicate.parent.mkdir()
    shutil.copy(original, duplicate)
    out = tmp_path / "boxes.jsonl"
    report = detect_images(counting_detector, [original, duplicate], out_jsonl=out, progress=False)
    assert (report.detected, report.duplicates, counting_detector.images_seen) == (1, 1, 1)
    renamed = tmp_path / "renamed.jpg"
    original.rename(renamed)
    report = detect_images(counting_detector, [renamed], out_jsonl=out, progress=False)
    assert (report.detected, report.cache_hits, counting_detector.images_seen) == (0, 1, 1)
    store = BoxStore(out)
    assert store.lookup(renamed) == store.lookup(duplicate) == store.lookup(renamed.read_bytes())
    assert store.lookup(renamed) is not None and len(store) == 1


def test_a_new_policy_or_detector_detects_again_and_the_newest_line_wins(
    counting_detector, tmp_path, make_random_checkpoint
):
    images = copy_images(tmp_path / "img", 2)
    out = tmp_path / "boxes.jsonl"
    detect_images(counting_detector, images, BoxPolicy(margin=0.05), out, progress=False)
    report = detect_images(counting_detector, images, BoxPolicy(margin=0.2), out, progress=False)
    assert (report.detected, report.cache_hits, counting_detector.images_seen) == (2, 0, 4)
    assert BoxStore(out).entry(images[0])["policy"]["margin"] == 0.2
    other = type(counting_detector)(counting_detector.config_path, make_random_checkpoint(tmp_path / "o.pth", seed=1))
    report = detect_images(other, images, BoxPolicy(margin=0.2), out, progress=False)
    assert (report.detected, other.images_seen) == (2, 2)
    assert (
        BoxStore(out).entry(images[1])["detector"]["fingerprint"] == other.fingerprint != counting_detector.fingerprint
    )
    assert len(lines(out)) == 6


def test_lookup_is_cheap_and_follows_file_changes(counting_detector, tmp_path):
    images = copy_images(tmp_path / "img", 2)
    out = tmp_path / "boxes.jsonl"
    detect_images(counting_detector, images[:1], out_jsonl=out, progress=False)
    store = BoxStore(out)
    assert store.lookup(images[0]) is not None and store.lookup(images[1]) is None
    assert store.lookup(b"bytes of an image never seen") is None
    shutil.copy(images[1], images[0])  # new content under the old name: a new hash, not the stale entry
    assert store.lookup(images[0]) is None
    with pytest.raises(MoonInputError, match="does not exist"):
        store.lookup(tmp_path / "missing.jpg")


def bad_images(root: Path) -> dict[str, Path]:
    root.mkdir()
    good = Path(STREET[0]).read_bytes()
    files = {"empty": b"", "truncated": good[: len(good) // 3], "garbage": b"this is not an image" * 20}
    paths = {}
    for name, data in files.items():
        paths[name] = root / f"{name}.jpg"
        paths[name].write_bytes(data)
    paths["missing"] = root / "missing.jpg"
    return paths


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "0 bytes"),
        ("truncated", "cannot be read"),
        ("garbage", "cannot be read"),
        ("missing", "does not exist"),
    ],
)
def test_bad_images_stop_the_run_by_default(counting_detector, tmp_path, kind, message):
    path = bad_images(tmp_path / "bad")[kind]
    with pytest.raises(MoonInputError, match=f"{path.name}.*{message}"):
        detect_images(counting_detector, [path], out_jsonl=tmp_path / "boxes.jsonl", progress=False)


def test_bad_images_are_skipped_and_counted_with_skip(counting_detector, tmp_path, monkeypatch):
    paths = bad_images(tmp_path / "bad")
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (2000, 2000), "white").save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # PIL refuses > 2x this: a decompression bomb
    good = copy_images(tmp_path / "img", 1)
    out = tmp_path / "boxes.jsonl"
    report = detect_images(counting_detector, [*paths.values(), bomb, *good], out_jsonl=out, progress=False,
                           on_bad_image="skip")  # fmt: skip
    assert report.skipped == 5 and report.detected == 1 and counting_detector.images_seen == 1
    assert report.bad == {"image file is empty": 1, "image cannot be read": 2, "missing file": 1,
                          "image is too large to decode safely": 1}  # fmt: skip
    assert "bad images skipped: 5" in report.summary()
    assert [line["image"] for line in lines(out)] == [str(good[0])]


def test_tiny_images_keep_the_full_image_without_detection(counting_detector, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (20, 40), "red").save(tiny)
    report = detect_images(counting_detector, [tiny], out_jsonl=tmp_path / "boxes.jsonl", progress=False)
    assert (report.tiny, report.detected, report.fallbacks, counting_detector.images_seen) == (1, 0, 1, 0)
    selection = BoxStore(tmp_path / "boxes.jsonl").lookup(tiny)
    assert selection.fallback and selection.boxes == [[0, 0, 20, 40]]
    assert selection.reason.startswith("image smaller than 32 px (20x40)")


def test_every_image_mode_and_exif_rotation(counting_detector, tmp_path):
    photo = Image.open(FASHION_CATALOG / "images" / "10002.jpg").convert("RGB").resize((96, 64))
    files = {}
    for mode in ("L", "RGBA", "CMYK", "P", "LA", "I;16"):
        files[mode] = tmp_path / f"{mode.replace(';', '')}.{'jpg' if mode in ('L', 'CMYK') else 'png'}"
        photo.convert(mode).save(files[mode])
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees: 64 x 96 upright
    files["exif"] = tmp_path / "exif.jpg"
    photo.save(files["exif"], exif=exif)
    out = tmp_path / "boxes.jsonl"
    report = detect_images(counting_detector, list(files.values()), out_jsonl=out, progress=False)
    assert report.detected == len(files) and report.skipped == 0
    store = BoxStore(out)
    sizes = {mode: (store.lookup(path).width, store.lookup(path).height) for mode, path in files.items()}
    assert sizes == {**dict.fromkeys(files, (96, 64)), "exif": (64, 96)}
    for path in files.values():  # boxes lie inside the upright image
        selection = store.lookup(path)
        for x1, y1, x2, y2 in selection.boxes:
            assert 0 <= x1 < x2 <= selection.width and 0 <= y1 < y2 <= selection.height


def test_stored_selection_crops_the_image(bundled_detector, tmp_path):
    images = copy_images(tmp_path / "img", 2)
    out = tmp_path / "boxes.jsonl"
    detect_images(bundled_detector, images, BoxPolicy(score_threshold=0.0, margin=0.0), out, progress=False)
    selection = BoxStore(out).lookup(images[0])
    (piece,) = crop(Image.open(images[0]).convert("RGB"), selection)
    x1, y1, x2, y2 = selection.boxes[0]
    assert piece.size == (round(x2) - round(x1), round(y2) - round(y1))


def test_a_corrupt_store_line_is_reported(tmp_path):
    out = tmp_path / "boxes.jsonl"
    out.write_text('{"sha256": "ab", "width": 1}\nnot json\n')
    with pytest.raises(MoonInputError, match="row 2"):
        BoxStore(out)
