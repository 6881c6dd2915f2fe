"""The drift probe: how far a fixed set of products' embeddings moved since the last logging step.

The first training batch's products are kept; every ``every`` optimizer steps (the logging interval) they are
embedded again without gradient, in eval mode, and ``moon_infonce/drift_cosine`` logs the mean cosine between
their embeddings now and ``every`` steps before. A queue of past embeddings is only as good as this is close
to 1: a model that moves fast makes its queued negatives stale (MoCo, arXiv 1911.05722, section 3.2).
"""

from __future__ import annotations

import torch

from ...losses.moon_infonce import BatchLayout
from .momentum import embed_without_grad


def _detached_copy(inputs: dict) -> dict:
    return {key: value.detach().clone() if torch.is_tensor(value) else value for key, value in inputs.items()}


class DriftProbe:
    """Costs one no-grad forward of one batch per ``every`` steps (every rank at the same steps: ZeRO-3 gathers
    parameters collectively)."""

    def __init__(self, every: int):
        self.every = max(1, int(every))
        self.inputs: dict | None = None
        self.products: torch.Tensor | None = None
        self.previous: torch.Tensor | None = None
        self.last_step = -1

    def observe(self, model, inputs: dict, step: int, metrics, embed=embed_without_grad) -> float | None:
        """Called with every training batch; probes at multiples of ``every`` (once per step); ``embed``: how to
        embed a batch without gradient (chunked under cached steps)."""
        if self.inputs is None:
            self.inputs = _detached_copy(inputs)
            labels = inputs["labels"].reshape(-1)
            self.products = BatchLayout.from_labels(labels, labels.numel() + int((labels == 1).sum())).products
        if step % self.every or step == self.last_step:
            return None
        self.last_step = step
        was_training = model.training
        model.eval()
        try:
            embedded = embed(model, self.inputs)
            now = embedded[self.products.to(embedded.device)].float()
        finally:
            model.train(was_training)
        cosine = None
        if self.previous is not None:
            cosine = float((now * self.previous).sum(-1).mean())
            metrics["moon_infonce/drift_cosine"].update(cosine)
        self.previous = now
        return cosine
