"""``MOON_INFONCE_QUEUE_MODE=momentum`` in swift's trainer: the key encoder's embeddings of every training
batch, its update after every optimizer step, and its average in every checkpoint.

The average itself is :class:`~moon_swift.losses.momentum_encoder.MomentumEncoder`; this module decides when
it runs. It is built at the queue's start (``MOON_INFONCE_QUEUE_START``, after DeepSpeed has placed and, under
ZeRO-3, sharded the parameters) as a copy of the model trained so far, so the keys start where the queries are
rather than averaging the fast-moving warm-up; on ``--resume_from_checkpoint`` from the checkpoint's average.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from swift.callbacks.base import TrainerCallback
from swift.utils import get_logger as swift_logger

from ...core.errors import MoonInputError
from ...losses.momentum_encoder import MomentumEncoder
from .callbacks import deepspeed_config

logger = logging.getLogger("moon_swift")

MOMENTUM_FILE = "moon_infonce_momentum_rank{rank}.pt"


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def model_inputs(inputs: dict) -> dict:
    """The batch as the model takes it (the trainer pops ``labels`` before its own forward)."""
    return {key: value for key, value in inputs.items() if key != "labels"}


@torch.no_grad()
def embed_without_grad(model, inputs: dict) -> torch.Tensor:
    """The pooled embeddings of every row of ``inputs``, no graph kept."""
    return model(**model_inputs(inputs))["last_hidden_state"].detach()


def refuse_unsupported_momentum(args, options) -> None:
    """Stops at start where the momentum encoder is not known to work: fp16 (tested in fp32 and bf16 only: its
    fp32 average is copied into the training weights for every key forward; fp16's loss scaling and skipped
    steps are not covered), and two ZeRO-3 settings whose gathered copies do not come from the partitions the
    swap replaces: ZeRO++'s secondary partitions (``zero_hpz_partition_size`` > 1: rebuilt from what was
    gathered, so averages would reach the trained forward) and parameters offloaded to NVMe (swapped out of
    ``ds_tensor``)."""
    if options is None or not options.uses_momentum:
        return
    if getattr(args, "fp16", False):
        raise MoonInputError(
            "MOON_INFONCE_QUEUE_MODE=momentum cannot train with --fp16 true: train in bf16 (--bf16 true) or fp32, or "
            "choose MOON_INFONCE_QUEUE_MODE=split",
            field="MOON_INFONCE_QUEUE_MODE",
        )
    zero = deepspeed_config(args).get("zero_optimization") or {}
    if str(zero.get("stage")) != "3":
        return
    hpz = zero.get("zero_hpz_partition_size", 1)
    if str(hpz) not in ("1", "0", "auto"):
        raise MoonInputError(
            f"MOON_INFONCE_QUEUE_MODE=momentum cannot train with ZeRO++ hierarchical partitions "
            f"(zero_optimization.zero_hpz_partition_size={hpz} in --deepspeed): set it to 1, or choose "
            "MOON_INFONCE_QUEUE_MODE=split",
            field="MOON_INFONCE_QUEUE_MODE",
        )
    device = (zero.get("offload_param") or {}).get("device")
    if str(device) == "nvme":
        raise MoonInputError(
            "MOON_INFONCE_QUEUE_MODE=momentum cannot train with ZeRO-3 parameters offloaded to NVMe "
            "(zero_optimization.offload_param.device=nvme in --deepspeed): offload to cpu, or choose "
            "MOON_INFONCE_QUEUE_MODE=split",
            field="MOON_INFONCE_QUEUE_MODE",
        )


def zero3_release(wrapped_model) -> Callable[[], None] | None:
    """Under ZeRO-3, DeepSpeed's own call that frees every gathered parameter (``empty_partition_cache`` of its
    stage-3 optimizer, without the engine's ``gc.collect``), so a forward after it gathers from the partitions;
    ``None`` for any other model. The device is synchronised first: the swap's copies into the partitions run
    on the current stream, DeepSpeed's all-gathers may run on their own."""
    stage = getattr(wrapped_model, "zero_optimization_stage", None)
    if not callable(stage) or stage() != 3:
        return None
    empty = getattr(getattr(wrapped_model, "optimizer", None), "empty_partition_cache", None)
    if empty is None:
        raise MoonInputError(
            "MOON_INFONCE_QUEUE_MODE=momentum under --deepspeed zero3 needs DeepSpeed's stage-3 optimizer "
            f"(its empty_partition_cache), and this engine's optimizer is {type(wrapped_model.optimizer).__name__}",
            field="MOON_INFONCE_QUEUE_MODE",
        )
    from deepspeed.accelerator import get_accelerator

    def release() -> None:
        get_accelerator().synchronize()
        empty()

    return release


class MomentumKeys:
    """The trainer's side of the momentum encoder (one per run)."""

    def __init__(self, args, momentum: float):
        self.args, self.momentum = args, momentum
        self.encoder: MomentumEncoder | None = None

    def _build(self, model) -> MomentumEncoder:
        encoder = MomentumEncoder(model, self.momentum)
        resume = getattr(self.args, "resume_from_checkpoint", None)
        if resume:
            path = Path(resume) / MOMENTUM_FILE.format(rank=_rank())
            if path.is_file():
                encoder.load_state_dict(torch.load(path, map_location="cpu"), source=str(path))
                swift_logger().info("moon_infonce: momentum encoder restored from %s (%d updates)", path,
                                    encoder.updates)  # fmt: skip
            else:
                logger.warning("moon_infonce: %s has no %s; the momentum encoder starts from the current weights",
                               resume, path.name)  # fmt: skip
        swift_logger().info(
            "moon_infonce: momentum encoder (momentum %s) averages %d trained parameters on this rank (fp32, %.1f MiB)",
            self.momentum, encoder.numel(), encoder.numel() * 4 / 2**20,
        )  # fmt: skip
        return encoder

    def keys(self, trainer_model, wrapped_model, inputs: dict, embed=embed_without_grad) -> torch.Tensor:
        """The key encoder's embeddings of ``inputs``: ``wrapped_model`` (as the trainer calls it) run with the
        averaged weights of ``trainer_model`` (the module whose parameter names the checkpoint keeps)."""
        if self.encoder is None:
            self.encoder = self._build(trainer_model)
        was_training = wrapped_model.training
        wrapped_model.eval()  # keys without dropout noise, and no random numbers taken from the trained forward
        try:
            with self.encoder.swapped_in(release=zero3_release(wrapped_model)):
                return embed(wrapped_model, inputs)
        finally:
            wrapped_model.train(was_training)

    def update(self) -> None:
        if self.encoder is not None:
            self.encoder.update()

    def save(self, checkpoint: str | Path) -> Path | None:
        if self.encoder is None:
            return None
        path = Path(checkpoint) / MOMENTUM_FILE.format(rank=_rank())
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.encoder.state_dict(), path)
        return path


class MomentumCallback(TrainerCallback):
    """Moves the average after every optimizer step and writes it into every checkpoint (one file per rank:
    under ZeRO-3 each holds its shard)."""

    def __init__(self, args, trainer, momentum_keys: MomentumKeys):
        super().__init__(args, trainer)
        self.momentum_keys = momentum_keys

    def on_step_end(self, args, state, control, **kwargs):
        self.momentum_keys.update()

    def on_save(self, args, state, control, **kwargs):
        self.momentum_keys.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")
