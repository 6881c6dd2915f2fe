"""MoonConfig: a Qwen2.5-VL (or Qwen2-VL) configuration plus MOON's embedding options."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

#: Base architectures MOON can be built on, keyed by their transformers ``model_type``.
SUPPORTED_BASE_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")
SUPPORTED_POOLING = ("mean", "last")


@strict
class MoonConfig(Qwen2_5_VLConfig):
    """Configuration of :class:`MoonModel`.

    It *is* a Qwen2.5-VL configuration (same sub-configs, same token ids), so every tool that
    reads Qwen2.5-VL configs (swift's model arch keys, DeepSpeed, peft) keeps working. A
    Qwen2-VL base is kept as ``base_model_type="qwen2_vl"`` with its own vision config.

    Args:
        base_model_type: ``"qwen2_5_vl"`` or ``"qwen2_vl"``: which vision tower and decoder to build.
        pooling: ``"mean"`` (MOON: mean of the last hidden states over valid tokens) or ``"last"``
            (the last valid token, swift's default for embedding models; kept for ablations).
        normalize: L2-normalise the pooled embedding (MOON does; cosine similarity = dot product).
    """

    model_type = "moon"

    base_model_type: str = "qwen2_5_vl"
    pooling: str = "mean"
    normalize: bool = True

    def __post_init__(self, **kwargs):
        if self.base_model_type not in SUPPORTED_BASE_MODEL_TYPES:
            raise ValueError(
                f"MoonConfig.base_model_type={self.base_model_type!r} is not supported; "
                f"expected one of {SUPPORTED_BASE_MODEL_TYPES}."
            )
        if self.pooling not in SUPPORTED_POOLING:
            raise ValueError(f"MoonConfig.pooling={self.pooling!r}: expected one of {SUPPORTED_POOLING}.")
        if self.base_model_type == "qwen2_vl" and isinstance(self.vision_config, dict):
            self.vision_config = Qwen2VLVisionConfig(**self.vision_config)
        super().__post_init__(**kwargs)
