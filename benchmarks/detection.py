"""Core-product crops: the detector vs a centre crop vs the full image, and detect vs cache-hit speed.

    python benchmarks/detection.py [--data DIR] [--num 200] [--config CFG --checkpoint CKPT] [--threads 1]

Without ``--data`` a held-out composited set is built into a temp dir from the val split (catalog
photos and street backgrounds the bundled detector never saw in training; seed 123, not the training
seed). Reported in one run: box AP50 of all detections (mmdet's CocoMetric, every pasted product is
ground truth), the IoU of the chosen crop (selection policy top-1, margin included) with the true core
product box against a centre crop (central 60 %) and the full image, then images/s of detection
(decode + detect + select + write) and of the cache-hit path (BoxStore lookup by content hash).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def box_ap50(annotation_file: Path, images: list[tuple[int, str, int, int]], found) -> float:
    """COCO bbox AP50 of the raw detections, computed by mmdet's CocoMetric."""
    import torch
    from mmdet.evaluation import CocoMetric

    metric = CocoMetric(ann_file=str(annotation_file), metric="bbox")
    metric.dataset_meta = {"classes": ("product",)}
    samples = []
    for (image_id, _, width, height), d in zip(images, found, strict=True):
        pred = {"bboxes": torch.as_tensor(d.boxes), "scores": torch.as_tensor(d.scores),
                "labels": torch.as_tensor(d.labels)}  # fmt: skip
        samples.append({"img_id": image_id, "ori_shape": (height, width), "pred_instances": pred})
    metric.process({}, samples)
    return float(metric.evaluate(len(samples)).get("coco/bbox_mAP_50", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a built set (annotations_val.json + val/); default: build one")
    parser.add_argument("--num", type=int, default=200, help="images to build (without --data)")
    parser.add_argument("--config", help="detector config (default: bundled)")
    parser.add_argument("--checkpoint", help="detector checkpoint (default: bundled)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--centre", type=float, default=0.6, help="side fraction of the centre-crop baseline")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from moon_swift.detection.backend import BUNDLED_CHECKPOINT, BUNDLED_CONFIG, Detector
    from moon_swift.detection.selection import BoxPolicy, select_boxes
    from moon_swift.detection.store import BoxStore, detect_images
    from moon_swift.detection.training.synth import build_dataset, core_boxes

    tmp = tempfile.TemporaryDirectory()
    if args.data:
        data = Path(args.data)
    else:
        data = Path(tmp.name) / "data"
        start = time.perf_counter()
        build_dataset(SHARED / "fashion-catalog-dev", SHARED / "street-photos", data, num_val=args.num, seed=123,
                      splits=("val",))  # fmt: skip
        print(f"built {args.num} held-out composites in {time.perf_counter() - start:.0f} s: {data}")
    annotations = data / "annotations_val.json"
    coco = json.loads(annotations.read_text())
    truth = core_boxes(annotations)
    images = [(image["id"], image["file_name"], image["width"], image["height"]) for image in coco["images"]]
    paths = [str(data / name) for _, name, _, _ in images]

    detector = Detector(args.config or BUNDLED_CONFIG, args.checkpoint or BUNDLED_CHECKPOINT)
    detector.detect(paths[: args.batch_size])  # warm-up
    start = time.perf_counter()
    found = detector.detect(paths, batch_size=args.batch_size)
    detect_seconds = time.perf_counter() - start
    ap50 = box_ap50(annotations, images, found)

    rows = []
    policies = [("detector crop (rank: score)", BoxPolicy(rank_by="score")),
                ("detector crop (score*area*centrality)", BoxPolicy(rank_by="score*area*centrality"))]  # fmt: skip
    for name, policy in policies:
        selections = [
            select_boxes(d.boxes, d.scores, w, h, policy) for d, (_, _, w, h) in zip(found, images, strict=True)
        ]
        ious = [iou(s.boxes[0], truth[file]) for s, (_, file, _, _) in zip(selections, images, strict=True)]
        rows.append((name, ious, sum(s.fallback for s in selections)))
    c = (1 - args.centre) / 2
    centre = [iou([w * c, h * c, w * (1 - c), h * (1 - c)], truth[file]) for _, file, w, h in images]
    rows.append((f"centre crop ({args.centre:.0%} of each side)", centre, 0))
    rows.append(("full image", [iou([0, 0, w, h], truth[file]) for _, file, w, h in images], 0))

    # the store: detect once (timed end to end), then look the same files up by content
    out = Path(tmp.name) / "boxes.jsonl"
    start = time.perf_counter()
    detect_images(detector, paths, BoxPolicy(), out, batch_size=args.batch_size, progress=False)
    store_seconds = time.perf_counter() - start
    store = BoxStore(out)
    start = time.perf_counter()
    assert all(store.lookup(path) is not None for path in paths)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    for path in paths:
        store.lookup(path)
    warm = time.perf_counter() - start

    n = len(paths)
    base = statistics.mean(rows[-1][1])
    print(f"\n{n} held-out composites, detector {detector.config_path.name} + {detector.checkpoint_path.name}, "
          f"{args.threads} CPU thread(s)\n")  # fmt: skip
    print(f"box AP50 (all pasted products, CocoMetric): {ap50:.3f}\n")
    print(f"{'crop vs true core-product box':<40}{'mean IoU':>9}{'IoU>=0.5':>10}{'fallbacks':>10}{'vs full':>9}")
    for name, ious, fallbacks in rows:
        hit = sum(v >= 0.5 for v in ious) / n
        print(
            f"{name:<40}{statistics.mean(ious):>9.3f}{hit:>10.1%}{fallbacks:>10}{statistics.mean(ious) / base:>8.2f}x"
        )
    print(f"\n{'speed':<40}{'images/s':>9}{'vs detect':>10}")
    speeds = [("detect (decode + model)", n / detect_seconds), ("detect_images (+ hash, select, write)",
              n / store_seconds), ("BoxStore.lookup, cold (hash the file)", n / cold),
              ("BoxStore.lookup, warm (stat only)", n / warm)]  # fmt: skip
    for name, speed in speeds:
        print(f"{name:<40}{speed:>9.1f}{speed / speeds[0][1]:>9.0f}x")
    tmp.cleanup()


if __name__ == "__main__":
    main()
