import json

from safetensors.torch import load_file
from transformers import AutoConfig, AutoProcessor

from moon_swift.apps.tiny_model import make_tiny


def test_make_tiny_writes_a_complete_model_directory(tiny_moon_dir):
    names = {p.name for p in tiny_moon_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    config = AutoConfig.from_pretrained(tiny_moon_dir)
    assert config.model_type == "moon" and config.architectures == ["MoonModel"]
    processor = AutoProcessor.from_pretrained(tiny_moon_dir)
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == 151652
    assert tokenizer.decode(tokenizer("Blue Skirt ünïcode")["input_ids"]) == "Blue Skirt ünïcode"


def test_make_tiny_is_deterministic_for_a_seed(tiny_moon_dir, tmp_path):
    make_tiny(tmp_path / "same", seed=0)
    make_tiny(tmp_path / "other", seed=1)
    reference = load_file(tiny_moon_dir / "model.safetensors")
    same = load_file(tmp_path / "same" / "model.safetensors")
    other = load_file(tmp_path / "other" / "model.safetensors")
    assert reference.keys() == same.keys() == other.keys()
    assert all((reference[k] == same[k]).all() for k in reference)
    assert any(not (reference[k] == other[k]).all() for k in reference)
    assert json.loads((tmp_path / "same" / "moon_tiny.json").read_text())["seed"] == 0
