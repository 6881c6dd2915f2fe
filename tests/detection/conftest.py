"""Detectors for the detection tests: the bundled one, and random-weight ones built from the bundled config."""

from __future__ import annotations

from pathlib import Path

import pytest

from moon_swift.detection.backend import BUNDLED_CHECKPOINT, BUNDLED_CONFIG, Detector


def random_checkpoint(path: Path, seed: int = 0, **model_options) -> Path:
    """The bundled architecture with random weights (``model_options``: e.g. ``num_classes`` of the head)."""
    import torch
    from mmdet.apis import init_detector
    from mmengine.config import Config

    from moon_swift.detection.training.train import strip_checkpoint

    torch.manual_seed(seed)
    cfg = Config.fromfile(str(BUNDLED_CONFIG))
    cfg.model.bbox_head.update(model_options)
    model = init_detector(cfg, None, device="cpu")
    return strip_checkpoint(model, path, meta={"dataset_meta": {"classes": ["product"]}})


class CountingDetector(Detector):
    """A real detector that counts the images it is given (to check the store skips known ones)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.images_seen = 0

    def detect_rgb(self, images):
        self.images_seen += len(images)
        return super().detect_rgb(images)


@pytest.fixture(scope="session")
def make_random_checkpoint():
    """:func:`random_checkpoint` (conftest modules are not importable from tests)."""
    return random_checkpoint


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("det") / "random.pth")


@pytest.fixture(scope="session")
def bundled_detector() -> Detector:
    return Detector(BUNDLED_CONFIG, BUNDLED_CHECKPOINT)


@pytest.fixture
def counting_detector(random_weights) -> CountingDetector:
    """Random weights: the store's bookkeeping does not depend on what the boxes are."""
    return CountingDetector(BUNDLED_CONFIG, random_weights)
