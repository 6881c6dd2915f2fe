"""The ablation study's data: MOON's query mix, made from a catalog and street photos, split by product.

Training rows, one query per training product, its kind drawn at the paper's mix (image : text :
multimodal = 12 : 3 : 2; a text query is the title or its short form, half and half), plus
category-path -> product rows for a share of the training products and training street photos ->
a product of their category. Held-out queries: for every held-out product a photo, a photo + short text,
its title, its short text and a product view (a composite photo with category and attributes, no
title); and the held-out street photos as category-level queries.

No held-out product, and no street photo behind a held-out query, is seen in training: products are
split by id (:func:`~moon_swift.data.swift_rows.is_held_out`), street photos by name
(:func:`~moon_swift.detection.training.synth.split_of`, as the composites' backgrounds are).
Photos are composited once (seed 0 of :func:`~moon_swift.data.photo_queries.write_photo_queries`);
a study seed changes the kinds drawn, the negatives and the street rows' products.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import MoonInputError
from ..detection.training.synth import split_of
from .catalog_files import QueryPair, read_pairs
from .negatives import category_negatives
from .photo_queries import short_text, write_photo_queries
from .records import ProductRecord
from .swift_rows import embedding_row, is_held_out

logger = logging.getLogger("moon_swift.data")

#: the paper's query mix of its behaviour data (image : text : multimodal)
QUERY_MIX = {"image": 12, "text": 3, "multimodal": 2}
#: the street photos' labels -> the catalog leaf categories (article types) a photo of that label is
STREET_CATEGORIES: dict[str, tuple[str, ...]] = {
    "dress": ("Dresses",),
    "hat": ("Caps",),
    "longsleeve": ("Shirts", "Sweaters", "Sweatshirts", "Tops", "Tshirts"),
    "outwear": ("Jackets", "Sweaters", "Sweatshirts"),
    "pants": ("Jeans", "Trousers", "Track Pants"),
    "shirt": ("Shirts",),
    "shoes": ("Casual Shoes", "Formal Shoes", "Sports Shoes"),
    "shorts": ("Shorts",),
    "skirt": ("Skirts",),
    "t-shirt": ("Tshirts",),
}
#: the held-out retrieval tasks, in the order reported: query kind -> what the query is
RETRIEVAL_TASKS = {
    "photo": "a composite street photo of the product",
    "title": "the product's title",
    "short text": "colour + leaf category, e.g. 'Navy Blue Tshirts'",
    "multimodal": "a composite photo + the short text",
    "product": "the product on a composite photo with its category and attributes, no title",
}


@dataclass(frozen=True)
class StreetPhoto:
    """A photo of clothing on a real background and the leaf categories it shows."""

    image: str
    label: str
    categories: tuple[str, ...]


def read_street_photos(folder: str | Path) -> list[StreetPhoto]:
    """``labels.csv`` of a street-photo folder (``image``, ``label`` columns); bad rows stop with file, row, field."""
    path = Path(folder) / "labels.csv"
    if not path.is_file():
        raise MoonInputError("street photos need a labels.csv (columns image, label)", file=str(path))
    photos = []
    with path.open(newline="", encoding="utf-8") as file:
        for row, values in enumerate(csv.DictReader(file), start=2):
            label = (values.get("label") or "").strip()
            if label not in STREET_CATEGORIES:
                raise MoonInputError(f"label {label!r} has no catalog categories; known: {sorted(STREET_CATEGORIES)}",
                                     file=str(path), row=row, field="label")  # fmt: skip
            image = Path(folder) / (values.get("image") or "").strip()
            if not image.is_file():
                raise MoonInputError(f"image not found: {image}", file=str(path), row=row, field="image")
            photos.append(StreetPhoto(str(image.resolve()), label, STREET_CATEGORIES[label]))
    return photos


def street_split(photo: StreetPhoto, val_fraction: float) -> str:
    """The split of a street photo: the same as its split as a composite background."""
    return split_of(f"background:{Path(photo.image).stem}", val_fraction)


def draw_query_kind(rng: random.Random) -> str:
    return rng.choices(list(QUERY_MIX), weights=list(QUERY_MIX.values()))[0]


def training_photo_kinds(train: Sequence[ProductRecord], seed: int = 0) -> dict[str, str]:
    """The query kind of each training product (fixed with the photos, so every study seed reuses them)."""
    rng = random.Random(seed)
    return {record.product_id: draw_query_kind(rng) for record in train}


@dataclass
class HeldOutQuery:
    """One held-out query: its task, text and/or image, and the product (or street label) it should find."""

    task: str
    product_id: str | None = None
    text: str | None = None
    image: str | None = None
    label: str | None = None


@dataclass
class StudyData:
    """What :func:`build_study_data` wrote: products, photo pairs, held-out queries, counts."""

    out: Path
    train: list[ProductRecord]
    val: list[ProductRecord]
    photo_pairs: dict[str, list[QueryPair]]  # product id -> its composite pairs (image and/or multimodal)
    street: list[StreetPhoto]
    queries: list[HeldOutQuery] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def street_of(self, split: str, val_fraction: float) -> list[StreetPhoto]:
        return [photo for photo in self.street if street_split(photo, val_fraction) == split]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for query in self.queries:
            counts[query.task] = counts.get(query.task, 0) + 1
        return counts


def build_study_data(records: Sequence[ProductRecord], street_dir: str | Path, out: str | Path, *,
                     val_fraction: float = 0.1) -> StudyData:  # fmt: skip
    """Composite the photo queries (training products: only the kind drawn for them) and list the held-out
    queries; writes ``out/photos/*`` and ``out/val_queries.jsonl``."""
    out = Path(out)
    train = [r for r in records if not is_held_out(r.product_id, val_fraction)]
    val = [r for r in records if is_held_out(r.product_id, val_fraction)]
    kinds = training_photo_kinds(train)
    groups = {
        "train_image": [r for r in train if kinds[r.product_id] == "image"],
        "train_multimodal": [r for r in train if kinds[r.product_id] == "multimodal"],
        "held_out": val,
    }
    pairs: dict[str, list[QueryPair]] = {}
    skipped: dict[str, int] = {}
    for name, chosen in groups.items():
        if not chosen:
            continue
        folder = out / "photos" / name
        report = write_photo_queries(chosen, street_dir, folder, kinds=_photo_kinds(name), val_fraction=val_fraction)
        for reason, count in report.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
        for pair in read_pairs(report.pairs, list(chosen)):
            pairs.setdefault(pair.product_id, []).append(pair)
    data = StudyData(out, train, val, pairs, read_street_photos(street_dir), skipped=skipped)
    data.queries = list(_held_out_queries(data, val_fraction))
    write_held_out_queries(data.queries, out / "val_queries.jsonl")
    return data


def _photo_kinds(group: str) -> tuple[str, ...]:
    return ("image", "multimodal") if group == "held_out" else (group.removeprefix("train_"),)


def _held_out_queries(data: StudyData, val_fraction: float) -> Iterator[HeldOutQuery]:
    for record in data.val:
        photos = {("multimodal" if p.query_text else "image"): p for p in data.photo_pairs.get(record.product_id, [])}
        pid = record.product_id
        if "image" in photos:
            yield HeldOutQuery("photo", pid, image=photos["image"].query_image)
        yield HeldOutQuery("title", pid, text=record.title)
        yield HeldOutQuery("short text", pid, text=short_text(record))
        if "multimodal" in photos:
            yield HeldOutQuery("multimodal", pid, text=photos["multimodal"].query_text,
                               image=photos["multimodal"].query_image)  # fmt: skip
        if "image" in photos:
            yield HeldOutQuery("product", pid, image=photos["image"].query_image)
    for photo in data.street_of("val", val_fraction):
        yield HeldOutQuery("street photo", image=photo.image, label=photo.label)


def write_held_out_queries(queries: Sequence[HeldOutQuery], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for query in queries:
            file.write(json.dumps({k: v for k, v in asdict(query).items() if v is not None}, ensure_ascii=False) + "\n")


def read_held_out_queries(path: str | Path) -> list[HeldOutQuery]:
    queries = []
    with Path(path).open(encoding="utf-8") as file:
        for row, line in enumerate(file, start=1):
            try:
                queries.append(HeldOutQuery(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                raise MoonInputError(f"not a held-out query ({error})", file=str(path), row=row) from error
    return queries


@dataclass
class StudyRows:
    """Training rows of one seed and how many of each kind."""

    rows: list[dict[str, Any]]
    kinds: dict[str, int]
    not_used: dict[str, int] = field(default_factory=dict)


def study_rows(data: StudyData, *, seed: int, hard_negatives: int = 1, category_share: float = 0.15,
               street_share: float = 0.15, val_fraction: float = 0.1) -> StudyRows:  # fmt: skip
    """One seed's training rows (shuffled by swift, not here): a query per training product, category rows for
    ``category_share`` of them, and training street photos for up to ``street_share`` of their number.

    Product queries get ``hard_negatives`` same-category negatives; category and street rows get none:
    for a category-level query a same-category product is not a negative.
    """
    rng = random.Random(seed)
    drawn = training_photo_kinds(data.train)
    negatives = dict(zip([r.product_id for r in data.train],
                         category_negatives(data.train, hard_negatives, seed=seed), strict=True))  # fmt: skip
    rows, kinds = [], {}

    def add(kind: str, row: dict[str, Any]) -> None:
        rows.append(row)
        kinds[kind] = kinds.get(kind, 0) + 1

    for record in data.train:
        kind, chosen = drawn[record.product_id], negatives[record.product_id]
        photos = data.photo_pairs.get(record.product_id, [])
        if kind in ("image", "multimodal") and photos:
            add(kind, embedding_row(photos[0].query_text or "", [photos[0].query_image], record, chosen))
        else:  # a text query (also for a product whose photo could not be cut out)
            text = record.title if rng.random() < 0.5 else short_text(record)
            add("text", embedding_row(text, (), record, chosen))
        if record.category_path and rng.random() < category_share:
            add("category", embedding_row(" > ".join(record.category_path), (), record, [], with_fields=False))
    by_leaf: dict[str, list[ProductRecord]] = {}
    for record in data.train:
        if record.category_path:
            by_leaf.setdefault(record.category_path[-1], []).append(record)
    street = data.street_of("train", val_fraction)
    pools = {photo.image: [r for c in photo.categories for r in by_leaf.get(c, [])] for photo in street}
    eligible = [photo for photo in street if pools[photo.image]]
    for photo in rng.sample(eligible, min(len(eligible), round(street_share * len(data.train)))):
        add("street photo", embedding_row("", [photo.image], rng.choice(pools[photo.image]), []))
    return StudyRows(rows, kinds, {"street photos of no training product's category": len(street) - len(eligible)})
