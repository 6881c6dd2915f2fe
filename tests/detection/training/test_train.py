import json

import torch
from helpers import FASHION_CATALOG, STREET_PHOTOS

from moon_swift.detection.backend import BUNDLED_CONFIG, Detector
from moon_swift.detection.training.synth import build_dataset
from moon_swift.detection.training.train import ap50, train_detector, training_config


def test_training_config_fills_in_data_budget_and_schedule(tmp_path):
    for split in ("train", "val"):
        (tmp_path / f"annotations_{split}.json").write_text("{}")
    cfg = training_config(tmp_path, tmp_path / "work", iters=50, val_interval=20, batch_size=2, seed=5)
    assert cfg.train_dataloader.dataset.data_root == f"{tmp_path}/"
    assert cfg.val_evaluator.ann_file == f"{tmp_path}/annotations_val.json" and cfg.val_evaluator.type == "CocoMetric"
    assert cfg.train_cfg == {"type": "IterBasedTrainLoop", "max_iters": 50, "val_interval": 20}
    assert cfg.param_scheduler[-1]["end"] == 50 and cfg.randomness.seed == 5
    assert cfg.model.bbox_head.num_classes == 1 and "init_cfg" not in cfg.model.backbone  # nothing downloaded


def test_a_few_iterations_through_the_real_runner(tmp_path):
    torch.set_num_threads(1)
    data = tmp_path / "data"
    build_dataset(FASHION_CATALOG, STREET_PHOTOS, data, num_train=8, num_val=4, seed=0, max_catalog=12)
    summary = train_detector(data, tmp_path / "work", iters=3, batch_size=2, seed=0)
    assert summary["iters"] == 3 and 0.0 <= ap50(summary["metrics"]) <= 1.0
    assert json.loads((tmp_path / "work" / "summary.json").read_text())["metrics"] == summary["metrics"]
    saved = torch.load(summary["checkpoint"], weights_only=True)  # stripped: weights and plain meta only
    assert set(saved) == {"state_dict", "meta"} and summary["checkpoint_mb"] < 15
    detector = Detector(BUNDLED_CONFIG, summary["checkpoint"])
    assert detector.classes == ("product",)
    assert len(detector.detect(sorted((data / "val").glob("*.jpg"))[:2])) == 2
