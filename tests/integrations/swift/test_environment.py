"""moon's environment variables against a checkpoint's saved settings: overrides are logged, conflicts stop."""

import json
import logging

import pytest

from moon_swift.core.errors import MoonInputError
from moon_swift.core.settings import EmbeddingSettings
from moon_swift.integrations.swift.environment import infonce_options, resolve_settings

CROPS = EmbeddingSettings(image_views="both", boxes="/train/boxes.jsonl",
                          detector={"config": "c.py", "checkpoint": "w.pth", "fingerprint": "a" * 16})  # fmt: skip


def test_without_variables_the_checkpoint_settings_are_used_unchanged():
    assert resolve_settings(CROPS, "/ckpt", training=False, env={}) == CROPS


def test_a_conflicting_image_view_override_stops_naming_setting_saved_and_given_values():
    with pytest.raises(MoonInputError) as error:
        resolve_settings(CROPS, "/ckpt", training=False, env={"MOON_IMAGE_VIEWS": "original"})
    message = str(error.value)
    assert "MOON_IMAGE_VIEWS='original'" in message and "image_views='both'" in message
    assert "/ckpt/moon_embedding.json" in message


def test_where_the_box_store_is_may_be_given_anew_and_is_logged_beside_the_saved_value(caplog):
    with caplog.at_level(logging.WARNING, logger="moon_swift"):
        settings = resolve_settings(CROPS, "/ckpt", training=False, env={"MOON_BOXES": "/serve/boxes.jsonl"})
    assert settings.boxes == "/serve/boxes.jsonl" and settings.image_views == "both"
    assert "MOON_BOXES='/serve/boxes.jsonl' overrides boxes='/train/boxes.jsonl' saved in /ckpt" in caplog.text


def test_training_may_change_the_views_and_records_the_detector_of_its_boxes(tmp_path, caplog):
    store = tmp_path / "boxes.jsonl"
    line = {"sha256": "0" * 64, "image": "x.jpg", "width": 9, "height": 9, "boxes": [[0, 0, 9, 9]], "scores": [1.0],
            "fallback": False, "reason": "t", "detector": {"config": "c.py", "checkpoint": "w.pth",
            "fingerprint": "b" * 16}, "policy": {"score_threshold": 0.5}}  # fmt: skip
    store.write_text(json.dumps(line) + "\n")
    with caplog.at_level(logging.WARNING, logger="moon_swift"):
        trained = resolve_settings(EmbeddingSettings(), "/base", training=True, env={"MOON_BOXES": str(store)})
    assert trained.image_views == "both"  # a box store given for training means [original, crop]
    assert trained.detector["fingerprint"] == "b" * 16 and trained.box_policy == {"score_threshold": 0.5}
    assert "MOON_IMAGE_VIEWS='both' overrides image_views='original'" in caplog.text


def test_loss_options_come_from_the_moon_infonce_variables_and_bad_values_are_named():
    options = infonce_options({"MOON_INFONCE_QUEUE_SIZE": "64", "MOON_INFONCE_SPATIAL": "false"})
    assert options.queue_size == 64 and options.spatial is False and options.temperature == 0.05
    with pytest.raises(MoonInputError, match="MOON_INFONCE_QUEUE_SIZE='lots': expected an integer"):
        infonce_options({"MOON_INFONCE_QUEUE_SIZE": "lots"})
    with pytest.raises(MoonInputError, match="temperature must be > 0"):
        infonce_options({"MOON_INFONCE_TEMPERATURE": "0"})
