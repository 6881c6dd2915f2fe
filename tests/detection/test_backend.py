from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FASHION_CATALOG, STREET_PHOTOS
from PIL import Image

from moon_swift.core.errors import MoonInputError
from moon_swift.detection.backend import BUNDLED_CHECKPOINT, BUNDLED_CONFIG, Detector, default_detector
from moon_swift.detection.selection import select_boxes
from moon_swift.detection.training.synth import build_dataset, core_boxes


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


@pytest.fixture(scope="module")
def composites(tmp_path_factory) -> tuple[Path, dict[str, list[float]]]:
    """16 held-out composites (val split: catalog photos and backgrounds the detector never saw)."""
    out = tmp_path_factory.mktemp("composites")
    files = build_dataset(FASHION_CATALOG, STREET_PHOTOS, out, num_val=16, seed=7, splits=("val",), max_catalog=40)
    return out, core_boxes(files["val"])


def test_bundled_detector_finds_the_core_product(bundled_detector, composites):
    root, truth = composites
    names = sorted(truth)
    found = bundled_detector.detect([root / name for name in names])
    assert bundled_detector.classes == ("product",)
    assert set(np.concatenate([d.labels for d in found]).tolist()) == {0}
    # the default policy's crop vs the pasted core product, on composites of held-out photos
    chosen = [select_boxes(d.boxes, d.scores, d.width, d.height).boxes[0] for d in found]
    ious = [iou(box, truth[name]) for box, name in zip(chosen, names, strict=True)]
    centre = [iou([0.2 * d.width, 0.2 * d.height, 0.8 * d.width, 0.8 * d.height], truth[name])
              for d, name in zip(found, names, strict=True)]  # fmt: skip
    assert np.median(ious) > 0.6 and np.mean(ious) > np.mean(centre) + 0.1, (ious, centre)


def test_default_detector_is_the_bundled_files():
    detector = default_detector()
    assert detector.config_path == BUNDLED_CONFIG and detector.checkpoint_path == BUNDLED_CHECKPOINT
    assert BUNDLED_CHECKPOINT.stat().st_size < 15e6
    assert set(torch.load(BUNDLED_CHECKPOINT, weights_only=True)) == {"state_dict", "meta"}


def test_boxes_are_in_original_pixels_and_batching_does_not_change_them(bundled_detector, composites):
    root, truth = composites
    paths = [root / name for name in sorted(truth)[:3]]
    one_by_one = bundled_detector.detect(paths, batch_size=1)
    batched = bundled_detector.detect(paths, batch_size=3)
    for a, b in zip(one_by_one, batched, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.5)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
    image = Image.open(paths[0]).convert("RGB")
    (small,), (large,) = (
        bundled_detector.detect([image]),
        bundled_detector.detect([image.resize((image.width * 2, image.height * 2))]),
    )
    assert (large.width, large.height) == (image.width * 2, image.height * 2)
    # the same network input either way (both are resized to 256 px): boxes scale with the image
    np.testing.assert_allclose(large.boxes[0], small.boxes[0] * 2, atol=4)


def test_paths_and_pil_images_agree_and_exif_rotation_is_applied(bundled_detector, composites, tmp_path):
    root, truth = composites
    path = root / sorted(truth)[0]
    upright = Image.open(path).convert("RGB")
    (from_path,), (from_pil,) = bundled_detector.detect([path]), bundled_detector.detect([upright])
    np.testing.assert_allclose(from_path.boxes, from_pil.boxes, atol=1e-3)
    # stored rotated, with EXIF orientation 6 ("rotate 90 CW to display"): detection sees the upright image
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif, quality=95)
    (found,) = bundled_detector.detect([rotated])
    assert (found.width, found.height) == upright.size
    assert iou(found.boxes[0], from_path.boxes[0]) > 0.8


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(MoonInputError, match="config file does not exist"):
        Detector(tmp_path / "nope.py", BUNDLED_CHECKPOINT)
    with pytest.raises(MoonInputError, match="checkpoint file does not exist"):
        Detector(BUNDLED_CONFIG, tmp_path / "nope.pth")


def test_a_file_that_is_not_a_detector_config(tmp_path):
    config = tmp_path / "not_mmdet.py"
    config.write_text("learning_rate = 0.1\n")
    with pytest.raises(MoonInputError, match="no 'model' entry"):
        Detector(config, BUNDLED_CHECKPOINT)
    config.write_text("model = dict(type=\n")
    with pytest.raises(MoonInputError, match="not a valid MMDetection config"):
        Detector(config, BUNDLED_CHECKPOINT)


def test_checkpoint_with_other_classes_does_not_match(tmp_path, make_random_checkpoint):
    two_classes = make_random_checkpoint(tmp_path / "two.pth", num_classes=2)
    with pytest.raises(MoonInputError, match=r"(?s)does not match the config .*size mismatch.*rtm_cls"):
        Detector(BUNDLED_CONFIG, two_classes)


def test_checkpoint_with_missing_or_extra_keys_does_not_match(tmp_path):
    saved = torch.load(BUNDLED_CHECKPOINT, weights_only=True)
    state = dict(saved["state_dict"])
    dropped = next(key for key in state if key.startswith("bbox_head."))
    del state[dropped]
    torch.save({"state_dict": state}, tmp_path / "missing.pth")
    with pytest.raises(MoonInputError, match=f"(?s)missing keys.*{dropped}"):
        Detector(BUNDLED_CONFIG, tmp_path / "missing.pth")
    torch.save({"state_dict": {**saved["state_dict"], "extra.weight": torch.zeros(1)}}, tmp_path / "extra.pth")
    with pytest.raises(MoonInputError, match="(?s)unexpected key.*extra.weight"):
        Detector(BUNDLED_CONFIG, tmp_path / "extra.pth")


def test_unreadable_and_untrusted_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(MoonInputError, match="cannot load checkpoint"):
        Detector(BUNDLED_CONFIG, garbage)
    # a full training checkpoint pickles objects: refused unless trusted, then loads
    saved = torch.load(BUNDLED_CHECKPOINT, weights_only=True)
    full = tmp_path / "full.pth"
    torch.save({**saved, "meta": {**saved["meta"], "work_dir": Path("/tmp/run")}}, full)
    with pytest.raises(MoonInputError, match="trust_checkpoint"):
        Detector(BUNDLED_CONFIG, full)
    assert Detector(BUNDLED_CONFIG, full, trust_checkpoint=True).classes == ("product",)


def test_unreadable_image_names_the_file(bundled_detector, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(MoonInputError, match="broken.jpg.*cannot be read"):
        bundled_detector.detect([broken])
