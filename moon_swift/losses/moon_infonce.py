"""``--loss_type moon_infonce``: InfoNCE with spatial, temporal and same-category hard negatives.

For every anchor (query) the candidates are: every product embedding of the batch (positives and
the rows' explicit hard negatives), of every data-parallel rank (spatial) and of a FIFO queue of
past steps (temporal). A candidate with the anchor's product/group id is never a negative
(false-negative masking), wherever it comes from.

Options (:class:`MoonInfoNCEOptions`; with swift, ``MOON_INFONCE_*`` environment variables, see
:mod:`moon_swift.integrations.swift.environment`): ``temperature`` (0.05), ``spatial`` (True: other
ranks' embeddings are negatives), ``queue_size`` (0: no temporal queue), ``queue_max_age`` (steps; 0:
keep), ``queue_negatives`` (True: enqueue the rows' hard negatives too), ``queue_start`` (optimizer
steps before the queue is used).

The queue is training memory: evaluation steps neither read nor fill it. Under swift's ``--mrl_dims`` the
moon trainer calls the loss once with every Matryoshka dimension (:meth:`MoonInfoNCELoss.__call__`), so
group ids, the learned temperature and one queue of full vectors serve every prefix.

Queued embeddings come from the model being trained (no momentum encoder), so they are only
useful once it drifts slowly: early in training, while embeddings move fast, stale negatives can
collapse the representation (cross-batch memory, Wang et al. 2020, starts its memory after a
warm-up for the same reason). Keep ``QUEUE_MAX_AGE`` short and start the queue after warm-up.

A model with ``MoonConfig(learnable_temperature=True)`` returns ``logit_scale``; it is used instead
of the fixed temperature. The MoE auxiliary loss is *not* added here: the MoE layers inject it
into the gradient themselves, so it counts exactly once.

Spatial negatives: remote embeddings are detached; each rank computes the loss of the whole
global batch (all anchors), whose gradient with respect to its own embeddings is exactly its
share of the single-process gradient. DDP and DeepSpeed average gradients over ranks, so the
gradient reaching the local embeddings (not the logged value, nor the learned temperature's gradient, which
every rank computes whole) is multiplied by the world size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from swift.loss.base import BaseLoss
from swift.utils import get_logger as swift_logger

from ..core.errors import MoonInputError
from ..core.markup import UNKNOWN_GROUP
from .collapse_monitor import MAX_MARGIN, MAX_MEAN_COSINE, CollapseRule, monitors
from .negative_queue import NegativeQueue

logger = logging.getLogger("moon_swift.loss")

MOON_INFONCE = "moon_infonce"
QUEUE_FILE = "moon_infonce_queue_rank{rank}.pt"


#: how queued (temporal) negatives enter the loss; see the module docstring
QUEUE_MODES = ("momentum", "split", "fifo")
#: the queue term's default weight per mode (fifo has no separate term); momentum's 0.3 from the tiny model's
#: study (README, "Temporal negatives": 1.0 fell below no queue, 0.3 did not)
QUEUE_WEIGHTS = {"momentum": 0.3, "split": 0.3, "fifo": 0.0}


@dataclass
class MoonInfoNCEOptions:
    temperature: float = 0.05
    spatial: bool = True
    queue_size: int = 0
    queue_max_age: int = 0
    queue_negatives: bool = True
    queue_start: int = 0
    queue_mode: str = "momentum"
    queue_weight: float | None = None  # None: the mode's default (QUEUE_WEIGHTS)
    momentum: float = 0.99
    uniformity: float = 0.1
    collapse_patience: int = 20

    def __post_init__(self):
        if self.temperature <= 0:
            raise MoonInputError(f"temperature must be > 0, got {self.temperature}", field="temperature")
        if self.queue_size < 0 or self.queue_max_age < 0 or self.queue_start < 0:
            raise MoonInputError(
                f"queue_size ({self.queue_size}), queue_max_age ({self.queue_max_age}) and queue_start "
                f"({self.queue_start}) must be >= 0",
                field="queue",
            )
        if self.queue_mode not in QUEUE_MODES:
            raise MoonInputError(f"queue mode {self.queue_mode!r}: expected one of {QUEUE_MODES}", field="queue_mode")
        if not 0.0 <= self.momentum < 1.0:
            raise MoonInputError(f"momentum must be in [0, 1), got {self.momentum}", field="momentum")
        if self.queue_weight is None:
            self.queue_weight = QUEUE_WEIGHTS[self.queue_mode]
        if self.queue_weight < 0 or self.uniformity < 0 or self.collapse_patience < 0:
            raise MoonInputError(
                f"queue_weight ({self.queue_weight}), uniformity ({self.uniformity}) and collapse_patience "
                f"({self.collapse_patience}) must be >= 0",
                field="queue",
            )

    @property
    def uses_momentum(self) -> bool:
        """True when the trainer must supply momentum-encoder keys (:attr:`MoonInfoNCELoss.momentum_keys`)."""
        return self.queue_size > 0 and self.queue_mode == "momentum"


@dataclass
class BatchLayout:
    """Row indices of swift's embedding batch: per sample ``anchor, positive, negative*``."""

    anchors: torch.Tensor
    positives: torch.Tensor
    products: torch.Tensor  # positives and negatives, in row order
    positive_in_products: torch.Tensor  # for each anchor: index of its positive within ``products``

    @classmethod
    def from_labels(cls, labels: torch.Tensor, n_rows: int) -> BatchLayout:
        """swift's labels hold, per sample, 1 for the positive then 0 per negative (anchors have none)."""
        labels = labels.reshape(-1).tolist()
        if len(labels) + labels.count(1) != n_rows or (labels and labels[0] != 1):
            raise MoonInputError(
                f"embedding batch of {n_rows} rows does not match its labels {labels[:12]}...: expected, per "
                "sample, an anchor, one positive and any number of negatives (swift's embedding format)",
                field="labels",
            )
        anchors, positives, products, positive_in_products = [], [], [], []
        row = 0
        for label in labels:
            if label == 1:
                anchors.append(row)
                positives.append(row + 1)
                positive_in_products.append(len(products))
                products.append(row + 1)
                row += 2
            else:
                products.append(row)
                row += 1
        as_tensor = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
        return cls(as_tensor(anchors), as_tensor(positives), as_tensor(products), as_tensor(positive_in_products))


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: torch.Tensor, scale: float):
        ctx.scale = scale
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def infonce_with_masks(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    candidate_groups: torch.Tensor,
    positive_index: torch.Tensor,
    temperature: torch.Tensor | float,
) -> torch.Tensor:
    """Mean cross-entropy of each anchor against all candidates, its positive being the target.

    Candidates sharing the positive's group id (other than the positive itself) are masked out.
    """
    dtype = torch.promote_types(anchors.dtype, torch.float32)  # float32 at least (float64 kept for gradcheck)
    logits = anchors.to(dtype) @ candidates.to(dtype).T
    positive_groups = candidate_groups[positive_index]
    false_negative = candidate_groups[None, :] == positive_groups[:, None]
    false_negative[torch.arange(len(positive_index)), positive_index] = False
    scaled = (logits / temperature).masked_fill(false_negative, float("-inf"))
    return F.cross_entropy(scaled, positive_index)


