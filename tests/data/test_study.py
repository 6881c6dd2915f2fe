"""The ablation study's data: MOON's query mix from real products and street photos, split by product."""

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from helpers import FASHION_CATALOG, STREET_PHOTOS

from moon_swift.core.errors import MoonInputError
from moon_swift.data import read_fashion_catalog
from moon_swift.data.study import (
    QUERY_MIX,
    RETRIEVAL_TASKS,
    STREET_CATEGORIES,
    build_study_data,
    draw_query_kind,
    read_held_out_queries,
    read_street_photos,
    street_split,
    study_rows,
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    records = read_fashion_catalog(FASHION_CATALOG, limit=80)
    return build_study_data(records, STREET_PHOTOS, tmp_path_factory.mktemp("study"), val_fraction=0.25)


def row_images(row: dict) -> list[str]:
    images = list(row.get("images", []))
    for group in ("positive_images", "negative_images"):
        images += [image for images_ in row.get(group) or [] for image in images_]
    return images


def test_no_held_out_product_or_street_photo_reaches_training(study):
    held_out_ids = {r.product_id for r in study.val}
    held_out_photos = {p.image for p in study.street_of("val", 0.25)}
    held_out_composites = {p.query_image for r in study.val for p in study.photo_pairs.get(r.product_id, [])}
    assert held_out_ids and held_out_photos and held_out_composites
    for seed in (0, 1):
        for row in study_rows(study, seed=seed, val_fraction=0.25).rows:
            images = set(row_images(row))
            assert not images & held_out_photos and not images & held_out_composites
            contents = json.dumps(row["positive_messages"]) + json.dumps(row.get("negative_messages"))
            assert not any(f"<group_id>{pid}</group_id>" in contents for pid in held_out_ids)
    backgrounds = [json.loads(line)["background"] for line in
                   (study.out / "photos" / "held_out" / "pairs.jsonl").read_text().splitlines()]  # fmt: skip
    assert {street_split(p, 0.25) for p in study.street if p.image in set(backgrounds)} == {"val"}


def test_every_held_out_product_is_queried_in_every_kind_and_the_file_reads_back(study):
    counts = study.counts()
    with_photo = sum(1 for r in study.val if study.photo_pairs.get(r.product_id))
    assert {task: counts[task] for task in RETRIEVAL_TASKS} == {
        "photo": with_photo, "title": len(study.val), "short text": len(study.val), "multimodal": with_photo,
        "product": with_photo}  # fmt: skip
    assert counts["street photo"] == len(study.street_of("val", 0.25)) > 0
    assert read_held_out_queries(study.out / "val_queries.jsonl") == study.queries
    photo = next(q for q in study.queries if q.task == "photo")
    multimodal = next(q for q in study.queries if q.task == "multimodal" and q.product_id == photo.product_id)
    assert photo.image != multimodal.image and multimodal.text  # two scenes; the second with a short text


def test_training_rows_follow_the_query_mix_and_category_queries_have_no_negatives(study):
    rows = study_rows(study, seed=0, category_share=0.5, street_share=0.2, val_fraction=0.25)
    kinds = rows.kinds
    assert kinds["image"] + kinds["multimodal"] + kinds["text"] == len(study.train)
    assert kinds["street photo"] == round(0.2 * len(study.train))  # of the photos whose category training has
    assert rows.not_used["street photos of no training product's category"] > 0  # 59 products lack some
    for row in rows.rows:
        query = row["messages"][0]["content"]
        if not row.get("images") and " > " in query:  # a category path: any same-category product is right
            assert row["negative_messages"] == [] and "<category>" not in row["positive_messages"][0][0]["content"]
    street = [row for row in rows.rows if row.get("images", [""])[0].startswith(str(STREET_PHOTOS.resolve()))]
    assert len(street) == kinds["street photo"] and all(row["negative_messages"] == [] for row in street)
    product_rows = [row for row in rows.rows if row not in street and " > " not in row["messages"][0]["content"]]
    assert sum(len(row["negative_messages"]) for row in product_rows) == len(product_rows)  # one hard negative each
    again = study_rows(study, seed=0, category_share=0.5, street_share=0.2, val_fraction=0.25)
    other = study_rows(study, seed=1, category_share=0.5, street_share=0.2, val_fraction=0.25)
    assert again.rows == rows.rows and other.rows != rows.rows


def test_query_kinds_are_drawn_at_the_papers_mix():
    rng = random.Random(0)
    drawn = Counter(draw_query_kind(rng) for _ in range(17_000))
    total = sum(QUERY_MIX.values())
    for kind, weight in QUERY_MIX.items():
        assert abs(drawn[kind] / 17_000 - weight / total) < 0.01


def test_street_photos_map_to_catalog_categories_and_a_bad_label_names_its_row(tmp_path):
    photos = read_street_photos(STREET_PHOTOS)
    assert len(photos) == 1000 and {p.label for p in photos} == set(STREET_CATEGORIES)
    leaves = {r.category_path[-1] for r in read_fashion_catalog(FASHION_CATALOG)}
    assert all(set(categories) <= leaves for categories in STREET_CATEGORIES.values())
    folder = tmp_path / "street"
    folder.mkdir()
    shutil.copy(Path(photos[0].image), folder / "a.jpg")
    (folder / "labels.csv").write_text("image,label\na.jpg,shoes\na.jpg,umbrella\n")
    with pytest.raises(MoonInputError) as error:
        read_street_photos(folder)
    assert "umbrella" in str(error.value) and error.value.row == 3 and error.value.field == "label"
