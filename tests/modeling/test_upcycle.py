import json

import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoModel, AutoProcessor

from moon_swift.apps.tiny_model import TinySpec, make_tiny
from moon_swift.core.errors import MoonInputError
from moon_swift.modeling import MoonModel, MoonProcessor
from moon_swift.modeling.upcycle import upcycle

BASE_CLASSES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}


ABLATIONS = {
    "dense": {},
    "guided_moe": {"moe_layers": "all", "num_experts": 4, "moe_top_k": 2},
    "plain_moe_shared": {"moe_layers": [1], "num_experts": 3, "moe_top_k": 1, "guided_experts": False,
                         "shared_expert": True},
}  # fmt: skip


@pytest.mark.parametrize(
    "base_model_type, ablation",
    [("qwen2_5_vl", "dense"), ("qwen2_vl", "dense"), ("qwen2_5_vl", "guided_moe"), ("qwen2_vl", "plain_moe_shared")],
)
def test_upcycled_model_embeds_exactly_like_the_dense_base(base_model_type, ablation, tmp_path, catalog_images):
    base_dir, moon_dir = tmp_path / "base", tmp_path / "moon"
    make_tiny(base_dir, seed=3, spec=TinySpec(base_model_type=base_model_type), as_base=True)
    assert json.loads((base_dir / "config.json").read_text())["model_type"] == base_model_type
    upcycle(base_dir, moon_dir, **ABLATIONS[ablation])

    moon = AutoModel.from_pretrained(moon_dir).eval()
    base = getattr(transformers, BASE_CLASSES[base_model_type]).from_pretrained(base_dir).eval()
    assert isinstance(moon, MoonModel) and moon.config.base_model_type == base_model_type
    processor = AutoProcessor.from_pretrained(moon_dir)
    assert isinstance(processor, MoonProcessor)
    image = Image.open(catalog_images[2]).convert("RGB")
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Navy Blue Jeans<|im_end|>\n"
    inputs = processor(text=[text, "<|im_start|>user\njeans<|im_end|>\n"], images=[image], return_tensors="pt",
                       padding=True)  # fmt: skip
    assert not inputs.pop("token_type_ids").any()  # no markup in the text: every token routed
    token_types = torch.zeros_like(inputs["input_ids"])
    token_types[0, -5:-3], token_types[1, 2] = 1, 2  # some category and attribute tokens
    with torch.no_grad():
        embeddings = moon(**inputs, token_type_ids=token_types).last_hidden_state
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


def test_moe_checkpoint_reloads_natively_with_experts_and_router(tmp_path):
    make_tiny(tmp_path / "base", seed=3, as_base=True)
    upcycle(tmp_path / "base", tmp_path / "moon", moe_layers=[0], num_experts=2, noise=0.01, seed=5)
    model, info = AutoModel.from_pretrained(tmp_path / "moon", output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    moe = model.moe_layers()[0]
    experts = moe.experts
    assert not torch.equal(experts[0].up_proj.weight, experts[1].up_proj.weight)  # noise made them differ
    model.save_pretrained(tmp_path / "again")
    again = AutoModel.from_pretrained(tmp_path / "again")
    assert torch.equal(again.moe_layers()[0].router.weight, moe.router.weight)
    assert torch.equal(again.moe_layers()[0].category_expert.down_proj.weight, moe.category_expert.down_proj.weight)
