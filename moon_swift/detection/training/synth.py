"""A one-class COCO detection set ("product") composited from real photos, to train the core-product detector.

Catalog photos are studio shots on white, so each product's exact mask and box come from its non-white
pixels. One large, roughly centred core product plus 0-2 smaller distractor products are pasted onto real
street photos; every pasted product is annotated as ``product`` and the core one carries ``"core": true``.
Catalog images and backgrounds are split train/val by id (a hash, independent of the seed), so the two
splits share no source photo.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from ...core.errors import MoonInputError
from ...core.images import load_image

SPLITS = ("train", "val")


@dataclass(frozen=True)
class SynthConfig:
    """Sizes are fractions of the background unless named ``*_px``."""

    background_long_side_px: int = 320
    core_scale: tuple[float, float] = (0.45, 0.8)  # core product's long side / background short side
    core_jitter: float = 0.15  # core centre offset from the image centre, fraction of each side
    distractor_scale: tuple[float, float] = (0.15, 0.3)
    max_distractors: int = 2
    val_fraction: float = 0.2
    white_threshold: int = 235  # a pixel is background when all channels are >= this
    min_foreground: float = 0.03  # reject catalog photos whose product covers less of the frame
    max_box_fraction: float = 0.97  # ... or whose product box is (nearly) the whole frame


def foreground_mask(image: Image.Image, config: SynthConfig = SynthConfig()) -> np.ndarray | None:
    """Boolean mask of the product in a studio photo on white, or None when there is no usable product.

    Non-white pixels, opened (drops JPEG specks) and closed, then holes filled (white parts of a product
    enclosed by its outline stay product). Rejected: an empty foreground, or one whose box fills the frame
    (the photo is not on white), or a frame edge that is mostly not white.
    """
    pixels = np.asarray(image.convert("RGB"))
    mask = (pixels < config.white_threshold).any(axis=2)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    if border.mean() > 0.5:  # the frame's edge is mostly not white: not a studio shot on white
        return None
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3)), iterations=1)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=2, border_value=0)
    mask = ndimage.binary_fill_holes(mask)
    if mask.mean() < config.min_foreground:
        return None
    x1, y1, x2, y2 = mask_box(mask)
    if (x2 - x1) * (y2 - y1) >= config.max_box_fraction * mask.size:
        return None
    return mask


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box (x1, y1, x2, y2), exclusive right/bottom edges, of the True pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def split_of(key: str, val_fraction: float) -> str:
    """'train' or 'val' from a stable hash of a source id: the same photo always lands in the same split."""
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


@dataclass
class Cutout:
    """A catalog product cut to its box: RGB pixels and a soft alpha."""

    source: str
    rgb: Image.Image
    alpha: Image.Image


def cutout(path: Path, config: SynthConfig) -> Cutout | None:
    image = load_image(str(path))
    mask = foreground_mask(image, config)
    if mask is None:
        return None
    box = mask_box(mask)
    alpha = Image.fromarray((mask * 255).astype(np.uint8)).crop(box)
    return Cutout(path.stem, image.crop(box), alpha)


def _paste(canvas: Image.Image, cutout: Cutout, long_side: float, centre: tuple[float, float]) -> list[float]:
    """Paste ``cutout`` scaled to ``long_side`` px centred at ``centre``; returns its exact COCO box [x, y, w, h]."""
    scale = long_side / max(cutout.rgb.size)
    size = (max(2, round(cutout.rgb.width * scale)), max(2, round(cutout.rgb.height * scale)))
    rgb = cutout.rgb.resize(size, Image.Resampling.BILINEAR)
    alpha = cutout.alpha.resize(size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(0.7))
    x = round(min(max(centre[0] - size[0] / 2, 0), canvas.width - size[0]))
    y = round(min(max(centre[1] - size[1] / 2, 0), canvas.height - size[1]))
    canvas.paste(rgb, (x, y), alpha)
    visible = np.asarray(alpha) >= 128
    bx1, by1, bx2, by2 = mask_box(visible) if visible.any() else (0, 0, size[0], size[1])
    return [float(x + bx1), float(y + by1), float(bx2 - bx1), float(by2 - by1)]


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection area of two COCO boxes over the area of ``a``."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0) / max(a[2] * a[3], 1e-9)


def load_background(path: Path, long_side: int) -> Image.Image:
    image = load_image(str(path))
    scale = long_side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)


def compose(
    background: Image.Image, core: Cutout, distractors: list[Cutout], rng: random.Random, config: SynthConfig
) -> tuple[Image.Image, list[dict]]:
    """One composite: distractors first (beside the core, at most 20 % hidden by it), then the core on top."""
    canvas = background.copy()
    width, height = canvas.size
    short = min(width, height)
    core_side = rng.uniform(*config.core_scale) * short
    core_centre = (
        width / 2 + rng.uniform(-1, 1) * config.core_jitter * width,
        height / 2 + rng.uniform(-1, 1) * config.core_jitter * height,
    )
    # where the core will go, to keep distractors mostly clear of it
    scale = core_side / max(core.rgb.size)
    core_w, core_h = core.rgb.width * scale, core.rgb.height * scale
    core_area = [core_centre[0] - core_w / 2, core_centre[1] - core_h / 2, core_w, core_h]
    annotations = []
    for distractor in distractors:
        side = rng.uniform(*config.distractor_scale) * short
        for _ in range(20):
            centre = (rng.uniform(side / 2, width - side / 2), rng.uniform(side / 2, height - side / 2))
            probe = [centre[0] - side / 2, centre[1] - side / 2, side, side]
            if _overlap(probe, core_area) < 0.2:
                break
        else:
            continue
        box = _paste(canvas, distractor, side, centre)
        annotations.append({"bbox": box, "core": False, "source": distractor.source})
    box = _paste(canvas, core, core_side, core_centre)
    annotations.append({"bbox": box, "core": True, "source": core.source})
    return canvas, annotations


def _listed_images(folder: Path, listing: str) -> list[Path]:
    """The images ``folder/listing`` (a CSV with an ``image`` column) names, else every image below ``folder``."""
    listed = folder / listing
    if listed.is_file():
        with listed.open(newline="", encoding="utf-8") as file:
            return [folder / row["image"] for row in csv.DictReader(file) if row.get("image")]
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise MoonInputError(f"no {listing} and no images", file=str(folder))
    return images


def _catalog_images(catalog_dir: Path) -> list[Path]:
    return _listed_images(catalog_dir, "products.csv")


def background_images(backgrounds_dir: Path) -> list[Path]:
    """The photos of a backgrounds folder (those its ``labels.csv`` lists, else every image in it)."""
    return _listed_images(backgrounds_dir, "labels.csv")


def build_dataset(
    catalog_dir: str | Path,
    backgrounds_dir: str | Path,
    out_dir: str | Path,
    *,
    num_train: int = 3000,
    num_val: int = 300,
    seed: int = 0,
    config: SynthConfig = SynthConfig(),
    splits: tuple[str, ...] = SPLITS,
    max_catalog: int | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/{split}/*.jpg`` and ``out_dir/annotations_{split}.json``; returns the json paths.

    Deterministic for a given seed. ``max_catalog`` caps the catalog photos read (speed, for tests).
    """
    catalog_dir, backgrounds_dir, out_dir = Path(catalog_dir), Path(backgrounds_dir), Path(out_dir)
    catalog = _catalog_images(catalog_dir)
    backgrounds = background_images(backgrounds_dir)
    rng = random.Random(seed)
    counts = {"train": num_train, "val": num_val}
    written = {}
    for split in splits:
        sources = [p for p in catalog if split_of(f"catalog:{p.stem}", config.val_fraction) == split]
        if max_catalog:
            sources = rng.sample(sources, min(max_catalog, len(sources)))
        cutouts = [c for c in (cutout(p, config) for p in sources) if c is not None]
        split_backgrounds = [p for p in backgrounds if split_of(f"background:{p.stem}", config.val_fraction) == split]
        if not cutouts or not split_backgrounds:
            raise MoonInputError(f"no usable catalog photos or backgrounds for the {split!r} split")
        written[split] = _write_split(out_dir, split, cutouts, split_backgrounds, counts[split], rng, config)
    return written


