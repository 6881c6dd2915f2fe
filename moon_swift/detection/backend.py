"""Any MMDetection detector (config + checkpoint) behind one call: images in, boxes and scores out.

The model is built by mmdet's ``init_detector`` and run with its own test pipeline; what this module
adds is batching (``inference_detector`` runs one image at a time), images decoded the project's way
(``load_image``: EXIF-upright RGB, clear errors) and a strict checkpoint load: a checkpoint that does
not fit the config (other classes, other architecture) is an error here, where mmengine would only log
a warning and run with random weights.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import MoonInputError
from ..core.images import load_image, to_rgb

PACKAGE_DIR = Path(__file__).parent
BUNDLED_CONFIG = PACKAGE_DIR / "configs" / "rtmdet_product_tiny.py"
BUNDLED_CHECKPOINT = PACKAGE_DIR / "weights" / "product_detector.pth"

ImageInput = str | Path | Image.Image


@dataclass
class Detections:
    """One image's detections: ``boxes`` (N x 4, x1 y1 x2 y2 in the upright image's pixels), ``scores``, ``labels``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    width: int
    height: int


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Detector:
    """An MMDetection model ready for batched inference on CPU or GPU.

    ``detect(images)`` takes paths or PIL images and returns one :class:`Detections` per image.
    ``fingerprint`` identifies the exact config + weights (sha256 of both files), so stored boxes can say
    which detector made them. Checkpoints are read with ``torch.load(weights_only=True)``; a full training
    checkpoint (optimizer state, pickled objects) needs ``trust_checkpoint=True``.
    """

    def __init__(
        self,
        config: str | Path,
        checkpoint: str | Path,
        device: str = "cpu",
        batch_size: int = 8,
        *,
        trust_checkpoint: bool = False,
    ):
        config, checkpoint = Path(config), Path(checkpoint)
        if not config.is_file():
            raise MoonInputError("detector config file does not exist", file=str(config))
        if not checkpoint.is_file():
            raise MoonInputError("detector checkpoint file does not exist", file=str(checkpoint))
        self.config_path, self.checkpoint_path, self.device, self.batch_size = config, checkpoint, device, batch_size
        self.model = _build_model(config, checkpoint, device, trust_checkpoint)
        self.classes = tuple(self.model.dataset_meta.get("classes", ()))
        self._pipeline = _test_pipeline(self.model.cfg)
        self.fingerprint = files_fingerprint(config, checkpoint)

    def describe(self) -> dict[str, str]:
        """What made the boxes: recorded with each stored result."""
        return {"config": self.config_path.name, "checkpoint": self.checkpoint_path.name,
                "fingerprint": self.fingerprint}  # fmt: skip

    def record(self) -> dict[str, str]:
        """:meth:`describe` plus where the files are: what a checkpoint keeps to detect again later."""
        return detector_record(self.config_path, self.checkpoint_path, self.fingerprint)

    def detect(self, images: Sequence[ImageInput], batch_size: int | None = None) -> list[Detections]:
        """Detections for each image, in order; decoding errors raise :class:`MoonInputError` naming the file."""
        batch_size, images = batch_size or self.batch_size, list(images)
        results: list[Detections] = []
        for start in range(0, len(images), batch_size):
            rgb = [_as_rgb(image) for image in images[start : start + batch_size]]
            results.extend(self.detect_rgb(rgb))
        return results

    def detect_rgb(self, images: Sequence[Image.Image]) -> list[Detections]:
        """One forward pass over already decoded, upright RGB images (one batch)."""
        import torch
        from mmengine.dataset import pseudo_collate

        if not images:
            return []
        # mmdet pipelines expect BGR arrays, as LoadImageFromFile would give
        data = [self._pipeline(dict(img=np.ascontiguousarray(np.asarray(im)[:, :, ::-1]), img_id=i))
                for i, im in enumerate(images)]  # fmt: skip
        with torch.no_grad():
            samples = self.model.test_step(pseudo_collate(data))
        out = []
        for image, sample in zip(images, samples, strict=True):
            pred = sample.pred_instances
            out.append(Detections(
                boxes=pred.bboxes.detach().cpu().numpy().astype(np.float32).reshape(-1, 4),
                scores=pred.scores.detach().cpu().numpy().astype(np.float32),
                labels=pred.labels.detach().cpu().numpy().astype(np.int64),
                width=image.width, height=image.height,
            ))  # fmt: skip
        return out


