"""Metrics of an evaluation as tables: per task, flattened per metric, several models side by side."""

from __future__ import annotations

from pathlib import Path

from .tasks import Outcome


def metrics_by_task(outcomes: dict[str, Outcome]) -> dict[str, dict]:
    """``{"retrieval/x->product": metrics, "street/photo->category": metrics, "classification": {level: metrics},
    "attributes": {name: metrics}}``."""
    results: dict[str, dict] = {}
    for task, outcome in outcomes.items():
        group, _, name = task.partition("/")
        if group in ("retrieval", "street"):  # one task, several metrics
            results[task] = outcome.metrics()
        else:
            results.setdefault(group, {})[name] = outcome.metrics()
    return results


def flatten(results: dict[str, dict]) -> dict[str, float]:
    rows = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if isinstance(value, dict):
                for metric in ("accuracy", "macro_f1"):
                    rows[f"{task}/{key}/{metric}"] = value[metric]
            else:
                rows[f"{task}/{key}"] = value
    return rows


def column_name(model_dir: str) -> str:
    """The last two path parts (``train/checkpoint-356``), at most 22 characters."""
    return "/".join(Path(model_dir).parts[-2:])[-22:]


def format_side_by_side(per_model: dict[str, dict[str, float]]) -> str:
    names = list(per_model)
    keys = list(next(iter(per_model.values())))
    width = max(len(k) for k in keys) + 2
    lines = [f"{'metric':<{width}}" + "".join(f"{column_name(n):>24}" for n in names)]
    lines += [f"{k:<{width}}" + "".join(f"{per_model[n].get(k, float('nan')):>24.3f}" for n in names) for k in keys]
    return "\n".join(lines)
