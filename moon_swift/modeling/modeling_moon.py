"""MoonModel: a Qwen2.5-VL / Qwen2-VL backbone that returns one L2-normalised product embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ModelOutput
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel, Qwen2_5_VLPreTrainedModel
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

from ..core.errors import MoonInputError
from .configuration_moon import MoonConfig
from .guided_moe import GuidedMoE, MoeSettings

_BACKBONES = {"qwen2_5_vl": Qwen2_5_VLModel, "qwen2_vl": Qwen2VLModel}


@dataclass
class MoonEmbeddingOutput(ModelOutput):
    """Output of :class:`MoonModel`.

    ``last_hidden_state`` holds the *pooled* float32 embedding of shape ``(batch, hidden)``: that is the
    key ms-swift's embedding losses, trainer and inference engine read, so the name follows swift.
    Per-token states are in ``hidden_states`` (the last entry is what was pooled) when
    ``output_hidden_states=True``. ``moe_aux_loss`` (MoE models) is the weighted auxiliary loss,
    detached: it is already applied to the gradients inside the MoE layers, so adding it to a loss
    would count it twice. It is there for logging. ``logit_scale`` (log inverse temperature) is
    returned when the temperature is learned; ``group_ids`` echoes the template's product/group
    ids so that ``moon_infonce`` can mask false negatives.
    """

    last_hidden_state: torch.FloatTensor | None = None
    moe_aux_loss: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    group_ids: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


#: positions pooled per step: float32 working copies are (batch, POOL_CHUNK, hidden), never (batch, length, hidden)
POOL_CHUNK = 256


class _WeightedSum(torch.autograd.Function):
    """``sum_l weights[b, l] * states[b, l]`` in float32, a chunk of positions at a time, both ways.

    Autograd through slices would give every chunk a full-size zero gradient; here backward writes each
    chunk of the one gradient the states need, in their own dtype (the memory floor). Autocast is off inside:
    under bf16 mixed precision (accelerate's autocast) the matmul would otherwise round each sum to bf16.
    """

    @staticmethod
    def forward(ctx, states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(states.dtype, torch.float32)  # float64 stays (gradcheck)
        weights = weights.to(dtype)
        ctx.save_for_backward(weights)
        ctx.states_dtype = states.dtype
        summed = states.new_zeros((states.shape[0], states.shape[2]), dtype=dtype)
        with torch.autocast(states.device.type, enabled=False):
            for start in range(0, states.shape[1], POOL_CHUNK):
                part = slice(start, start + POOL_CHUNK)
                summed += torch.bmm(weights[:, None, part], states[:, part].to(dtype))[:, 0]
        return summed

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weights,) = ctx.saved_tensors
        batch, length = weights.shape
        grad_states = grad.new_empty((batch, length, grad.shape[1]), dtype=ctx.states_dtype)
        for start in range(0, length, POOL_CHUNK):
            part = slice(start, start + POOL_CHUNK)
            grad_states[:, part] = weights[:, part, None] * grad[:, None, :]
        return grad_states, None


def mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Float32 mean of ``hidden_states`` over the positions where ``attention_mask`` is 1.

    A masked matmul accumulated in float32 over chunks of positions: a bf16 model's states are never
    copied to float32 whole (at 96 rows x 2k tokens x 2048 that copy alone is 1.6 GB), and the sum is not
    rounded back to bf16 (``benchmarks/pooling_memory.py``).
    """
    batch, length, _ = hidden_states.shape
    weights = (
        torch.ones(batch, length, device=hidden_states.device)
        if attention_mask is None
        else attention_mask.to(hidden_states.device, torch.float32)
    )
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
    return _WeightedSum.apply(hidden_states, weights)


def last_token_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Hidden state of the last valid token (works for left and right padding)."""
    if attention_mask is None:
        return hidden_states[:, -1].float()
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.bool() * positions).argmax(dim=1)
    return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last].float()


_POOLERS = {"mean": mean_pool, "last": last_token_pool}


class LearnedTemperature(nn.Module):
    """CLIP's learned inverse temperature, kept as its log (``logit_scale``).

    A module of its own, not a bare parameter, so that peft can train it under LoRA (``modules_to_save``
    holds modules); ``forward`` returns it, so it is read through peft's wrapper like any module.
    """

    def __init__(self, init_temperature: float):
        super().__init__()
        self.init_temperature = init_temperature
        # shape (1,), not a scalar: DeepSpeed's broadcast of the initial weights cannot view 0-d tensors
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1.0 / init_temperature)))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1.0 / self.init_temperature))

    def forward(self) -> torch.Tensor:
        return self.logit_scale[0]


class MoonModel(Qwen2_5_VLPreTrainedModel):
    """MOON product embedder.

    The backbone is stored as ``self.model`` (a ``Qwen2_5_VLModel``), so parameter names are the
    ones of ``Qwen2_5_VLForConditionalGeneration`` minus ``lm_head``: ms-swift's ``qwen2_vl`` arch
    keys (``model.visual``, ``model.language_model``) apply unchanged and a dense Qwen2.5-VL
    checkpoint upcycles by copying tensors.
    """

    config_class = MoonConfig
    config: MoonConfig
    _no_split_modules = [
        "Qwen2_5_VLDecoderLayer",
        "Qwen2_5_VLVisionBlock",
        "Qwen2VLDecoderLayer",
        "Qwen2VLVisionBlock",
    ]

    def __init__(self, config: MoonConfig):
        super().__init__(config)
        self.model = _BACKBONES[config.base_model_type](config)
        settings = MoeSettings(
            num_experts=config.num_experts,
            top_k=config.moe_top_k,
            guided_experts=config.guided_experts,
            shared_expert=config.shared_expert,
            aux_loss_coef=config.moe_aux_loss_coef,
            z_loss_coef=config.moe_z_loss_coef,
        )
        layers = self.model.language_model.layers
        for index in config.moe_layers:
            expert_cls = type(layers[index].mlp)
            layers[index].mlp = GuidedMoE(config.text_config, settings, expert_cls, layer_index=index)
        if config.learnable_temperature:
            self.temperature = LearnedTemperature(config.init_temperature)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, LearnedTemperature):
            module.reset_parameters()

    def moe_layers(self) -> dict[int, GuidedMoE]:
        """Decoder layer index -> its GuidedMoE (empty for the dense model)."""
        layers = self.model.language_model.layers
        return {index: layers[index].mlp for index in self.config.moe_layers}

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def pool(self, token_hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Pool per-token states into one float32 embedding per row, as configured (mean by default).

        Float32 whatever the model's dtype: rounding a unit vector back to bf16 costs ~4e-3 of cosine, 0.08
        of logit at temperature 0.05, and the same rounded vectors would reach faiss and ``swift deploy``.
        """
        pooled = _POOLERS[self.config.pooling](token_hidden_states, attention_mask)
        if self.config.normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        group_ids: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MoonEmbeddingOutput:
        """``token_type_ids`` (same shape as ``input_ids``): 1 = category token, 2 = attribute token,
        0 = anything else; the ``moon`` template produces them. Only MoE layers read them."""
        kwargs.pop("use_cache", None)
        kwargs.pop("labels", None)
        moe_layers = self.moe_layers()
        if moe_layers:
            self._set_routing_context(moe_layers.values(), token_type_ids, attention_mask, input_ids, inputs_embeds)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            use_cache=False,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **kwargs,
        )
        mask = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        aux = [moe.last_aux_loss for moe in moe_layers.values() if moe.last_aux_loss is not None]
        return MoonEmbeddingOutput(
            last_hidden_state=self.pool(outputs.last_hidden_state, mask),
            moe_aux_loss=torch.stack(aux).sum() if aux else None,
            logit_scale=self.temperature() if self.config.learnable_temperature else None,
            group_ids=group_ids,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @staticmethod
    def _set_routing_context(moe_layers, token_type_ids, attention_mask, input_ids, inputs_embeds) -> None:
        shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:2])
        if token_type_ids is not None and tuple(token_type_ids.shape) != shape:
            raise MoonInputError(
                f"token_type_ids has shape {tuple(token_type_ids.shape)} but the inputs have shape {shape}",
                field="token_type_ids",
            )
        valid = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
        for moe in moe_layers:
            moe.set_routing_context(token_type_ids, valid)
