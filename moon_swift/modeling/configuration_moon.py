"""MoonConfig: a Qwen2.5-VL (or Qwen2-VL) configuration plus MOON's embedding options."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig

from ..core.errors import MoonInputError

#: Base architectures MOON can be built on, keyed by their transformers ``model_type``.
SUPPORTED_BASE_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")
SUPPORTED_POOLING = ("mean", "last")
#: The fields MoonConfig adds to Qwen2.5-VL's.
MOON_FIELDS = (
    "base_model_type", "pooling", "normalize", "moe_layers", "num_experts", "moe_top_k", "guided_experts",
    "shared_expert", "moe_aux_loss_coef", "moe_z_loss_coef", "learnable_temperature", "init_temperature",
)  # fmt: skip


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
        moe_layers: decoder layers whose FFN becomes a :class:`GuidedMoE`: a list of indices,
            ``"all"``, or ``"every:K"`` (layers K-1, 2K-1, ...). Empty (default): the dense model.
        num_experts: routed general experts per MoE layer.
        moe_top_k: experts each routed token goes to (softmax over the chosen k, renormalised).
        guided_experts: category and attribute experts on (MOON) or off (plain MoE: every token routed).
        shared_expert: an always-on expert averaged with the token's expert output.
        moe_aux_loss_coef: weight of the Switch/Mixtral load-balancing loss.
        moe_z_loss_coef: weight of the router z-loss (0: off).
        learnable_temperature: learn the contrastive temperature as a model parameter
            (``logit_scale``, CLIP-style); ``moon_infonce`` then uses it instead of its fixed one.
        init_temperature: its starting value.
    """

    model_type = "moon"
    # Trainer.evaluate gathers every other output as "logits": only the embedding is one
    keys_to_ignore_at_inference = ["group_ids", "moe_aux_loss", "logit_scale", "hidden_states", "attentions"]

    base_model_type: str = "qwen2_5_vl"
    pooling: str = "mean"
    normalize: bool = True
    moe_layers: list[int] | str | None = None
    num_experts: int = 4
    moe_top_k: int = 2
    guided_experts: bool = True
    shared_expert: bool = False
    moe_aux_loss_coef: float = 0.01
    moe_z_loss_coef: float = 0.0
    learnable_temperature: bool = False
    init_temperature: float = 0.05

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
        self.moe_layers = resolve_moe_layers(self.moe_layers, self.text_config.num_hidden_layers)
        if not 1 <= self.moe_top_k <= self.num_experts:
            raise MoonInputError(
                f"moe_top_k={self.moe_top_k} must be between 1 and num_experts={self.num_experts}", field="moe_top_k"
            )

    @property
    def is_moe(self) -> bool:
        return bool(self.moe_layers)


def resolve_moe_layers(spec: list[int] | str | None, num_layers: int) -> list[int]:
    """``None``/``[]`` -> dense; ``"all"``; ``"every:K"``; or explicit indices (negative count from the end)."""
    if spec is None or spec == "" or spec == []:
        return []
    if isinstance(spec, str):
        if spec == "all":
            return list(range(num_layers))
        if spec.startswith("every:") and spec[len("every:") :].isdigit() and int(spec[len("every:") :]) > 0:
            step = int(spec[len("every:") :])
            return list(range(step - 1, num_layers, step))
        if all(part.strip().lstrip("-").isdigit() for part in spec.split(",")):
            spec = [int(part) for part in spec.split(",")]
        else:
            raise MoonInputError(f"moe_layers={spec!r}: use a list of indices, 'all' or 'every:K'", field="moe_layers")
    layers = sorted({index + num_layers if index < 0 else index for index in spec})
    out_of_range = [index for index in layers if not 0 <= index < num_layers]
    if out_of_range:
        raise MoonInputError(
            f"moe_layers {out_of_range} out of range: the decoder has {num_layers} layers (0..{num_layers - 1})",
            field="moe_layers",
        )
    return layers
