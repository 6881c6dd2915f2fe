"""GuidedMoE: MOON's mixture of experts that replaces a decoder layer's FFN.

Category tokens go to a category expert, attribute tokens to an attribute expert, all other
tokens (vision, title, prompt) through a top-k softmax router to ``num_experts`` general experts;
an optional shared expert sees every token. Experts are instances of the backbone's own FFN class
(``Qwen2MLP``), so upcycling copies tensors and peft can put LoRA on ``gate_proj``/``up_proj``/
``down_proj`` of every expert.

Dispatch is grouped: every (token, expert) pair, guided or routed, is sorted by expert once, each
expert runs on one contiguous slice, and results are scattered back with a single ``index_add_``;
the Python loop is over experts, never over tokens. The only value the host reads is the expert
counts (the slice sizes); token types and padding enter as masks, not selections.
``benchmarks/moe_overhead.py`` times it against the FLOP floor and transformers' fused experts.

The auxiliary losses are applied by :class:`AuxLossInjector` (as Megatron-LM's
``MoEAuxLossAutoScaler`` does): the layer's output carries the aux loss's gradient into the
backward pass. This adds it exactly once whatever loss swift uses, and stays correct under
reentrant gradient checkpointing, where the first forward runs without autograd. Its gradient is
scaled by ``aux_grad_scale``, which the trainer sets to the factor the main loss gets (gradient
accumulation). With several data-parallel ranks the aux loss is that of the global batch, so that
training with N processes computes what one process does on the same tokens (see
:meth:`GuidedMoE._aux_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..core.markup import TOKEN_CATEGORY, TOKEN_OTHER


@dataclass
class MoeSettings:
    num_experts: int
    top_k: int
    guided_experts: bool
    shared_expert: bool
    aux_loss_coef: float
    z_loss_coef: float


class AuxLossInjector(torch.autograd.Function):
    """Identity on ``output``; in backward, also sends gradient ``scale`` into ``aux_loss``."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, aux_loss: torch.Tensor, scale: float):
        ctx.save_for_backward(aux_loss)
        ctx.scale = scale
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (aux_loss,) = ctx.saved_tensors
        return grad_output, torch.full_like(aux_loss, ctx.scale), None


