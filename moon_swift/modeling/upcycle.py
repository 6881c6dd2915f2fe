"""Turn a Qwen2.5-VL / Qwen2-VL checkpoint (as downloaded from ModelScope) into a MOON checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..core.errors import MoonInputError
from ..core.settings import EmbeddingSettings
from .chat_format import moon_chat_template
from .configuration_moon import SUPPORTED_BASE_MODEL_TYPES, MoonConfig
from .modeling_moon import LearnedTemperature, MoonModel
from .processing_moon import MoonProcessor

_BASE_CLASSES = {"qwen2_5_vl": Qwen2_5_VLForConditionalGeneration, "qwen2_vl": Qwen2VLForConditionalGeneration}
# Keys of a base config that describe the base class, not the model: MoonConfig sets its own.
_NOT_COPIED = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path")


def read_model_type(folder: Path) -> str | None:
    """``model_type`` of the checkpoint folder's ``config.json``; errors name the file."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MoonInputError("no config.json: not a model checkpoint directory", file=str(config_path))
    try:
        return json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as error:
        raise MoonInputError(f"config.json is not valid JSON ({error})", file=str(config_path)) from error


def read_base_model_type(base_dir: Path) -> str:
    config_path = base_dir / "config.json"
    model_type = read_model_type(base_dir)
    if model_type not in SUPPORTED_BASE_MODEL_TYPES:
        raise MoonInputError(
            f"base model_type is {model_type!r}; MOON upcycles Qwen2.5-VL or Qwen2-VL checkpoints "
            f"(model_type one of {SUPPORTED_BASE_MODEL_TYPES})",
            file=str(config_path),
            field="model_type",
        )
    return model_type


def moon_config_from_base(base_dir: Path, **moon_options: Any) -> MoonConfig:
    base_model_type = read_base_model_type(base_dir)
    base_config = AutoConfig.from_pretrained(base_dir).to_dict()
    for key in _NOT_COPIED:
        base_config.pop(key, None)
    config = MoonConfig(**{**base_config, "base_model_type": base_model_type, **moon_options})
    config.architectures = ["MoonModel"]
    return config


def upcycle(
    base_dir: str | Path, out_dir: str | Path, *, noise: float = 0.0, seed: int = 0, **moon_options: Any
) -> list[Path]:
    """Write a MOON checkpoint built from the base checkpoint's weights; returns the files written.

    ``moon_options`` are :class:`MoonConfig` fields (``moe_layers``, ``num_experts``, ...). Every
    expert of a MoE layer starts as a copy of that layer's dense FFN, plus Gaussian noise of
    ``noise`` times each weight's standard deviation; routers start at N(0, initializer_range).
    With ``noise=0`` the MOON model computes exactly what the dense model does (top-k weights are
    renormalised, so any mixture of equal experts is the dense FFN). Non-MoE tensors are taken
    over without copying, and the language-model head is dropped: MOON embeds.
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    config = moon_config_from_base(base_dir, **moon_options)
    base = _BASE_CLASSES[config.base_model_type].from_pretrained(base_dir, dtype="auto")
    with torch.device("meta"):
        moon = MoonModel(config)
    state = upcycled_state_dict(moon, base.model.state_dict(), noise=noise, seed=seed)
    moon.model.load_state_dict(state, strict=True, assign=True)
    if config.learnable_temperature:  # built on the meta device like the rest: a real one at its initial value
        moon.temperature = LearnedTemperature(config.init_temperature)
    moon.to(base.dtype).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    moon.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.chat_template = moon_chat_template()  # not the base's: Qwen's default system turn is not MOON's format
    processor = MoonProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(base_dir),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    processor.save_pretrained(out_dir)
    EmbeddingSettings().save(out_dir)  # original images, MOON's chat format: training records its own
    return sorted(p for p in out_dir.iterdir() if p.is_file())


def upcycled_state_dict(
    moon: MoonModel, dense: dict[str, torch.Tensor], *, noise: float, seed: int
) -> dict[str, torch.Tensor]:
    """The dense state dict with each MoE layer's FFN replicated into its experts (keys of ``moon.model``)."""
    generator = torch.Generator().manual_seed(seed)
    state = dict(dense)
    std = moon.config.text_config.initializer_range
    for index, moe in moon.moe_layers().items():
        prefix = f"language_model.layers.{index}.mlp."
        ffn = {key[len(prefix) :]: state.pop(key) for key in list(state) if key.startswith(prefix)}
        for name, _ in moe.named_parameters():
            if name == "router.weight":
                shape = moe.router.weight.shape
                state[prefix + name] = torch.randn(shape, generator=generator).mul_(std).to(next(iter(ffn.values())))
                continue
            weight = ffn[name.split(".", 2)[-1] if name.startswith("experts.") else name.split(".", 1)[1]]
            copy = weight.clone()
            if noise:
                copy += torch.randn(weight.shape, generator=generator).to(weight) * (noise * weight.float().std())
            state[prefix + name] = copy
    return state
