import json

import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoModel, AutoProcessor

from moon_swift.errors import MoonInputError
from moon_swift.modeling import MoonModel, MoonProcessor
from moon_swift.modeling.tiny import TinySpec, make_tiny
from moon_swift.modeling.upcycle import upcycle

BASE_CLASSES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}


@pytest.mark.parametrize("base_model_type", ["qwen2_5_vl", "qwen2_vl"])
def test_upcycled_model_embeds_exactly_like_the_dense_base(base_model_type, tmp_path, catalog_images):
    base_dir, moon_dir = tmp_path / "base", tmp_path / "moon"
    make_tiny(base_dir, seed=3, spec=TinySpec(base_model_type=base_model_type), as_base=True)
    assert json.loads((base_dir / "config.json").read_text())["model_type"] == base_model_type
    upcycle(base_dir, moon_dir)

    moon = AutoModel.from_pretrained(moon_dir).eval()
    base = getattr(transformers, BASE_CLASSES[base_model_type]).from_pretrained(base_dir).eval()
    assert isinstance(moon, MoonModel) and moon.config.base_model_type == base_model_type
    processor = AutoProcessor.from_pretrained(moon_dir)
    assert isinstance(processor, MoonProcessor)
    image = Image.open(catalog_images[2]).convert("RGB")
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Navy Blue Jeans<|im_end|>\n"
    inputs = processor(text=[text, "<|im_start|>user\njeans<|im_end|>\n"], images=[image], return_tensors="pt",
                       padding=True)  # fmt: skip
    with torch.no_grad():
        embeddings = moon(**inputs).last_hidden_state
        hidden = base.model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert (embeddings - reference).abs().max().item() <= 1e-5


def test_upcycle_rejects_a_checkpoint_that_is_not_qwen_vl(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(MoonInputError, match=r"config.json.*model_type.*'llama'"):
        upcycle(tmp_path, tmp_path / "out")


def test_upcycle_rejects_a_directory_without_config(tmp_path):
    with pytest.raises(MoonInputError, match="no config.json"):
        upcycle(tmp_path, tmp_path / "out")