class GuidedMoE(nn.Module):
    """Drop-in replacement for a decoder layer's ``mlp`` (input and output ``(batch, seq, hidden)``)."""

    def __init__(self, text_config, settings: MoeSettings, expert_cls: type[nn.Module], layer_index: int = -1):
        super().__init__()
        self.settings = settings
        self.layer_index = layer_index
        self.num_experts, self.top_k = settings.num_experts, settings.top_k
        self.router = nn.Linear(text_config.hidden_size, settings.num_experts, bias=False)
        self.experts = nn.ModuleList(expert_cls(text_config) for _ in range(settings.num_experts))
        if settings.guided_experts:
            self.category_expert = expert_cls(text_config)
            self.attribute_expert = expert_cls(text_config)
        if settings.shared_expert:
            self.shared_expert = expert_cls(text_config)
        # Set by MoonModel before each forward; kept until the next one so that activation
        # recomputation (gradient checkpointing) sees the same routing context.
        self.token_types: torch.Tensor | None = None
        self.valid_mask: torch.Tensor | None = None
        # Gradient scale of the injected aux loss: the trainer sets it to the main loss's factor (1 / gradient
        # accumulation steps with swift) before each forward.
        self.aux_grad_scale = 1.0
        # Detached statistics of the last forward, for logging.
        self.last_aux_loss: torch.Tensor | None = None
        self.last_load: torch.Tensor | None = None

    def set_routing_context(self, token_types: torch.Tensor | None, valid_mask: torch.Tensor | None) -> None:
        self.token_types, self.valid_mask = token_types, valid_mask

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        types, valid = self._flat_context(x.shape[0], x.device)
        routed = types == TOKEN_OTHER if self.settings.guided_experts else torch.ones_like(valid)
        logits = self.router(x.to(self.router.weight.dtype)).float()  # a float32 router under bf16 LoRA
        probs = logits.softmax(dim=-1)
        top_weights, top_experts = probs.topk(self.top_k, dim=-1)
        top_weights = top_weights / top_weights.sum(dim=-1, keepdim=True)  # renormalised: upcycling is exact
        if self.settings.guided_experts:
            top_experts, top_weights = self._guided_slots(types, routed, top_experts, top_weights)
        out = self._dispatch(x, top_experts, top_weights)
        aux_loss = self._aux_loss(logits, probs, top_experts, (routed & valid).to(probs.dtype))
        if self.settings.shared_expert:
            out = (out + self.shared_expert(x).to(out.dtype)) / 2  # equal experts at upcycling: out == dense
        if torch.is_grad_enabled() and aux_loss.requires_grad:
            out = AuxLossInjector.apply(out, aux_loss, self.aux_grad_scale)
        return out.view(shape)

    @property
    def _all_experts(self) -> list[nn.Module]:
        """Dispatch order: the general experts ``0..E-1``, then category ``E`` and attribute ``E+1``."""
        guided = [self.category_expert, self.attribute_expert] if self.settings.guided_experts else []
        return [*self.experts, *guided]

    def _guided_slots(
        self, types: torch.Tensor, routed: torch.Tensor, top_experts: torch.Tensor, top_weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Category / attribute tokens get their expert in slot 0 with weight 1 and the skipped id ``E+2`` in
        the other slots; routed tokens keep the router's choice. Every tensor keeps its shape (no host sync)."""
        guided_expert = torch.where(types == TOKEN_CATEGORY, self.num_experts, self.num_experts + 1)
        skipped = torch.full_like(top_experts, self.num_experts + 2)
        skipped[:, 0] = guided_expert
        only_first = torch.zeros_like(top_weights)
        only_first[:, 0] = 1.0
        keep = routed[:, None]
        return torch.where(keep, top_experts, skipped), torch.where(keep, top_weights, only_first)

    def _dispatch(self, x: torch.Tensor, slot_experts: torch.Tensor, slot_weights: torch.Tensor) -> torch.Tensor:
        """Sum over slots of weight x expert(token), one contiguous slice per expert.

        The (token, slot) pairs are sorted by expert once; the expert counts are the one value the host reads
        (slice sizes for the per-expert matmuls); skipped slots sort last and are never gathered."""
        experts = self._all_experts
        flat = slot_experts.reshape(-1)
        order = flat.argsort(stable=True)
        slots = torch.zeros(len(experts) + 1, dtype=torch.long, device=x.device)  # + the skipped id's count
        counts = slots.index_add_(0, flat, torch.ones_like(flat)).tolist()[: len(experts)]  # (bincount would
        # read the largest id first: a second sync on GPUs)
        used = order[: sum(counts)]
        source = used // self.top_k
        weights = slot_weights.reshape(-1)[used, None].to(x.dtype)
        grouped = x[source]
        results, start = [], 0
        for expert, count in zip(experts, counts, strict=True):  # an expert without tokens still runs (on 0
            segment = slice(start, start + count)  # rows): every parameter gets a gradient, zero
            results.append(expert(grouped[segment]) * weights[segment])
            start += count
        out = torch.zeros_like(x)
        return out.index_add_(0, source, torch.cat(results).to(out.dtype))

    def _flat_context(self, n_tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        types, valid = self.token_types, self.valid_mask
        types = torch.zeros(n_tokens, dtype=torch.long, device=device) if types is None else types.reshape(-1)
        valid = torch.ones(n_tokens, dtype=torch.bool, device=device) if valid is None else valid.reshape(-1).bool()
        if types.shape[0] != n_tokens or valid.shape[0] != n_tokens:
            raise ValueError(
                f"GuidedMoE got {n_tokens} tokens but token types for {types.shape[0]} and a mask for "
                f"{valid.shape[0]}: token_type_ids must have the shape of input_ids"
            )
        return types.to(device), valid.to(device)

    def _aux_loss(
        self, logits: torch.Tensor, probs: torch.Tensor, top_experts: torch.Tensor, counted: torch.Tensor
    ) -> torch.Tensor:
        """Weighted balance loss + z-loss of the tokens ``counted`` (1.0: routed and not padding; 0.0: other);
        sets ``last_aux_loss`` and ``last_load``. A mask, not a selection, so that no shape depends on the data.

        Training data-parallel, both are those of the global batch, as one process computes them on all
        ranks' tokens (balancing each rank's tokens alone is another loss: it is not linear in the tokens).
        The detached expert counts, probability sums and token count are summed over ranks; each rank
        differentiates its own tokens' sums over the global count, times the world size, because DDP and
        DeepSpeed average gradients over ranks. Every rank runs this once per layer and forward, so the
        all-reduces line up, also when gradient checkpointing recomputes the layer in backward. With no
        counted token the loss is 0 (and so is its gradient).
        """
        experts = self.num_experts
        general = top_experts.clamp(max=experts - 1)  # guided tokens' slots: counted 0 times, any index will do
        slot_counted = counted[:, None].expand_as(general).reshape(-1)
        counts = torch.zeros(experts, dtype=probs.dtype, device=probs.device).index_add_(0, general.reshape(-1),
                                                                                           slot_counted)  # fmt: skip
        prob_sum = (probs * counted[:, None]).sum(dim=0)
        z_sum = (torch.logsumexp(logits, dim=-1).square() * counted).sum()
        stats = torch.cat([counts, prob_sum.detach(), z_sum.detach()[None], counted.sum()[None]])
        world = _data_parallel_world_size() if torch.is_grad_enabled() and logits.requires_grad else 1
        if world > 1:
            stats = _all_reduce_sum(stats)
        n_tokens = stats[-1].clamp(min=1.0)
        self.last_load = stats[:experts] / (n_tokens * self.top_k)

        def weighted(prob_sums: torch.Tensor, z_sums: torch.Tensor) -> torch.Tensor:
            balance = experts * (self.last_load * prob_sums).sum()
            return (self.settings.aux_loss_coef * balance + self.settings.z_loss_coef * z_sums) / n_tokens

        self.last_aux_loss = weighted(stats[experts : 2 * experts], stats[2 * experts])
        return weighted(prob_sum, z_sum) * world


def _data_parallel_world_size() -> int:
    """Ranks that share the batch (torch.distributed's default group: moon trains data-parallel only)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(tensor)  # in place: ``tensor`` is a fresh concatenation
    return tensor
