"""MoonProcessor: MOON's field markup to token types (as the swift template does), padding, no truncation."""

import pytest
from transformers import AutoProcessor

from moon_swift.core.errors import MoonInputError


def test_markup_becomes_token_types_and_padding_follows_the_requested_side(tiny_moon_dir):
    processor = AutoProcessor.from_pretrained(tiny_moon_dir)
    texts = ["a <category>Shoes</category> b <attributes>red</attributes><group_id>P1</group_id>", "c"]
    for side in ("left", "right"):
        out = processor(text=texts, padding=True, padding_side=side, return_tensors="pt")
        assert out["input_ids"].shape == out["token_type_ids"].shape == out["attention_mask"].shape
        row = out["input_ids"][0].tolist()
        assert processor.tokenizer.decode(row) == "a Shoes b red"
        types = out["token_type_ids"][0].tolist()
        assert "".join(str(t) for t in types) == "00" + "1" * 5 + "000" + "2" * 3
        short = out["attention_mask"][1].tolist()
        assert short == ([0] * (len(row) - 1) + [1] if side == "left" else [1] + [0] * (len(row) - 1))


@pytest.mark.parametrize("kwargs", [{"truncation": True}, {"max_length": 4}, {"padding": True, "max_length": 4}])
def test_truncation_is_refused_rather_than_cutting_markers_or_image_tokens(tiny_moon_dir, kwargs):
    processor = AutoProcessor.from_pretrained(tiny_moon_dir)
    with pytest.raises(MoonInputError, match="does not truncate"):
        processor(text=["a <category>Shoes</category> b"], **kwargs)