def _as_rgb(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    return load_image(str(image))


def _build_model(config: Path, checkpoint: Path, device: str, trust_checkpoint: bool = False):
    """``init_detector`` without weights, then mmengine's ``load_state_dict`` in strict mode: mismatches raise."""
    import torch
    from mmdet.apis import init_detector
    from mmengine.config import Config
    from mmengine.runner.checkpoint import load_state_dict

    try:
        cfg = Config.fromfile(str(config))
    except Exception as error:  # mmengine raises SyntaxError, KeyError, ... for bad config files
        raise MoonInputError(f"not a valid MMDetection config ({type(error).__name__}: {error})",
                             file=str(config)) from error  # fmt: skip
    if "model" not in cfg:
        raise MoonInputError("config has no 'model' entry: not an MMDetection config", file=str(config))
    with warnings.catch_warnings(record=True):  # init_detector warns "use COCO classes": we load weights next
        try:
            model = init_detector(cfg, None, device=device)
        except (KeyError, TypeError, ValueError, AssertionError) as error:
            raise MoonInputError(f"cannot build the model of this config ({error})", file=str(config)) from error
    try:
        loaded = torch.load(str(checkpoint), map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as error:  # not a checkpoint, truncated, or pickled objects refused by weights_only
        hint = " (if you trust this file, allow arbitrary pickled objects with trust_checkpoint)" if (
            "weights_only" in str(error) or "Weights only" in str(error)) else ""  # fmt: skip
        raise MoonInputError(f"cannot load checkpoint ({type(error).__name__}: {str(error)[:200]}){hint}",
                             file=str(checkpoint)) from error  # fmt: skip
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MoonInputError("not a model checkpoint (no state_dict of tensors)", file=str(checkpoint))
    state = {key.removeprefix("module."): value for key, value in state.items()}
    try:  # mmengine only logs a mismatch unless strict; a partly loaded detector would run on random weights
        load_state_dict(model, state, strict=True, logger="silent")
    except RuntimeError as error:
        message = str(error).strip().replace("\n\n", "\n")
        raise MoonInputError(f"checkpoint does not match the config {config.name}: {message[:800]}",
                             file=str(checkpoint)) from error  # fmt: skip
    meta = loaded.get("meta", {}) if isinstance(loaded, dict) else {}
    if "dataset_meta" in meta:
        model.dataset_meta = {key.lower(): value for key, value in meta["dataset_meta"].items()}
    model.eval()
    return model


def _test_pipeline(cfg):
    """The config's test pipeline, reading from an in-memory (BGR) array instead of a file."""
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg

    steps = copy.deepcopy(get_test_pipeline_cfg(cfg))
    steps[0] = {**steps[0], "type": "mmdet.LoadImageFromNDArray"}
    steps = [step for step in steps if "LoadAnnotations" not in str(step.get("type"))]
    return Compose(steps)


def default_detector(device: str = "cpu", batch_size: int = 8) -> Detector:
    """The bundled core-product detector (see ``weights/README.md`` for how it was trained)."""
    return Detector(BUNDLED_CONFIG, BUNDLED_CHECKPOINT, device=device, batch_size=batch_size)


def detector_record(config: str | Path, checkpoint: str | Path, fingerprint: str | None = None) -> dict[str, str]:
    """What a checkpoint keeps of the detector its crops come from (names, fingerprint, where the files are),
    from the files alone: no model is built."""
    config, checkpoint = Path(config), Path(checkpoint)
    for path in (config, checkpoint):
        if not path.is_file():
            raise MoonInputError("detector file does not exist", file=str(path), field="detector")
    return {"config": config.name, "checkpoint": checkpoint.name,
            "fingerprint": fingerprint or files_fingerprint(config, checkpoint),
            "config_path": str(config.resolve()), "checkpoint_path": str(checkpoint.resolve())}  # fmt: skip


def files_fingerprint(config: str | Path, checkpoint: str | Path) -> str:
    """The fingerprint :class:`Detector` gives these files (without building the model)."""
    return hashlib.sha256((file_sha256(config) + file_sha256(checkpoint)).encode()).hexdigest()[:16]


def find_detector(record: dict | None, device: str = "cpu") -> Detector:
    """The detector a checkpoint's crops came from (:meth:`Detector.record`), on this machine.

    The bundled detector is recognised by its fingerprint wherever the package is installed; another one
    is loaded from the paths it was at and must still have the same fingerprint. None: the bundled one.
    """
    if not record:
        return default_detector(device)
    fingerprint = record.get("fingerprint")
    if fingerprint == files_fingerprint(BUNDLED_CONFIG, BUNDLED_CHECKPOINT):
        return default_detector(device)
    config, checkpoint = record.get("config_path"), record.get("checkpoint_path")
    if not (config and checkpoint and Path(config).is_file() and Path(checkpoint).is_file()):
        raise MoonInputError(
            f"the checkpoint's crops come from detector {record.get('config')} + {record.get('checkpoint')} "
            f"(fingerprint {fingerprint}), whose files are not here ({config}, {checkpoint}); give a box store it "
            "made instead",
            field="detector",
        )
    detector = Detector(config, checkpoint, device=device)
    if fingerprint and detector.fingerprint != fingerprint:
        raise MoonInputError(
            f"detector files changed: fingerprint {detector.fingerprint}, the checkpoint's crops come from "
            f"{fingerprint}",
            file=checkpoint,
            field="detector",
        )
    return detector
