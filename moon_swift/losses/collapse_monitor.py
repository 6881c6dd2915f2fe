"""Signs that contrastive training collapses, and the rule that turns the temporal queue off when they show.

A collapsing embedder aligns without spreading out (Wang & Isola 2020, arXiv 2005.10242): every product
ends up near every other one, so the batch's products grow alike (mean off-diagonal cosine towards 1, the
spread over the batch towards 0) while the positive stops standing out from the hardest negative. These are
logged at every logging step; :class:`CollapseRule` acts on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: the rule's thresholds (README, "Temporal negatives"), from the tiny model's runs: the collapsing single-softmax
#: queue sat at mean cosine 0.993-0.999 with margins of -0.008..-0.001 from 20 steps after the queue started;
#: healthy runs, queue or not, stayed at or below 0.981 with margins of -0.015 and lower early in training
MAX_MEAN_COSINE = 0.99
MAX_MARGIN = 0.01


@torch.no_grad()
def spread(products: torch.Tensor) -> dict[str, float]:
    """Mean off-diagonal cosine of the (L2-normalised) product embeddings and their standard deviation over
    the batch (mean over dimensions; about ``1 / sqrt(dim)`` when spread evenly, 0 when collapsed)."""
    n = products.shape[0]
    if n < 2:
        return {}
    vectors = products.float()
    total = vectors.sum(0)
    off_diagonal = (total @ total - (vectors * vectors).sum()) / (n * (n - 1))
    return {"product_mean_cosine": float(off_diagonal), "embedding_std": float(vectors.std(0).mean())}


@torch.no_grad()
def monitors(
    anchors: torch.Tensor,
    products: torch.Tensor,
    product_groups: torch.Tensor,
    positive_index: torch.Tensor,
    queued: tuple[torch.Tensor, torch.Tensor] | None,
) -> dict[str, float]:
    """The batch's collapse signs: :func:`spread` of the fresh products, the mean positive similarity, the
    mean hardest in-batch and hardest queued negative similarity (apart), and the mean margin of the positive
    over the harder of the two; with the negatives per anchor and the same-product candidates masked."""
    rows = torch.arange(len(positive_index), device=anchors.device)
    anchors = anchors.float()
    positive_groups = product_groups[positive_index]
    in_batch = anchors @ products.float().T
    positive = in_batch[rows, positive_index]
    same = product_groups[None, :] == positive_groups[:, None]  # the positive and its product's other copies
    in_batch = in_batch.masked_fill(same, float("-inf"))
    hardest = in_batch.max(dim=1).values
    negatives, masked = (~same).sum(1).float(), float(same.sum() - len(rows))
    found = {"positive_similarity": float(positive.mean())}
    if torch.isfinite(hardest).any():
        found["hardest_batch_negative_similarity"] = float(hardest[torch.isfinite(hardest)].mean())
    if queued is not None and len(queued[0]):
        same_queued = queued[1][None, :] == positive_groups[:, None]
        in_queue = (anchors @ queued[0].float().T).masked_fill(same_queued, float("-inf"))
        negatives, masked = negatives + (~same_queued).sum(1).float(), masked + float(same_queued.sum())
        hardest_queued = in_queue.max(dim=1).values
        if torch.isfinite(hardest_queued).any():
            found["hardest_queue_negative_similarity"] = float(hardest_queued[torch.isfinite(hardest_queued)].mean())
        hardest = torch.maximum(hardest, hardest_queued)
    # every negative an anchor meets in any term (batch and queue), and the copies of its product masked away
    found["negatives_per_anchor"], found["false_negatives_masked"] = float(negatives.mean()), masked
    finite = torch.isfinite(hardest)
    if finite.any():
        found["hardest_negative_similarity"] = float(hardest[finite].mean())
        found["margin"] = float((positive[finite] - hardest[finite]).mean())
    return {**found, **spread(products)}


@dataclass
class CollapseRule:
    """Turn the queue off after ``patience`` consecutive training steps with the queue in use whose batch
    shows collapse: ``product_mean_cosine > MAX_MEAN_COSINE`` and ``margin < MAX_MARGIN`` (positive minus
    hardest negative similarity). ``patience`` 0 never turns it off."""

    patience: int
    strikes: int = 0
    tripped_at: int | None = None
    last: dict[str, float] = field(default_factory=dict)

    def observe(self, stats: dict[str, float], step: int) -> bool:
        """True once, at the step the queue must be turned off."""
        if not self.patience or self.tripped_at is not None:
            return False
        collapsed = stats.get("product_mean_cosine", 0.0) > MAX_MEAN_COSINE and stats.get("margin", 1.0) < MAX_MARGIN
        self.strikes = self.strikes + 1 if collapsed else 0
        if self.strikes >= self.patience:
            self.tripped_at, self.last = step, dict(stats)
            return True
        return False