def positive_against_queue(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    positive_groups: torch.Tensor,
    queue: torch.Tensor,
    queue_groups: torch.Tensor,
    temperature: torch.Tensor | float,
) -> torch.Tensor:
    """``split`` mode's queue term: each anchor's own positive against the queue alone, in a softmax apart
    from the batch's (XBM's separate memory loss, arXiv 1912.06798), so the queue's mass cannot drown the
    fresh negatives' repulsion. Queued copies of the positive's product are masked."""
    dtype = torch.promote_types(anchors.dtype, torch.float32)
    anchors = anchors.to(dtype)
    positive = (anchors * positives.to(dtype)).sum(-1, keepdim=True)
    same_product = queue_groups[None, :] == positive_groups[:, None]
    negatives = (anchors @ queue.to(dtype).T).masked_fill(same_product, float("-inf"))
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(anchors), dtype=torch.long, device=anchors.device))


def uniformity_loss(vectors: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity (arXiv 2005.10242): ``log mean exp(-t ||x - y||^2)`` over distinct pairs;
    lower when the (normalised) embeddings spread over the sphere."""
    if vectors.shape[0] < 2:
        return vectors.sum() * 0
    return torch.pdist(vectors.float(), p=2).pow(2).mul(-t).exp().mean().log()


def _prefix(vectors: torch.Tensor, length: int | None) -> torch.Tensor:
    """A Matryoshka prefix, L2-normalised as swift slices (None: the vectors as they are)."""
    return vectors if length is None else F.normalize(vectors[:, :length], p=2, dim=-1)


def _gather(tensor: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    """all_gather for tensors whose first dimension differs between ranks."""
    length = torch.tensor([tensor.shape[0]], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(world_size)]
    dist.all_gather(lengths, length)
    longest = int(max(int(n) for n in lengths))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return [g[: int(n)] for g, n in zip(gathered, lengths, strict=True)]


class MoonInfoNCELoss(BaseLoss):
    """swift loss ``moon_infonce`` (see the module docstring for the options)."""

    def __init__(self, args, trainer, options: MoonInfoNCEOptions | None = None):
        super().__init__(args, trainer)
        self.options = options or MoonInfoNCEOptions()
        self.queue = NegativeQueue(self.options.queue_size, self.options.queue_max_age)
        self.collapse = CollapseRule(self.options.collapse_patience if self.options.queue_size else 0)
        #: the momentum encoder's embeddings of this batch's rows; the trainer sets them before each training call
        #: in ``queue_mode="momentum"`` (:attr:`MoonInfoNCEOptions.uses_momentum`)
        self.momentum_keys: torch.Tensor | None = None
        #: what trains (names and shapes, from the trainer): a saved queue of another model is refused
        self.model_identity: str | None = None
        self.queue_enabled = self.options.queue_size > 0
        self._unknown_serial = 0
        self._started = False
        self._warned_dims = False
        self._sized = False
        if self.queue_enabled and self.options.queue_mode == "fifo":
            logger.warning(
                "moon_infonce: MOON_INFONCE_QUEUE_MODE=fifo puts the queue's stale embeddings into the batch's "
                "softmax; on the tiny model it collapsed every run (README, 'Temporal negatives'): prefer "
                "momentum or split"
            )

    # -- state across steps -------------------------------------------------------------------
    def _start(self, device: torch.device) -> None:
        """First call: the queue of the checkpoint we resume from (saving it is a trainer callback's job:
        :meth:`save_queue` in every checkpoint)."""
        self._started = True
        if self.options.queue_size == 0:
            return
        resume = getattr(self.args, "resume_from_checkpoint", None)
        if resume:
            path = Path(resume) / QUEUE_FILE.format(rank=_rank())
            if path.is_file():
                state = torch.load(path, map_location="cpu")
                self._check_saved_queue(state, path)
                self.queue.load_state_dict(state, device=device)
                if state.get("disabled_at") is not None:
                    self.queue_enabled = False
                    self.collapse.tripped_at = int(state["disabled_at"])
                    logger.warning("moon_infonce: the queue was turned off at step %s (collapse rule) and stays off",
                                   state["disabled_at"])  # fmt: skip
                # ids of rows without a group id continue past the queued ones: restarting at 0 would reuse them,
                # and a new row would be masked against a queued stranger as if it were its own product
                if self.queue.group_ids is not None and len(self.queue):
                    self._unknown_serial = max(self._unknown_serial, -int(self.queue.group_ids.min()))
                swift_logger().info("moon_infonce: restored %d queued embeddings from %s", len(self.queue), path)
            else:
                logger.warning("moon_infonce: %s has no %s; the negative queue starts empty", resume, path.name)

    def _check_saved_queue(self, state: dict, path: Path) -> None:
        mode = state.get("mode", "fifo")
        if mode != self.options.queue_mode:
            raise MoonInputError(
                f"the queue saved in {path} holds {mode} embeddings but MOON_INFONCE_QUEUE_MODE is "
                f"{self.options.queue_mode}: resume with MOON_INFONCE_QUEUE_MODE={mode}, or delete {path.name}",
                field="MOON_INFONCE_QUEUE_MODE",
            )
        saved, mine = state.get("model"), self.model_identity
        if saved and mine and saved != mine:
            raise MoonInputError(
                f"the queue saved in {path} was made by another model (trained parameters {saved}, this run trains "
                f"{mine}): resume with the model and tuner it was saved with, or delete {path.name} "
                "(MOON_INFONCE_QUEUE_SIZE keeps its value; the queue refills)",
                field="MOON_INFONCE_QUEUE_SIZE",
            )

    def _step(self) -> int:
        state = getattr(self.trainer, "state", None)
        return int(getattr(state, "global_step", 0) or 0)

    def _training(self) -> bool:
        model = getattr(self.trainer, "model", None)
        return bool(getattr(model, "training", True))

    def _check_queue_size(self, products_per_call: int) -> None:
        """At the first training call: how many queued entries can ever be young enough, printed; a queue
        larger than that stops here (its tail would be memory that never serves)."""
        self._sized = True
        size, age = self.options.queue_size, self.options.queue_max_age
        per_step = products_per_call * max(1, int(getattr(self.args, "gradient_accumulation_steps", 1) or 1))
        usable = size if not age else min(size, age * per_step)
        swift_logger().info(  # swift's log, where the run's other start-up lines are
            "moon_infonce: queue %s of %d entries, %d products per optimizer step, max age %s: %d usable negatives",
            self.options.queue_mode, size, per_step, age or "unlimited", usable,
        )  # fmt: skip
        if usable < size:
            raise MoonInputError(
                f"MOON_INFONCE_QUEUE_SIZE={size} with MOON_INFONCE_QUEUE_MAX_AGE={age}: at {per_step} products per "
                f"optimizer step at most {usable} entries are ever young enough to use. Set MOON_INFONCE_QUEUE_MAX_AGE "
                f">= {-(-size // per_step)} or MOON_INFONCE_QUEUE_SIZE <= {usable}",
                field="MOON_INFONCE_QUEUE_MAX_AGE",
            )

    # -- the loss -----------------------------------------------------------------------------
    def __call__(
        self,
        outputs,
        labels,
        *,
        num_items_in_batch=None,
        loss_scale=None,
        mrl_dims: dict[int, float] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """The loss of swift's embedding batch ``outputs["last_hidden_state"]`` (rows: anchor, positive,
        negatives per sample). ``mrl_dims`` (``{dimension: weight}``, swift's ``--mrl_dims``): the weighted
        sum of the loss of each Matryoshka prefix, L2-normalised as swift slices; group ids, the temperature
        and the queue apply to every prefix (the queue keeps full vectors and is sliced the same way)."""
        embeddings = outputs["last_hidden_state"]
        if not self._started:
            self._start(embeddings.device)
        groups = outputs.get("group_ids") if hasattr(outputs, "get") else None
        groups = (
            torch.full((embeddings.shape[0],), UNKNOWN_GROUP, dtype=torch.long, device=embeddings.device)
            if groups is None
            else groups.to(embeddings.device).long().reshape(-1)
        )
        training, step = self._training(), self._step()
        keys = self._take_momentum_keys(embeddings, step if training else None)
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        spatial = self.options.spatial and world_size > 1
        if spatial:
            rank = dist.get_rank()
            all_embeddings = _gather(embeddings.detach(), world_size)
            # only the local slice carries gradient, scaled by the world size (see the module docstring); the
            # learned temperature's gradient is not: every rank computes it whole, and averaging keeps it so
            all_embeddings[rank] = _ScaleGradient.apply(embeddings, float(world_size))
            all_groups = _gather(groups, world_size)
            all_labels = _gather(labels.to(embeddings.device).float(), world_size)
            all_keys = _gather(keys, world_size) if keys is not None else None
        else:
            all_embeddings, all_groups, all_labels = [embeddings], [groups], [labels.to(embeddings.device)]
            all_keys = [keys] if keys is not None else None
        layouts, row_offset, product_offset = [], 0, 0  # (layout, first row, first product) per rank
        for part, part_labels in zip(all_embeddings, all_labels, strict=True):
            layout = BatchLayout.from_labels(part_labels, part.shape[0])
            layouts.append((layout, row_offset, product_offset))
            row_offset += part.shape[0]
            product_offset += len(layout.products)
        flat = torch.cat(all_embeddings)
        flat_keys = torch.cat(all_keys) if all_keys is not None else None
        flat_groups = torch.cat(all_groups)
        unknown = flat_groups == UNKNOWN_GROUP  # rows without ids: unique ids that never repeat
        flat_groups = flat_groups.clone()
        flat_groups[unknown] = -(self._unknown_serial + 1 + torch.nonzero(unknown).reshape(-1))
        self._unknown_serial += flat.shape[0]

        anchor_rows = torch.cat([lay.anchors + off for lay, off, _ in layouts]).to(flat.device)
        product_rows = torch.cat([lay.products + off for lay, off, _ in layouts]).to(flat.device)
        positive_index = torch.cat([lay.positive_in_products + base for lay, _, base in layouts]).to(flat.device)
        product_groups = flat_groups[product_rows]
        keep = product_rows if self.options.queue_negatives else torch.cat(
            [lay.positives + off for lay, off, _ in layouts]
        ).to(flat.device)  # fmt: skip
        if training and self.queue_enabled and not self._sized:
            self._check_queue_size(len(keep))

        # the queue is training memory: evaluation neither reads it (eval losses stay comparable) nor fills it
        queue_on = training and self.queue_active(step)
        queued = self.queue.candidates(step) if queue_on else None
        if queued is not None:
            self.queue.check_dim(flat.shape[1])
        logit_scale = outputs.get("logit_scale") if hasattr(outputs, "get") else None
        temperature = 1.0 / logit_scale.exp().clamp(max=100) if logit_scale is not None else self.options.temperature

        mode, queue_weight = self.options.queue_mode, self.options.queue_weight
        loss = None
        for prefix, weight in self._dimensions(flat.shape[1], mrl_dims):
            sliced = partial(_prefix, length=prefix)
            vectors = sliced(flat)
            anchors, candidates = vectors[anchor_rows], vectors[product_rows]
            past = None if queued is None else sliced(queued[0].to(vectors.dtype))
            if mode == "fifo" and past is not None:  # one softmax over the batch and the queue
                part = infonce_with_masks(anchors, torch.cat([candidates, past]),
                                          torch.cat([product_groups, queued[1]]), positive_index,
                                          temperature)  # fmt: skip
            else:
                part = infonce_with_masks(anchors, candidates, product_groups, positive_index, temperature)
            if mode == "momentum" and queue_on:  # against the key encoder: its batch keys, then its queue
                key_candidates, key_groups = sliced(flat_keys[product_rows].to(vectors.dtype)), product_groups
                if past is not None:
                    key_candidates = torch.cat([key_candidates, past])
                    key_groups = torch.cat([product_groups, queued[1]])
                term = infonce_with_masks(anchors, key_candidates, key_groups, positive_index, temperature)
                part = part + queue_weight * term
            elif mode == "split" and past is not None:  # a softmax of its own: own positive against the queue
                term = positive_against_queue(anchors, candidates[positive_index], product_groups[positive_index],
                                              past, queued[1], temperature)  # fmt: skip
                part = part + queue_weight * term + self.options.uniformity * uniformity_loss(candidates)
            loss = weight * part if loss is None else loss + weight * part

        stats = monitors(flat[anchor_rows], flat[product_rows], product_groups, positive_index, queued)
        if queued is not None and self.collapse.observe(stats, step):
            self.queue_enabled = False
            logger.warning(
                "moon_infonce: collapse at step %d: for %d training batches in a row the batch's products had mean "
                "cosine %.3f > %.2f and the positive beat the hardest negative by %.3f < %.2f. The temporal queue is "
                "off for the rest of this run (in-batch, spatial and hard negatives remain); see README, 'Temporal "
                "negatives'", step, self.collapse.patience, stats["product_mean_cosine"], MAX_MEAN_COSINE,
                stats["margin"], MAX_MARGIN,
            )  # fmt: skip
        if self.queue_enabled and training and (mode != "momentum" or flat_keys is not None):
            source = flat_keys if mode == "momentum" else flat  # momentum: keys exist from the queue's start on
            self.queue.enqueue(source[keep].detach(), flat_groups[keep], step)
        stats["queue_length"] = float(len(self.queue))
        stats["queue_in_use"] = float(queued is not None)
        if logit_scale is not None:
            stats["temperature"] = float(temperature)
        self._log(stats)
        return loss

    def queue_active(self, step: int) -> bool:
        """Queued negatives are used at this (training) step: on, warmed up and not turned off."""
        return self.queue_enabled and step >= self.options.queue_start

    def wants_momentum_keys(self, step: int) -> bool:
        """The trainer computes the key encoder's embeddings of this training step's batch."""
        return self.options.uses_momentum and self.queue_active(step)

    def _take_momentum_keys(self, embeddings: torch.Tensor, step: int | None) -> torch.Tensor | None:
        """The key encoder's embeddings the trainer left for this call (consumed: one batch each; ``step`` None
        in evaluation, which needs none)."""
        keys, self.momentum_keys = self.momentum_keys, None
        if step is None or not self.wants_momentum_keys(step):
            return None
        if keys is None:
            raise MoonInputError(
                "MOON_INFONCE_QUEUE_MODE=momentum needs the momentum encoder's embeddings of every batch, which moon's "
                "embedding trainer computes (swift sft --task_type embedding with this plugin); use "
                "MOON_INFONCE_QUEUE_MODE=split where the loss runs without it",
                field="MOON_INFONCE_QUEUE_MODE",
            )
        if keys.shape != embeddings.shape:
            raise MoonInputError(
                f"momentum keys of shape {tuple(keys.shape)} for embeddings of shape {tuple(embeddings.shape)}",
                field="momentum_keys",
            )
        return keys.detach().to(embeddings.device)

    def _dimensions(self, full: int, mrl_dims: dict[int, float] | None) -> list[tuple[int | None, float]]:
        """(prefix length, or None for the vector as the model returned it; weight), largest first."""
        if not mrl_dims:
            return [(None, 1.0)]
        kept = sorted(((int(d), float(w)) for d, w in mrl_dims.items() if int(d) <= full), reverse=True)
        skipped = sorted(int(d) for d in mrl_dims if int(d) > full)
        if skipped and not self._warned_dims:
            logger.warning("moon_infonce: --mrl_dims %s exceed the embedding size %d and are skipped", skipped, full)
            self._warned_dims = True
        if not kept:
            raise MoonInputError(
                f"--mrl_dims {sorted(mrl_dims)}: every dimension exceeds the embedding size {full}", field="mrl_dims"
            )
        return kept

    def save_queue(self, checkpoint: str | Path) -> Path | None:
        """Write this rank's negative queue into ``checkpoint`` (None when there is no queue)."""
        if self.options.queue_size == 0:
            return None
        path = Path(checkpoint) / QUEUE_FILE.format(rank=_rank())
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"mode": self.options.queue_mode, "model": self.model_identity, "disabled_at": self.collapse.tripped_at}
        torch.save({**self.queue.state_dict(), **extra}, path)
        return path

    def _log(self, stats: dict[str, float]) -> None:
        metrics = getattr(self.trainer, "custom_metrics", None)
        if metrics is None:
            return
        mode = "train" if self._training() else "eval"
        for key, value in stats.items():
            metrics[mode][f"moon_infonce/{key}"].update(value)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
