"""FIFO queue of detached past product embeddings: MOON's temporal negatives."""

from __future__ import annotations

import torch

from ..core.errors import MoonInputError


class NegativeQueue:
    """A ring buffer of ``size`` embeddings with their group ids and the step they were made at.

    ``max_age`` (steps, 0 = no limit) drops entries computed by a model too many updates old.
    """

    def __init__(self, size: int, max_age: int = 0):
        if size < 0 or max_age < 0:
            raise MoonInputError(f"queue size ({size}) and max age ({max_age}) must be >= 0", field="queue")
        self.size, self.max_age = size, max_age
        self.embeddings: torch.Tensor | None = None
        self.group_ids: torch.Tensor | None = None
        self.steps: torch.Tensor | None = None
        self.pointer = 0
        self.filled = 0

    def __len__(self) -> int:
        return self.filled

    def _allocate(self, dim: int, like: torch.Tensor) -> None:
        self.embeddings = torch.zeros(self.size, dim, dtype=torch.float32, device=like.device)
        self.group_ids = torch.zeros(self.size, dtype=torch.long, device=like.device)
        self.steps = torch.zeros(self.size, dtype=torch.long, device=like.device)

    def check_dim(self, dim: int) -> None:
        if self.embeddings is not None and self.embeddings.shape[1] != dim:
            raise MoonInputError(
                f"the negative queue holds {self.embeddings.shape[1]}-d embeddings but the model now makes {dim}-d "
                "ones (model changed since the checkpoint?): resume without the queue file "
                "(moon_infonce_queue_rank*.pt) or set MOON_INFONCE_QUEUE_SIZE=0",
                field="queue",
            )

    @torch.no_grad()
    def enqueue(self, embeddings: torch.Tensor, group_ids: torch.Tensor, step: int) -> None:
        if self.size == 0 or embeddings.shape[0] == 0:
            return
        self.check_dim(embeddings.shape[1])
        if self.embeddings is None:
            self._allocate(embeddings.shape[1], embeddings)
        embeddings, group_ids = embeddings[-self.size :], group_ids[-self.size :]  # newest win if oversized
        index = (self.pointer + torch.arange(embeddings.shape[0], device=self.embeddings.device)) % self.size
        self.embeddings[index] = embeddings.detach().float().to(self.embeddings.device)
        self.group_ids[index] = group_ids.to(self.group_ids.device)
        self.steps[index] = step
        self.pointer = int((self.pointer + embeddings.shape[0]) % self.size)
        self.filled = min(self.size, self.filled + embeddings.shape[0])

    def candidates(self, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(embeddings, group ids) usable at ``step``, oldest first; None when empty."""
        if self.filled == 0:
            return None
        order = (self.pointer - self.filled + torch.arange(self.filled, device=self.embeddings.device)) % self.size
        if self.max_age:
            order = order[step - self.steps[order] <= self.max_age]
        return self.embeddings[order], self.group_ids[order]

    def state_dict(self) -> dict:
        return {
            "size": self.size, "max_age": self.max_age, "pointer": self.pointer, "filled": self.filled,
            "embeddings": None if self.embeddings is None else self.embeddings.cpu(),
            "group_ids": None if self.group_ids is None else self.group_ids.cpu(),
            "steps": None if self.steps is None else self.steps.cpu(),
        }  # fmt: skip

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        if state["size"] != self.size:
            raise MoonInputError(
                f"the saved queue has size {state['size']} but MOON_INFONCE_QUEUE_SIZE is {self.size}", field="queue"
            )
        self.pointer, self.filled = state["pointer"], state["filled"]
        for key in ("embeddings", "group_ids", "steps"):
            value = state[key]
            setattr(self, key, None if value is None else value.to(device))
