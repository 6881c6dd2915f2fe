"""Cached contrastive steps (GradCache: Gao et al. 2021, arXiv 2101.06983) for swift's embedding training.

``MOON_GRAD_CACHE_ROWS=N`` (see :mod:`.environment`): a training step embeds its batch ``N`` rows at a time,
so activation memory is that of ``N`` rows whatever the batch, and the gradient is still the one of the whole
batch's contrastive loss (every row a negative of every other). As sentence-transformers'
``CachedMultipleNegativesRankingLoss`` does, the step runs in three parts:

1. every chunk of rows through the model without graph, recording the RNG state before each (dropout);
2. the loss on the whole batch's embeddings, by swift's own ``compute_loss`` (gradient accumulation
   scaling, ``num_items_in_batch``, metrics, the loss's queue and gathering are swift's and the loss's);
3. in backward, each chunk through the model again *with* graph, its RNG state restored, and
   ``torch.autograd.backward(chunk embeddings, their gradient)``: a node of the loss's graph whose backward
   runs the model, as ``torch.utils.checkpoint``'s reentrant ``CheckpointFunction`` does (its RNG helpers
   are the ones used here).

The cost is one more forward of every row (a step costs about 4/3 of an uncached one's compute). Each chunk
drops the columns that are padding in all its rows (a chunk of short text queries does not run at the
length of the batch's longest product), which gives some of it back; with dropout, a chunk therefore draws
other masks than a full-batch forward would (the same ones in both of its forwards).

Outputs the losses read beside the embeddings: ``group_ids`` (per row, concatenated) and the learned
temperature ``logit_scale`` (one per batch): its gradient reaches its parameter through the last chunk's
second forward, so peft's wrapper and ZeRO-3's partitioning see it as in any forward.

Data parallel: every rank runs the same number of forwards (the MoE layers all-reduce in every forward
with grad, ZeRO-3 all-gathers parameters in every forward): the chunk count is the largest over ranks and
each rank splits its rows into that many nearly equal chunks. Gradients are reduced once per step: under
DDP the chunks but the last run in ``no_sync()``; under DeepSpeed the second forwards call the engine's
module (the engine's forward hooks expect one backward per forward) and the parameters are marked
``ds_grad_is_ready = False`` for the chunks but the last, DeepSpeed's switch for a tiled computation that
uses the same parameters several times (``deepspeed.runtime.sequence_parallel.ulysses_sp.TiledMLP``): ZeRO-2
and ZeRO-3 then reduce the accumulated gradient once, in the last chunk's backward hooks, or right after it
for a parameter that chunk does not reach (without the switch ZeRO-2 stops at the second chunk: "Gradient
computed twice for this partition"). Cost: each rank holds its full local gradient until the last chunk
(ZeRO-2/3 otherwise free it bucket by bucket during backward).

MoE: each chunk's second forward injects its own auxiliary-loss gradient, scaled by 1 / number of chunks:
the balance loss of a cached step is the mean of the chunks' balance losses (as with gradient-accumulation
micro-batches), not the balance loss of the whole batch; the logged ``moe_aux_loss`` / loads are that mean.
The first pass injects nothing (no graph).

Refused at start (trainer set-up): ``--padding_free`` / ``--packing`` (a packed batch has no rows to split;
on a machine without flash attention swift refuses them before) and sequence parallelism; at the first
step: videos and batch keys :mod:`.batch_rows` cannot split, by name, and a rank with fewer rows than the
chunks another rank needs. Not supported: ``torch.autograd.grad`` / ``backward(inputs=...)`` over the loss.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.checkpoint import _get_autocast_kwargs, get_device_states, set_device_states

from ...core.errors import MoonInputError
from .batch_rows import count_rows, split_rows
from .environment import GRAD_CACHE_ROWS, grad_cache_rows

logger = logging.getLogger("moon_swift")

#: model outputs with one value per row (concatenated over chunks); any other output is per batch (chunk 0's)
ROW_OUTPUTS = ("last_hidden_state", "group_ids")


def chunk_sizes(rows: int, chunks: int) -> list[int]:
    """``rows`` split into ``chunks`` consecutive parts whose sizes differ by at most one."""
    base, extra = divmod(rows, chunks)
    return [base + 1] * extra + [base] * (chunks - extra)


def common_chunk_count(rows: int, rows_per_chunk: int, device: torch.device) -> int:
    """The number of chunks every data-parallel rank runs: the largest any rank needs."""
    count = max(1, math.ceil(rows / rows_per_chunk))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        tensor = torch.tensor([count], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        count = int(tensor.item())
    if count > rows:
        raise MoonInputError(
            f"this rank's batch has {rows} rows, fewer than the {count} forwards another rank's batch needs with "
            f"{GRAD_CACHE_ROWS}={rows_per_chunk} (every rank runs as many); use --dataloader_drop_last true or a "
            f"larger {GRAD_CACHE_ROWS}",
            field=GRAD_CACHE_ROWS,
        )
    return count


@dataclass
class RngState:
    """The RNG state before a chunk's first forward, restored for its second (dropout draws the same masks)."""

    cpu: torch.Tensor
    devices: list[int]
    device_states: list[torch.Tensor]
    device_type: str

    @classmethod
    def capture(cls, tensors: Sequence[Any]) -> RngState:
        devices, states = get_device_states(*tensors)
        device_type = next((t.device.type for t in tensors if isinstance(t, torch.Tensor) and t.device.type != "cpu"),
                           "cpu")  # fmt: skip
        return cls(torch.get_rng_state(), devices, states, device_type)

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices, device_type=self.device_type):
            torch.set_rng_state(self.cpu)
            if self.devices:
                set_device_states(self.devices, self.device_states, device_type=self.device_type)
            yield


