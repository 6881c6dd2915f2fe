"""A MoCo-style key encoder without a second model: an fp32 moving average of the *trained* parameters,
swapped into the model for one no-grad forward.

MoCo (He et al. 2020, arXiv 1911.05722) fills its queue from a momentum encoder; with momentum 0 (the live
model) "training loss oscillates and fails to converge", which is what a queue of live embeddings does to
moon_infonce. Averaging only the parameters that train keeps the cost where it belongs:

* full training under ZeRO-0/1/2: every rank holds a replicated fp32 average (4 bytes per parameter);
* ZeRO-3: each rank averages its own partition (``param.ds_tensor``), as swift shards a reference model. For
  the swap every gathered parameter is released first and again after the key forward (``release``), so that
  forward gathers the averaged partitions and the next trained forward the live ones; this includes the small
  parameters ZeRO-3 otherwise keeps gathered between steps (its persistence threshold);
* LoRA: only the adapters and ``modules_to_save`` train, so only they are averaged (the frozen base is shared).

During the key forward the live values wait in a buffer of the parameters' own dtype (2 bytes per trained
parameter in bf16), and are copied back before anything else runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..core.errors import MoonInputError


def _local(param: nn.Parameter) -> torch.Tensor:
    """The values of ``param`` this rank owns and its optimizer updates: the ZeRO-3 partition (from which every
    gathered copy is built, the persistent parameters' included), or the parameter itself."""
    shard = getattr(param, "ds_tensor", None)
    return shard if shard is not None else param.data


def is_partitioned(param: nn.Parameter) -> bool:
    """Whether ``param`` is a ZeRO-3 parameter (its values live in per-rank partitions)."""
    return getattr(param, "ds_tensor", None) is not None


def trained_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every parameter that trains (ZeRO-3 keeps ``requires_grad`` on its placeholders)."""
    return [(name, param) for name, param in model.named_parameters() if param.requires_grad]


def trained_identity(model: nn.Module) -> str:
    """Names and full shapes of what trains in ``model`` (whatever the ZeRO-3 sharding): what a saved queue of
    past embeddings must have been made by."""
    trained = trained_parameters(model)
    return _identity([n for n, _ in trained], [getattr(p, "ds_shape", None) or p.shape for _, p in trained])


def _identity(names: list[str], shapes: list) -> str:
    text = ";".join(f"{name}:{tuple(shape)}" for name, shape in zip(names, shapes, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class MomentumEncoder:
    """``average = momentum * average + (1 - momentum) * live`` after every optimizer step (:meth:`update`);
    :meth:`swapped_in` runs the model with the averages."""

    def __init__(self, model: nn.Module, momentum: float):
        if not 0.0 <= momentum < 1.0:
            raise MoonInputError(f"momentum must be in [0, 1), got {momentum}", field="momentum")
        self.momentum = momentum
        self.names, self.params = [], []
        for name, param in trained_parameters(model):
            self.names.append(name)
            self.params.append(param)
        if not self.params:
            raise MoonInputError("the model has no trained parameters to average", field="momentum")
        self.averages = [_local(param).detach().float().clone() for param in self.params]
        self.partitioned = any(is_partitioned(param) for param in self.params)
        self.updates = 0

    @property
    def identity(self) -> str:
        """Names and (local) shapes of what is averaged: a saved average of another model differs here."""
        return _identity(self.names, [a.shape for a in self.averages])

    def numel(self) -> int:
        return sum(a.numel() for a in self.averages)

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.momentum
        live = [_local(p).float() for p in self.params]
        torch._foreach_mul_(self.averages, self.momentum)
        torch._foreach_add_(self.averages, live, alpha=weight)
        self.updates += 1

    @contextmanager
    def swapped_in(self, release: Callable[[], None] | None = None) -> Iterator[None]:
        """The averaged values in the model (no gradient) for the duration of the block; live ones after.

        Under ZeRO-3 ``release`` must free every gathered parameter (DeepSpeed's ``empty_partition_cache``): it
        runs before the partitions are swapped and again before they are restored, since a parameter left
        gathered would keep the values it was gathered with (the live ones in the key forward, the averages in
        the trained forward after it)."""
        if self.partitioned and release is None:
            raise ValueError("a ZeRO-3 model's momentum swap needs release= (DeepSpeed's empty_partition_cache)")
        if release is not None:
            release()
        saved = [_local(p).clone() for p in self.params]
        try:
            with torch.no_grad():  # a graph through swapped weights would give their gradient to the live ones
                for param, average in zip(self.params, self.averages, strict=True):
                    _local(param).copy_(average)
                yield
        finally:
            try:
                if release is not None:
                    release()
            finally:
                with torch.no_grad():
                    for param, value in zip(self.params, saved, strict=True):
                        _local(param).copy_(value)

    def state_dict(self) -> dict:
        return {"momentum": self.momentum, "identity": self.identity, "names": self.names, "updates": self.updates,
                "averages": [a.cpu() for a in self.averages]}  # fmt: skip

    def load_state_dict(self, state: dict, source: str = "the checkpoint") -> None:
        """Restore saved averages; those of another model (names or shard shapes differ) are refused."""
        if state.get("identity") != self.identity:
            mine, theirs = set(self.names), set(state.get("names") or [])
            hint = sorted(theirs ^ mine)[:3]
            raise MoonInputError(
                f"the momentum encoder saved in {source} averages other parameters than this model trains "
                f"({len(theirs)} saved vs {len(mine)} trained; e.g. {hint or 'same names, other shapes'}): resume "
                "with the model, tuner (--tuner_type, LoRA targets) and process count it was saved with, or delete "
                "its moon_infonce_momentum_rank*.pt to start the average afresh from the current weights",
                field="MOON_INFONCE_QUEUE_MODE",
            )
        for average, saved in zip(self.averages, state["averages"], strict=True):
            average.copy_(saved.to(average.device))
        self.updates = int(state.get("updates", 0))
