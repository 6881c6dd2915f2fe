"""Train the core-product detector with MMEngine's Runner on a composited COCO set (see ``synth``).

Everything here is configuration: the model, data pipeline, CocoDataset and CocoMetric come from
MMDetection, the loop from MMEngine. What this module adds is the CPU-sized defaults and the stripped,
shippable checkpoint (weights + meta only, as mmdet's ``publish_model`` does).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from ...core.errors import MoonInputError

logger = logging.getLogger("moon_swift.detection")

CONFIGS = Path(__file__).parents[1] / "configs"
DEFAULT_CONFIG = CONFIGS / "rtmdet_product_tiny.py"


def training_config(
    data_dir: str | Path,
    work_dir: str | Path,
    *,
    config: str | Path = DEFAULT_CONFIG,
    iters: int = 3000,
    val_interval: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
):
    """The mmengine ``Config`` for one run: ``config`` with data paths, budget and seed filled in."""
    from mmengine.config import Config

    data_dir, config = Path(data_dir).resolve(), Path(config)
    if not config.is_file():
        raise MoonInputError("detector config not found", file=str(config))
    for split in ("train", "val"):
        if not (data_dir / f"annotations_{split}.json").is_file():
            raise MoonInputError(f"no annotations_{split}.json (build it with `moon-swift detector build-data`)",
                                 file=str(data_dir))  # fmt: skip
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=seed, deterministic=False)
    root = str(data_dir) + "/"
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
    cfg.val_evaluator.ann_file = root + "annotations_val.json"
    cfg.test_evaluator = cfg.val_evaluator
    if batch_size:
        cfg.train_dataloader.batch_size = batch_size
    lr = lr or cfg.optim_wrapper.optimizer.lr
    cfg.optim_wrapper.optimizer.lr = lr
    val_interval = min(val_interval or cfg.train_cfg.val_interval, iters)
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=val_interval)
    warmup = min(100, max(iters // 10, 1))
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=1.0e-3, by_epoch=False, begin=0, end=warmup),
        dict(type="CosineAnnealingLR", eta_min=lr * 0.05, begin=warmup, end=iters, T_max=iters - warmup,
             by_epoch=False),
    ]  # fmt: skip
    cfg.default_hooks.checkpoint.interval = val_interval
    cfg.default_hooks.logger.interval = min(cfg.default_hooks.logger.interval, max(iters // 5, 1))
    return cfg


def train_detector(
    data_dir: str | Path,
    work_dir: str | Path,
    *,
    config: str | Path = DEFAULT_CONFIG,
    iters: int = 3000,
    val_interval: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    out_checkpoint: str | Path | None = None,
) -> dict:
    """Train, validate (COCO bbox AP) and write a stripped checkpoint; returns a summary dict.

    The summary (also written to ``work_dir/summary.json``) holds the final val metrics, the wall time and
    the stripped checkpoint path (``out_checkpoint``, default ``work_dir/product_detector.pth``).
    """
    from mmdet.utils import register_all_modules
    from mmengine.runner import Runner

    register_all_modules()
    cfg = training_config(data_dir, work_dir, config=config, iters=iters, val_interval=val_interval,
                          batch_size=batch_size, lr=lr, seed=seed)  # fmt: skip
    start = time.perf_counter()
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val()
    if not metrics:  # CocoMetric returns nothing when the model detected nothing: that is an AP of 0
        metrics = {"coco/bbox_mAP": 0.0, "coco/bbox_mAP_50": 0.0, "coco/bbox_mAP_75": 0.0}
    seconds = time.perf_counter() - start
    target = Path(out_checkpoint) if out_checkpoint else Path(work_dir) / "product_detector.pth"
    strip_checkpoint(runner.model, target, meta={"config": Path(config).name, "iters": iters, "seed": seed,
                                                 "dataset_meta": dict(classes=("product",))})  # fmt: skip
    summary = {
        "config": str(config),
        "data_dir": str(data_dir),
        "iters": iters,
        "seed": seed,
        "seconds": round(seconds, 1),
        "metrics": {key: float(value) for key, value in metrics.items()},
        "checkpoint": str(target),
        "checkpoint_mb": round(target.stat().st_size / 1e6, 2),
    }
    (Path(work_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def strip_checkpoint(model, target: str | Path, meta: dict | None = None) -> Path:
    """Save only the weights (+ small meta): no optimizer state, message hub or config object.

    Plain tensors and builtins only, so ``torch.load(weights_only=True)`` (torch's default) reads it.
    """
    import torch

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": _plain(meta or {})}, target)
    return target


def _plain(value):
    """Builtins only (tuples -> lists), so the meta stays loadable with ``weights_only=True``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def ap50(metrics: dict) -> float | None:
    """The bbox AP50 of a CocoMetric result dict (key ``coco/bbox_mAP_50``)."""
    for key, value in metrics.items():
        if re.search(r"bbox_mAP_50$", key):
            return float(value)
    return None
