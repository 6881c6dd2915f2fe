"""Photo queries from a catalog, for when no behaviour log is at hand: each product cut from its studio
photo and pasted, with jitter and 0-2 distractor products, onto a real street photo; optionally with a
short text (a multimodal query). Written as behaviour pairs (``query_image`` / ``query_text`` ->
``product_id``), the format ``prepare-data --pairs`` and ``eval --pairs`` read.

A query photo never is the product's catalog photo: the product is rescaled, moved and set in clutter.
Held-out products (the same id split as ``prepare-data``) get their queries on backgrounds that no
training product's query uses, so evaluation meets unseen scenes. The compositor is the one the
core-product detector is trained with (:mod:`moon_swift.detection.training.synth`).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import MoonInputError
from ..detection.training.synth import SynthConfig, background_images, compose, cutout, load_background, split_of
from .records import ProductRecord
from .swift_rows import is_held_out

logger = logging.getLogger("moon_swift.data")

#: the query kinds this writes: a photo alone, or a photo with a short text
PHOTO_QUERY_KINDS = ("image", "multimodal")


@dataclass
class PhotoQueryReport:
    pairs: Path
    queries: dict[str, int] = field(default_factory=dict)
    held_out_queries: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{kind}: {count}" for kind, count in self.queries.items())
        skipped = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.items()) or "none"
        return [f"  {self.pairs}: {sum(self.queries.values())} behaviour pairs ({kinds}), "
                f"{self.held_out_queries} of held-out products", f"  products skipped: {skipped}"]  # fmt: skip


def short_text(record: ProductRecord) -> str:
    """A query-like text: the colour attribute (if any) and the leaf category, e.g. ``Navy Blue Tshirts``."""
    colour = next((v for k, v in record.attributes.items() if "colou" in k.lower() or "color" in k.lower()), "")
    leaf = record.category_path[-1] if record.category_path else " ".join(record.title.split()[:3])
    return " ".join(part for part in (colour, leaf) if part)


def write_photo_queries(
    records: Sequence[ProductRecord],
    backgrounds: str | Path,
    out_dir: str | Path,
    *,
    kinds: Sequence[str] = PHOTO_QUERY_KINDS,
    val_fraction: float = 0.1,
    seed: int = 0,
    config: SynthConfig | None = None,
) -> PhotoQueryReport:
    """Write ``out_dir/images/*.jpg`` and ``out_dir/pairs.jsonl``: one query per product and kind."""
    unknown = sorted(set(kinds) - set(PHOTO_QUERY_KINDS))
    if unknown:
        raise MoonInputError(f"unknown photo query kinds {unknown}; choose from {PHOTO_QUERY_KINDS}", field="--kinds")
    config = config or SynthConfig()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    photos = background_images(Path(backgrounds))
    pools = {split: [p for p in photos if split_of(f"background:{p.stem}", val_fraction) == split]
             for split in ("train", "val")}  # fmt: skip
    if not pools["train"] or not pools["val"]:
        raise MoonInputError("too few background photos to keep held-out queries on unseen backgrounds",
                             file=str(backgrounds))  # fmt: skip
    rng = random.Random(seed)
    cutouts, report = {}, PhotoQueryReport(out / "pairs.jsonl")
    for record in records:
        found = cutout(Path(record.images[0]), config)
        if found is None:
            reason = "first image is not a product on white (no cutout)"
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
        else:
            cutouts[record.product_id] = found
    by_split = {split: [r for r in records if r.product_id in cutouts and
                        ("val" if is_held_out(r.product_id, val_fraction) else "train") == split]
                for split in ("train", "val")}  # fmt: skip
    cache: dict[Path, object] = {}
    serial = 0
    with report.pairs.open("w", encoding="utf-8") as file:
        for split, chosen in by_split.items():
            for record in chosen:
                for kind in kinds:
                    background = rng.choice(pools[split])
                    if background not in cache:
                        cache[background] = load_background(background, config.background_long_side_px)
                    others = [r for r in rng.sample(chosen, min(len(chosen), 3)) if r is not record]
                    distractors = [cutouts[r.product_id] for r in others[: rng.randint(0, config.max_distractors)]]
                    canvas, _ = compose(cache[background], cutouts[record.product_id], distractors, rng, config)
                    serial += 1
                    name = f"images/{serial:07d}_{kind}.jpg"  # product ids need not be file names
                    canvas.save(out / name, quality=90)
                    pair = {"query_image": name, "product_id": record.product_id, "background": str(background)}
                    if kind == "multimodal":
                        pair["query_text"] = short_text(record)
                    file.write(json.dumps(pair, ensure_ascii=False) + "\n")
                    report.queries[kind] = report.queries.get(kind, 0) + 1
                    report.held_out_queries += split == "val"
    return report