def _model_config(model: torch.nn.Module):
    inner = model
    while hasattr(inner, "module") and isinstance(inner.module, torch.nn.Module):  # DeepSpeed / DDP
        inner = inner.module
    return getattr(inner, "config", None)


def _image_tokens(model: torch.nn.Module) -> tuple[int | None, int]:
    config = _model_config(model)
    merge = getattr(getattr(config, "vision_config", None), "spatial_merge_size", 2)
    return getattr(config, "image_token_id", None), int(merge)


class GradientSync:
    """How the chunks' backward passes share one gradient reduction: the model to run with graph, and the
    context of each chunk's second forward + backward."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.engine, self.ddp = model, None, None
        deepspeed = sys.modules.get("deepspeed")
        if deepspeed is not None and isinstance(model, deepspeed.DeepSpeedEngine):
            self.engine, self.model = model, model.module
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            self.ddp = model

    def begin(self) -> None:
        """Before the first chunk's backward: what the engine's backward prologue would tell its optimizer."""
        optimizer = getattr(self.engine, "optimizer", None)
        if hasattr(optimizer, "set_gradient_accumulation_boundary"):
            optimizer.set_gradient_accumulation_boundary(self.engine.is_gradient_accumulation_boundary())

    @contextlib.contextmanager
    def chunk(self, last: bool) -> Iterator[None]:
        if self.ddp is not None and not last:
            with self.ddp.no_sync():
                yield
        elif self.engine is None:
            yield
        elif not last:
            params = self._trainable()
            for param in params:
                param.ds_grad_is_ready = False  # keep this chunk's gradient local; the last chunk reduces it
            try:
                yield
            finally:
                for param in params:
                    param.ds_grad_is_ready = True
        else:
            with self._reduce_the_rest():
                yield

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def _reduce_the_rest(self) -> Iterator[None]:
        """The last chunk: its backward's hooks reduce every parameter it reaches, with what earlier chunks left;
        a parameter it does not reach (the vision tower for a chunk of text rows, a temperature the loss does
        not read) holds earlier chunks' local gradient, which is handed to the optimizer's reduction after it,
        as DeepSpeed's own ``coalesce_grad_reduction`` flush does. ZeRO-3 leaf modules (the MoE layers) reduce
        all their parameters in their module hook, which runs in every chunk."""
        pending = [p for p in self._trainable() if _local_grad(p) and not hasattr(p, "ds_z3_leaf_module")]
        reached: set[int] = set()
        handles = [p.register_post_accumulate_grad_hook(lambda p: reached.add(id(p))) for p in pending]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        left = {id(p) for p in pending if id(p) not in reached}
        if not left:
            return
        optimizer = self.engine.optimizer
        if self.engine.zero_optimization_partition_weights():  # ZeRO-3
            for group in optimizer.fp16_groups:
                for param in group:
                    if id(param) in left:
                        optimizer.reduce_ready_partitions_and_remove_grads(param)
        elif hasattr(optimizer, "bit16_groups") and hasattr(optimizer, "reduce_ready_partitions_and_remove_grads"):
            for index, group in enumerate(optimizer.bit16_groups):  # ZeRO-1/2
                for param in group:
                    if id(param) in left:
                        optimizer.reduce_ready_partitions_and_remove_grads(param, index)


def _local_grad(param: torch.nn.Parameter) -> bool:
    return param.grad is not None or getattr(param, "grad_accum", None) is not None


class ChunkedForward:
    """One batch embedded chunk by chunk: :meth:`first_pass` without graph, :meth:`backward` again with it."""

    def __init__(
        self,
        model: torch.nn.Module,
        chunks: list[dict[str, Any]],
        sizes: list[int],
        *,
        moe_layers: Sequence[torch.nn.Module] = (),
    ):
        self.model, self.chunks, self.sizes = model, chunks, sizes
        self.sync = GradientSync(model)
        self.moe_layers = tuple(moe_layers)
        self.rng: list[RngState] = []
        self.outputs: dict[str, Any] = {}
        self.output_type: type | None = None
        self.grad_keys: list[str] = []

    def first_pass(self) -> tuple[torch.Tensor, ...]:
        """Every chunk through the model (no graph: called inside the autograd Function's forward); the
        per-row outputs concatenated, the others from chunk 0. Returns the floating outputs (gradient's way)."""
        device_type = next((v.device.type for v in self.chunks[0].values() if isinstance(v, torch.Tensor)), "cpu")
        self.autocast = _get_autocast_kwargs(device_type)
        self.device_type = device_type
        results = []
        for chunk in self.chunks:
            self.rng.append(RngState.capture(list(chunk.values())))
            results.append(self.model(**chunk))
        first = results[0]
        self.output_type = type(first)
        for key, value in first.items():
            if value is None:
                continue
            if key in ROW_OUTPUTS:
                value = torch.cat([result[key] for result in results])
            elif not isinstance(value, torch.Tensor):
                raise MoonInputError(
                    f"cached steps cannot join the model's output {key!r} ({type(value).__name__}) over chunks",
                    field=GRAD_CACHE_ROWS,
                )
            self.outputs[key] = value
        if "last_hidden_state" not in self.outputs:
            raise MoonInputError("the model returned no last_hidden_state (swift's embeddings)", field=GRAD_CACHE_ROWS)
        self.grad_keys = [k for k, v in self.outputs.items() if torch.is_floating_point(v)]
        return tuple(self.outputs[key] for key in self.grad_keys)

    def replace(self, values: Sequence[torch.Tensor]) -> Any:
        """The outputs for the loss: the first pass's, with the autograd Function's outputs in place."""
        outputs = {**self.outputs, **dict(zip(self.grad_keys, values, strict=True))}
        if isinstance(self.output_type, type) and self.output_type is not dict:
            try:
                return self.output_type(**outputs)
            except TypeError:
                pass
        return outputs

    def backward(self, grads: Sequence[torch.Tensor | None]) -> None:
        """Each chunk again with graph (RNG restored), backward from its share of the cached gradients."""
        grads = dict(zip(self.grad_keys, grads, strict=True))
        n = len(self.chunks)
        scales = [moe.aux_grad_scale for moe in self.moe_layers]
        aux, loads = [], []
        self.sync.begin()
        try:
            for moe, scale in zip(self.moe_layers, scales, strict=True):
                moe.aux_grad_scale = scale / n  # the mean of the chunks' aux losses
            start = 0
            for index, (chunk, size) in enumerate(zip(self.chunks, self.sizes, strict=True)):
                with self.sync.chunk(last=index == n - 1):
                    with self.rng[index].restored(), torch.enable_grad(), self._autocast():
                        outputs = self.sync.model(**chunk)
                    tensors, tensor_grads = [], []
                    for key in self.grad_keys:
                        if key in ROW_OUTPUTS:
                            value, grad = outputs[key], grads[key]
                            grad = None if grad is None else grad[start : start + size]
                        elif index == n - 1:  # per batch (the learned temperature): once, in the last chunk
                            value, grad = outputs[key], grads[key]
                        else:
                            continue
                        if grad is not None and isinstance(value, torch.Tensor) and value.requires_grad:
                            tensors.append(value)
                            tensor_grads.append(grad.to(value.dtype))
                    if tensors:
                        torch.autograd.backward(tensors, tensor_grads)
                    del outputs, tensors, tensor_grads
                aux.append([moe.last_aux_loss for moe in self.moe_layers])
                loads.append([moe.last_load for moe in self.moe_layers])
                start += size
        finally:
            for moe, scale in zip(self.moe_layers, scales, strict=True):
                moe.aux_grad_scale = scale
        for layer, moe in enumerate(self.moe_layers):
            values = [step[layer] for step in aux if step[layer] is not None]
            if values:
                moe.last_aux_loss = torch.stack([v.float() for v in values]).mean()
            values = [step[layer] for step in loads if step[layer] is not None]
            if values:
                moe.last_load = torch.stack([v.float() for v in values]).mean(dim=0)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The autocast state of the first pass (as ``CheckpointFunction`` re-enters it in backward)."""
        device_kwargs, cpu_kwargs = self.autocast
        stack = contextlib.ExitStack()
        if device_kwargs is not None and torch.amp.is_autocast_available(self.device_type):
            stack.enter_context(torch.amp.autocast(device_type=self.device_type, **device_kwargs))
        stack.enter_context(torch.amp.autocast("cpu", **cpu_kwargs))
        return stack


class _CachedEmbeddings(torch.autograd.Function):
    """Forward: :meth:`ChunkedForward.first_pass` (no graph). Backward: :meth:`ChunkedForward.backward`.

    ``anchor`` is an empty tensor that requires grad, so that autograd records this node (the model's
    parameters are not inputs: their gradients come from the chunks' own backward passes)."""

    @staticmethod
    def forward(ctx, replay: ChunkedForward, anchor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.replay = replay
        ctx.set_materialize_grads(False)  # an output the loss does not read (a temperature infonce ignores): None
        return replay.first_pass()

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple[None, None]:
        if not torch.autograd._is_checkpoint_valid():
            raise RuntimeError(
                "cached steps re-run the model inside backward: they are incompatible with torch.autograd.grad "
                "and with backward(inputs=...) (as torch.utils.checkpoint's reentrant variant is)"
            )
        ctx.replay.backward(grads)
        ctx.replay = None
        return None, None


def cached_forward(
    model: torch.nn.Module, inputs: Mapping[str, Any], rows_per_chunk: int, *, moe_layers: Sequence = ()
) -> Any:
    """The model's outputs on ``inputs`` (a collated embedding batch, ``labels`` ignored), computed
    ``rows_per_chunk`` rows at a time; their gradient is the full batch's, computed in backward."""
    rows = count_rows(inputs)
    device = next((v.device for v in inputs.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    count = common_chunk_count(rows, rows_per_chunk, device)
    sizes = chunk_sizes(rows, count)
    image_token_id, merge_size = _image_tokens(model)
    chunks = split_rows(inputs, sizes, image_token_id=image_token_id, merge_size=merge_size, trim_padding=True)
    replay = ChunkedForward(model, chunks, sizes, moe_layers=moe_layers)
    anchor = torch.empty(0, device=device, requires_grad=True)
    values = _CachedEmbeddings.apply(replay, anchor)
    return replay.replace(values)


class _Precomputed:
    """Stands in for the model in swift's ``compute_loss``: its call returns the cached step's outputs."""

    def __init__(self, outputs: Any, model: torch.nn.Module):
        self.outputs, self.training = outputs, model.training

    def __call__(self, *args, **kwargs) -> Any:
        return self.outputs


class CachedSteps:
    """The trainer's cached step: ``MOON_GRAD_CACHE_ROWS`` rows per forward (see the module docstring)."""

    def __init__(self, rows_per_chunk: int, moe_layers: Sequence = ()):
        self.rows_per_chunk = rows_per_chunk
        self.moe_layers = tuple(moe_layers)

    @classmethod
    def for_trainer(cls, trainer, env: Mapping[str, str] | None = None) -> CachedSteps | None:
        """The trainer's cached steps (None when ``MOON_GRAD_CACHE_ROWS`` is unset or 0); refuses what cannot be
        split into rows, at start."""
        rows = grad_cache_rows(env)
        if not rows:
            return None
        template = getattr(trainer, "template", None)
        for option in ("padding_free", "packing"):
            if getattr(template, option, False):
                raise MoonInputError(
                    f"{GRAD_CACHE_ROWS}={rows} cannot be combined with --{option} true: cached steps split the batch "
                    f"into rows, and a {option.replace('_', '-')} batch packs every row into one sequence; unset "
                    f"{GRAD_CACHE_ROWS} or use --{option} false",
                    field=GRAD_CACHE_ROWS,
                )
        if (getattr(template, "sequence_parallel_size", 1) or 1) > 1:
            raise MoonInputError(
                f"{GRAD_CACHE_ROWS}={rows} cannot be combined with --sequence_parallel_size > 1", field=GRAD_CACHE_ROWS
            )
        logger.warning("moon: %s=%d: cached contrastive steps (GradCache), each step embeds its batch in chunks of "
                       "at most %d rows, twice", GRAD_CACHE_ROWS, rows, rows)  # fmt: skip
        return cls(rows, getattr(trainer, "moe_layers", ()))

    def compute_loss(
        self,
        compute_loss: Callable,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        *,
        return_outputs: bool = False,
        num_items_in_batch=None,
    ):
        """swift's ``compute_loss`` (passed in) on the cached step's outputs."""
        outputs = cached_forward(model, inputs, self.rows_per_chunk, moe_layers=self.moe_layers)
        return compute_loss(
            _Precomputed(outputs, model), inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )

    @torch.no_grad()
    def embed_without_grad(self, model: torch.nn.Module, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The batch's pooled embeddings ``rows_per_chunk`` rows at a time, no graph: the momentum encoder's keys
        and the drift probe at the cached step's activation memory (same chunk count on every rank)."""
        rows = count_rows(inputs)
        device = next((v.device for v in inputs.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
        sizes = chunk_sizes(rows, common_chunk_count(rows, self.rows_per_chunk, device))
        image_token_id, merge_size = _image_tokens(model)
        chunks = split_rows(inputs, sizes, image_token_id=image_token_id, merge_size=merge_size, trim_padding=True)
        return torch.cat([model(**chunk)["last_hidden_state"].detach() for chunk in chunks])
