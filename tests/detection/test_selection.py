import json

import numpy as np
import pytest
from PIL import Image

from moon_swift.detection.selection import BoxPolicy, Selection, crop, expand, select_boxes

W, H = 200, 100
# a confident small box in a corner, a less confident large central box, a faint box
BOXES = np.array([[0, 0, 30, 30], [60, 20, 140, 80], [150, 10, 190, 90]], dtype=np.float32)
SCORES = np.array([0.9, 0.6, 0.1], dtype=np.float32)


def test_threshold_drops_low_scores_and_counts_them():
    policy = BoxPolicy(score_threshold=0.5, max_crops=5, rank_by="score", margin=0)
    selection = select_boxes(BOXES, SCORES, W, H, policy)
    assert selection.boxes == [[0, 0, 30, 30], [60, 20, 140, 80]]
    assert selection.scores == pytest.approx([0.9, 0.6])
    assert selection.dropped == {"below score threshold": 1}
    assert not selection.fallback and selection.candidates == 3


@pytest.mark.parametrize(
    ("rank_by", "first"),
    [("score", [0, 0, 30, 30]), ("area", [60, 20, 140, 80]), ("centrality", [60, 20, 140, 80]),
     ("score*area*centrality", [60, 20, 140, 80])],
)  # fmt: skip
def test_ranking_modes(rank_by, first):
    policy = BoxPolicy(score_threshold=0.5, max_crops=1, rank_by=rank_by, margin=0)
    selection = select_boxes(BOXES, SCORES, W, H, policy)
    assert selection.boxes == [first]
    assert selection.dropped["beyond max crops"] == 1
    assert rank_by in selection.reason


def test_weighted_ranking_follows_the_weights():
    by_score = BoxPolicy(score_threshold=0.5, rank_by="weighted", weights=(1.0, 0.0, 0.0), margin=0)
    by_centre = BoxPolicy(score_threshold=0.5, rank_by="weighted", weights=(0.1, 0.0, 1.0), margin=0)
    assert select_boxes(BOXES, SCORES, W, H, by_score).boxes == [[0, 0, 30, 30]]
    assert select_boxes(BOXES, SCORES, W, H, by_centre).boxes == [[60, 20, 140, 80]]


def test_margin_expands_and_clips_to_the_image():
    assert expand(np.array([60, 20, 140, 80]), 0.1, W, H) == pytest.approx([52, 14, 148, 86])
    assert expand(np.array([0, 0, 30, 30]), 0.5, W, H) == pytest.approx([0, 0, 45, 45])
    selection = select_boxes([[-10, -5, 210, 120]], [0.9], W, H, BoxPolicy(margin=0.2, min_area_fraction=0))
    assert selection.boxes == [[0, 0, W, H]]


def test_min_size_in_pixels_and_fraction():
    tiny_px = select_boxes([[10, 10, 15, 60]], [0.9], W, H, BoxPolicy(min_size_px=8, min_area_fraction=0))
    assert tiny_px.fallback and tiny_px.dropped == {"below min size": 1}
    small_fraction = select_boxes([[10, 10, 30, 30]], [0.9], W, H, BoxPolicy(min_size_px=1, min_area_fraction=0.05))
    assert small_fraction.fallback and "min size" in small_fraction.reason
    kept = select_boxes([[10, 10, 30, 30]], [0.9], W, H, BoxPolicy(min_size_px=1, min_area_fraction=0.01))
    assert not kept.fallback


def test_fallback_to_full_image_is_recorded_with_the_reason():
    none = select_boxes(np.zeros((0, 4)), np.zeros(0), W, H)
    assert none.fallback and none.boxes == [[0, 0, W, H]] and none.reason == "no detection"
    low = select_boxes(BOXES, SCORES, W, H, BoxPolicy(score_threshold=0.95))
    assert low.fallback and low.reason == "no box above score threshold 0.95"
    assert low.dropped == {"below score threshold": 3} and low.candidates == 3
    without = select_boxes(BOXES, SCORES, W, H, BoxPolicy(score_threshold=0.95, fallback_full_image=False))
    assert without.boxes == [] and not without.fallback


def test_selection_round_trips_through_json():
    selection = select_boxes(BOXES, SCORES, W, H, BoxPolicy(score_threshold=0.5, max_crops=2))
    again = Selection.from_dict(json.loads(json.dumps(selection.to_dict())))
    assert again == selection
    policy = BoxPolicy(rank_by="weighted", weights=(1, 2, 3))
    assert BoxPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


def test_invalid_policy_is_refused():
    with pytest.raises(ValueError, match="rank_by"):
        BoxPolicy(rank_by="size")
    with pytest.raises(ValueError, match="max_crops"):
        BoxPolicy(max_crops=0)


def test_crop_cuts_the_boxes_and_scales_to_a_resized_image():
    image = Image.new("RGB", (W, H), "white")
    image.paste((255, 0, 0), (60, 20, 140, 80))
    selection = select_boxes([[60, 20, 140, 80]], [0.9], W, H, BoxPolicy(margin=0))
    (piece,) = crop(image, selection)
    assert piece.size == (80, 60) and piece.getcolors() == [(80 * 60, (255, 0, 0))]
    (half,) = crop(image.resize((W // 2, H // 2)), selection)
    assert half.size == (40, 30)
