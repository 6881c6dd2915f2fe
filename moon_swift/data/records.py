"""The product record every reader produces, and the bad-row policy they share."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from ..core.errors import MoonInputError

logger = logging.getLogger("moon_swift.data")

OnBadRow = Literal["error", "skip"]


@dataclass
class ProductRecord:
    """One product: several images, a title, a category path (root first) and attributes."""

    product_id: str
    title: str
    images: list[str]
    category_path: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    group_id: str | None = None


class BadRowLog:
    """Applies the ``on_bad_row`` policy: raise at the first bad row, or skip and count.

    Skips are never silent: :meth:`summary` (logged by the readers) gives the count per reason
    and the first few locations.
    """

    def __init__(self, on_bad_row: OnBadRow = "error", examples: int = 5):
        if on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
        self.on_bad_row = on_bad_row
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []
        self._max_examples = examples

    def bad(self, error: MoonInputError, reason: str) -> None:
        if self.on_bad_row == "error":
            raise error
        self.reasons[reason] += 1
        if len(self.examples) < self._max_examples:
            self.examples.append(str(error))

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def summary(self, total: int, source: str) -> str:
        if not self.skipped:
            return f"{source}: read {total} rows, none skipped"
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.reasons.most_common())
        return f"{source}: skipped {self.skipped} of {total} rows ({reasons}); e.g. {self.examples[0]}"


def checked_record(
    log: BadRowLog,
    seen: set[str],
    where: dict,
    *,
    product_id: str,
    title: str,
    images: list[str],
    category_path: list[str],
    attributes: dict[str, str],
    group_id: str | None = None,
    check_images: bool = True,
    fields: tuple[str, str, str] = ("product_id", "title", "images"),
) -> ProductRecord | None:
    """The record, or None after logging why the row is bad (every reader's checks, in one place).

    ``where`` holds ``file`` and ``row``; ``fields`` names the id, title and image columns of the
    source format so that messages use the user's own column names.
    """
    from ..core.images import image_problem

    id_field, title_field, image_field = fields
    if not product_id:
        log.bad(MoonInputError("empty product id", field=id_field, **where), "empty id")
    elif product_id in seen:
        log.bad(MoonInputError(f"duplicate product id {product_id!r}", field=id_field, **where), "duplicate id")
    elif not title:
        log.bad(MoonInputError("empty title", field=title_field, **where), "empty title")
    elif not images:
        log.bad(MoonInputError("no image", field=image_field, **where), "bad image")
    else:
        problems = [(i, image_problem(image)) for i, image in enumerate(images)] if check_images else []
        bad = [(i, problem) for i, problem in problems if problem]
        if not bad:
            seen.add(product_id)
            return ProductRecord(product_id, title, images, category_path, attributes, group_id)
        index, problem = bad[0]
        field = image_field if len(images) == 1 else f"{image_field}[{index}]"
        log.bad(MoonInputError(f"{problem}: {images[index]}", field=field, **where), "bad image")
    return None
