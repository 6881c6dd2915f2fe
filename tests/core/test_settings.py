"""The embedding settings a checkpoint carries (``moon_embedding.json``)."""

import json

import pytest

from moon_swift.core.errors import MoonInputError
from moon_swift.core.settings import EmbeddingSettings, load_settings, settings_of


def test_settings_round_trip_through_the_checkpoint_file(tmp_path):
    saved = EmbeddingSettings(image_views="both", boxes="/data/boxes.jsonl", missing_boxes="full",
                              detector={"config": "c.py", "checkpoint": "w.pth", "fingerprint": "f" * 16},
                              training={"loss_type": "moon_infonce"})  # fmt: skip
    saved.save(tmp_path)
    assert load_settings(tmp_path) == saved
    assert load_settings(tmp_path / "elsewhere") is None


def test_the_first_directory_with_settings_wins(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "base").mkdir()
    EmbeddingSettings(image_views="crop", boxes="b.jsonl").save(tmp_path / "base")
    assert settings_of([tmp_path / "adapter", tmp_path / "base"]) == (
        EmbeddingSettings(image_views="crop", boxes="b.jsonl"), str(tmp_path / "base"))  # fmt: skip
    assert settings_of([tmp_path / "adapter"]) == (EmbeddingSettings(), None)


@pytest.mark.parametrize(
    "content, pattern",
    [
        ({"image_views": "both", "colour_jitter": 1}, r"unknown settings \['colour_jitter'\]"),
        ({"image_views": "sideways"}, "image_views must be one of"),
        ({"markup": {"category_tags": ["<cat>", "</cat>"]}}, "trained with the markup contract"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_a_settings_file_this_version_cannot_honour_is_refused_naming_it(tmp_path, content, pattern):
    (tmp_path / "moon_embedding.json").write_text(json.dumps(content))
    with pytest.raises(MoonInputError, match=pattern) as error:
        load_settings(tmp_path)
    assert "moon_embedding.json" in str(error.value)
