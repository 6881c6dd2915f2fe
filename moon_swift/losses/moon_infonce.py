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
gradient (not the logged value) is multiplied by the world size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from swift.loss.base import BaseLoss

from ..core.errors import MoonInputError
from ..core.markup import UNKNOWN_GROUP
from .negative_queue import NegativeQueue

logger = logging.getLogger("moon_swift.loss")

MOON_INFONCE = "moon_infonce"
QUEUE_FILE = "moon_infonce_queue_rank{rank}.pt"


@dataclass
class MoonInfoNCEOptions:
    temperature: float = 0.05
    spatial: bool = True
    queue_size: int = 0
    queue_max_age: int = 0
    queue_negatives: bool = True
    queue_start: int = 0

    def __post_init__(self):
        if self.temperature <= 0:
            raise MoonInputError(f"temperature must be > 0, got {self.temperature}", field="temperature")
        if self.queue_size < 0 or self.queue_max_age < 0 or self.queue_start < 0:
            raise MoonInputError(
                f"queue_size ({self.queue_size}), queue_max_age ({self.queue_max_age}) and queue_start "
                f"({self.queue_start}) must be >= 0",
                field="queue",
            )


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
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy of each anchor against all candidates, its positive being the target.

    Candidates sharing the positive's group id (other than the positive itself) are masked out.
    """
    dtype = torch.promote_types(anchors.dtype, torch.float32)  # float32 at least (float64 kept for gradcheck)
    logits = anchors.to(dtype) @ candidates.to(dtype).T
    positive_groups = candidate_groups[positive_index]
    false_negative = candidate_groups[None, :] == positive_groups[:, None]
    false_negative[torch.arange(len(positive_index)), positive_index] = False
    scaled = (logits / temperature).masked_fill(false_negative, float("-inf"))
    loss = F.cross_entropy(scaled, positive_index)
    with torch.no_grad():
        positive_sim = logits[torch.arange(len(positive_index)), positive_index]
        negatives = logits.masked_fill(false_negative, float("-inf"))
        negatives[torch.arange(len(positive_index)), positive_index] = float("-inf")
        stats = {
            "negatives_per_anchor": float((~false_negative).sum(1).float().mean() - 1),
            "positive_similarity": float(positive_sim.mean()),
            "hardest_negative_similarity": float(negatives.max(dim=1).values.mean()) if logits.shape[1] > 1 else 0.0,
            "false_negatives_masked": float(false_negative.sum()),
        }
    return loss, stats


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
        self._unknown_serial = 0
        self._started = False
        self._warned_dims = False

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
                self.queue.load_state_dict(torch.load(path, map_location="cpu"), device=device)
                # ids of rows without a group id continue past the queued ones: restarting at 0 would reuse them,
                # and a new row would be masked against a queued stranger as if it were its own product
                if self.queue.group_ids is not None and len(self.queue):
                    self._unknown_serial = max(self._unknown_serial, -int(self.queue.group_ids.min()))
                logger.info("moon_infonce: restored %d queued embeddings from %s", len(self.queue), path)
            else:
                logger.warning("moon_infonce: %s has no %s; the negative queue starts empty", resume, path.name)

    def _step(self) -> int:
        state = getattr(self.trainer, "state", None)
        return int(getattr(state, "global_step", 0) or 0)

    def _training(self) -> bool:
        model = getattr(self.trainer, "model", None)
        return bool(getattr(model, "training", True))

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
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        spatial = self.options.spatial and world_size > 1
        if spatial:
            rank = dist.get_rank()
            all_embeddings = _gather(embeddings.detach(), world_size)
            all_embeddings[rank] = embeddings  # only the local slice carries gradient
            all_groups = _gather(groups, world_size)
            all_labels = _gather(labels.to(embeddings.device).float(), world_size)
        else:
            all_embeddings, all_groups, all_labels = [embeddings], [groups], [labels.to(embeddings.device)]
        layouts, row_offset, product_offset = [], 0, 0  # (layout, first row, first product) per rank
        for part, part_labels in zip(all_embeddings, all_labels, strict=True):
            layout = BatchLayout.from_labels(part_labels, part.shape[0])
            layouts.append((layout, row_offset, product_offset))
            row_offset += part.shape[0]
            product_offset += len(layout.products)
        flat = torch.cat(all_embeddings)
        flat_groups = torch.cat(all_groups)
        unknown = flat_groups == UNKNOWN_GROUP  # rows without ids: unique ids that never repeat
        flat_groups = flat_groups.clone()
        flat_groups[unknown] = -(self._unknown_serial + 1 + torch.nonzero(unknown).reshape(-1))
        self._unknown_serial += flat.shape[0]

        anchor_rows = torch.cat([lay.anchors + off for lay, off, _ in layouts]).to(flat.device)
        product_rows = torch.cat([lay.products + off for lay, off, _ in layouts]).to(flat.device)
        positive_index = torch.cat([lay.positive_in_products + base for lay, _, base in layouts]).to(flat.device)
        product_groups = flat_groups[product_rows]

        # the queue is training memory: evaluation neither reads it (eval losses stay comparable) nor fills it
        training = self._training()
        use_queue = training and self.options.queue_size and self._step() >= self.options.queue_start
        queued = self.queue.candidates(self._step()) if use_queue else None
        if queued is not None:
            self.queue.check_dim(flat.shape[1])
            candidate_groups = torch.cat([product_groups, queued[1]])
        else:
            candidate_groups = product_groups
        logit_scale = outputs.get("logit_scale") if hasattr(outputs, "get") else None
        temperature = 1.0 / logit_scale.exp().clamp(max=100) if logit_scale is not None else self.options.temperature

        loss, stats = None, {}
        for prefix, weight in self._dimensions(flat.shape[1], mrl_dims):
            vectors = flat if prefix is None else F.normalize(flat[:, :prefix], p=2, dim=-1)
            candidates = vectors[product_rows]
            if queued is not None:
                past = queued[0].to(vectors.dtype)
                candidates = torch.cat([candidates, past if prefix is None else F.normalize(past[:, :prefix], dim=-1)])
            part, part_stats = infonce_with_masks(
                vectors[anchor_rows], candidates, candidate_groups, positive_index, temperature
            )
            loss = weight * part if loss is None else loss + weight * part
            stats = stats or part_stats  # the first (largest) dimension's statistics
        if spatial:
            loss = _ScaleGradient.apply(loss, float(world_size))

        if self.options.queue_size and training:
            keep = product_rows if self.options.queue_negatives else torch.cat(
                [lay.positives + off for lay, off, _ in layouts]
            ).to(flat.device)  # fmt: skip
            self.queue.enqueue(flat[keep].detach(), flat_groups[keep], self._step())
        stats["queue_length"] = float(len(self.queue))
        if logit_scale is not None:
            stats["temperature"] = float(temperature)
        self._log(stats)
        return loss

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
        torch.save(self.queue.state_dict(), path)
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
