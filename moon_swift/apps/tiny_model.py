"""Build a complete, tiny, *real* MOON model directory locally (no hub): config, weights, tokenizer, processor.

Tests and the CPU demo need a model that exercises the real Qwen2.5-VL code paths (vision tower,
M-RoPE, ``<|image_pad|>`` expansion at id 151655) but trains in seconds on two cores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..core.settings import EmbeddingSettings
from ..modeling.chat_format import moon_chat_template
from ..modeling.configuration_moon import MOON_FIELDS, MoonConfig
from ..modeling.modeling_moon import MoonModel
from ..modeling.processing_moon import MoonProcessor

# Qwen2 special tokens at their real ids: swift's Qwen2-VL template and transformers'
# Qwen2.5-VL code hard-code several of them (image pad 151655, vision start 151652, ...).
QWEN_SPECIAL_TOKENS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
QWEN_VOCAB_SIZE = 151936  # Qwen2.5-VL's padded embedding size

#: The chat template Qwen2-VL-*-Instruct and Qwen2.5-VL-*-Instruct ship (``chat_template.json``), verbatim:
#: with its default system turn, so that tests see what users of the real checkpoints see.
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class TinySpec:
    """Sizes of the tiny model (defaults train a step in well under a second on 2 CPU cores)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_heads: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 112 * 112
    base_model_type: str = "qwen2_5_vl"
    extra_config: dict = field(default_factory=dict)


#: Qwen2.5-VL-3B-Instruct's sizes: a randomly initialised model of the real scale, built without a download
QWEN2_5_VL_3B = TinySpec(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, vision_depth=32, vision_hidden_size=1280, vision_intermediate_size=3420,
                         vision_num_heads=16)  # fmt: skip


def _byte_level_vocab() -> dict[str, int]:
    """GPT-2 byte-to-unicode alphabet (ids 0..255) plus the Qwen special tokens at their real ids."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    byte_values, chars, extra = printable[:], printable[:], 0
    for b in range(256):
        if b not in byte_values:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    vocab = {chr(c): i for i, c in enumerate(chars)}
    vocab.update(QWEN_SPECIAL_TOKENS)
    return vocab


def build_tokenizer(chat_template: str = QWEN_VL_CHAT_TEMPLATE) -> Qwen2Tokenizer:
    """A byte-level Qwen2 tokenizer (no merges) whose special tokens have Qwen's real ids."""
    tokenizer = Qwen2Tokenizer(
        vocab=_byte_level_vocab(),
        merges=[],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS),
        model_max_length=32768,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def build_config(spec: TinySpec) -> MoonConfig:
    head_dim = spec.hidden_size // spec.num_attention_heads
    third = head_dim // 2 // 3
    mrope_section = [head_dim // 2 - 2 * third, third, third]
    if spec.base_model_type == "qwen2_vl":
        vision_config = {
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_hidden_size,
            "hidden_size": spec.hidden_size,
            "mlp_ratio": spec.vision_intermediate_size // spec.vision_hidden_size,
            "num_heads": spec.vision_num_heads,
        }
    else:
        vision_config = {
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "num_heads": spec.vision_num_heads,
            "out_hidden_size": spec.hidden_size,
            "fullatt_block_indexes": [spec.vision_depth - 1],
            "window_size": 56,
        }
    text_config = {
        "vocab_size": QWEN_VOCAB_SIZE,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        "bos_token_id": QWEN_SPECIAL_TOKENS["<|endoftext|>"],
        "eos_token_id": QWEN_SPECIAL_TOKENS["<|im_end|>"],
        "pad_token_id": QWEN_SPECIAL_TOKENS["<|endoftext|>"],
    }
    config = MoonConfig(
        text_config=text_config,
        vision_config=vision_config,
        base_model_type=spec.base_model_type,
        **spec.extra_config,
    )
    config.architectures = ["MoonModel"]
    config.dtype = "float32"
    return config


def _base_model(config: MoonConfig):
    """The dense Qwen model a MOON config was derived from (random weights)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    values = config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", *MOON_FIELDS):
        values.pop(key, None)
    if config.base_model_type == "qwen2_vl":
        base_config, base_cls = Qwen2VLConfig(**values), Qwen2VLForConditionalGeneration
    else:
        base_config, base_cls = Qwen2_5_VLConfig(**values), Qwen2_5_VLForConditionalGeneration
    base_config.architectures = [base_cls.__name__]
    return base_cls(base_config)


def build_processor(spec: TinySpec, chat_template: str | None = None) -> MoonProcessor:
    """The processor of the tiny model: MOON's chat format unless another ``chat_template`` is given."""
    merge = 2
    # The PIL image processor: the torchvision one needs a torchvision build matching torch.
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=spec.min_pixels, max_pixels=spec.max_pixels, patch_size=14, temporal_patch_size=2, merge_size=merge
    )
    chat_template = chat_template or moon_chat_template()
    return MoonProcessor(image_processor=image_processor, tokenizer=build_tokenizer(chat_template),
                         chat_template=chat_template)  # fmt: skip


def make_tiny(out_dir: str | Path, seed: int = 0, spec: TinySpec | None = None, *, as_base: bool = False) -> list[Path]:
    """Write a tiny MOON model to ``out_dir``; the same seed gives byte-identical weights.

    With ``as_base=True`` it writes the dense base instead, laid out as ModelScope ships
    Qwen2.5-VL / Qwen2-VL (``*ForConditionalGeneration``, ``preprocessor_config.json``): the input
    of ``moon-swift upcycle``. Returns the files written.
    """
    spec = spec or TinySpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = build_config(spec)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = _base_model(config) if as_base else MoonModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.eval().save_pretrained(out)
    processor = build_processor(spec, QWEN_VL_CHAT_TEMPLATE if as_base else None)
    if as_base:  # hub layout: separate tokenizer and image-processor files, Qwen's own chat template
        processor.tokenizer.save_pretrained(out)
        processor.image_processor.save_pretrained(out)
        (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_VL_CHAT_TEMPLATE}, indent=2) + "\n")
    else:
        processor.save_pretrained(out)
        EmbeddingSettings().save(out)
    (out / "moon_tiny.json").write_text(json.dumps({"seed": seed, "spec": asdict(spec)}, indent=2) + "\n")
    return sorted(p for p in out.iterdir() if p.is_file())
