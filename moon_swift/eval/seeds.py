"""Figures over several seeds: mean +- std per metric, and whether two variants are told apart.

A difference counts as *separated* when it is larger than twice the pooled standard deviation of the two
variants' seeds (sample std); with one seed nothing is separated, there is no spread to compare with.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float  # sample std over the seeds; nan with one seed
    values: tuple[float, ...]

    def cell(self) -> str:
        return f"{self.mean:.3f}" if math.isnan(self.std) else f"{self.mean:.3f}±{self.std:.3f}"


def spread(values: Sequence[float]) -> Spread:
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError("no seeds to summarise")
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return Spread(statistics.fmean(values), std, values)


def summarize(per_seed: Sequence[dict[str, float]]) -> dict[str, Spread]:
    """Each metric every seed reported, over the seeds."""
    keys = [key for key in per_seed[0] if all(key in seed for seed in per_seed)]
    return {key: spread([seed[key] for seed in per_seed]) for key in keys}


def separated(a: Spread, b: Spread) -> bool:
    """|mean difference| > 2 x pooled std (False with fewer than two seeds on either side)."""
    if len(a.values) < 2 or len(b.values) < 2:
        return False
    pooled = math.sqrt((a.std**2 + b.std**2) / 2)
    return abs(b.mean - a.mean) > 2 * pooled