def _write_split(
    out_dir: Path,
    split: str,
    cutouts: list[Cutout],
    backgrounds: list[Path],
    count: int,
    rng: random.Random,
    config: SynthConfig,
) -> Path:
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    background_cache: dict[Path, Image.Image] = {}
    for index in range(count):
        path = rng.choice(backgrounds)
        if path not in background_cache:
            background_cache[path] = load_background(path, config.background_long_side_px)
        chosen = rng.sample(cutouts, min(len(cutouts), 1 + rng.randint(0, config.max_distractors)))
        canvas, pasted = compose(background_cache[path], chosen[0], chosen[1:], rng, config)
        name = f"{split}/{index:06d}.jpg"
        canvas.save(out_dir / name, quality=92)
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "width": canvas.width, "height": canvas.height,
                       "background": path.stem})  # fmt: skip
        for item in pasted:
            x, y, w, h = item["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, **item})  # fmt: skip
    coco = {
        "info": {"description": f"moon-swift composited core-product set ({split})"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "product"}],
    }
    target = out_dir / f"annotations_{split}.json"
    target.write_text(json.dumps(coco))
    return target


def core_boxes(annotation_file: str | Path) -> dict[str, list[float]]:
    """file_name -> the core product's box as (x1, y1, x2, y2), from a file written by :func:`build_dataset`."""
    coco = json.loads(Path(annotation_file).read_text())
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    out = {}
    for ann in coco["annotations"]:
        if ann.get("core"):
            x, y, w, h = ann["bbox"]
            out[names[ann["image_id"]]] = [x, y, x + w, y + h]
    return out
