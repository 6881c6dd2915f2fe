"""``moon-swift eval``: several models side by side on held-out products (table + JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.records import ProductRecord
from .encode import ProductEncoder
from .index import IndexKind
from .tasks import attribute_prediction, retrieval, zero_shot_classification


def evaluate_model(model_dir: str, records: Sequence[ProductRecord], *, index: IndexKind = "flat",
                   batch_size: int = 16) -> dict[str, dict]:  # fmt: skip
    """Every task for one model. Products are encoded once per view:

    * retrieval: title -> product (images, category, attributes; no title), the training pairs' view;
    * classification / attributes: products as images + title only (the label must not be in the input).
    """
    encoder = ProductEncoder(model_dir, batch_size=batch_size)
    name = Path(model_dir).name
    titles = encoder.encode_queries([r.title for r in records], desc=f"titles   {name}")
    catalog = encoder.encode_products(records, with_title=False, desc=f"products {name}")
    plain = encoder.encode_products(records, with_fields=False, desc=f"plain    {name}")
    return {
        "retrieval/title->product": retrieval(titles, catalog, np.arange(len(records)), index=index),
        "classification": zero_shot_classification(encoder, plain, records),
        "attributes": attribute_prediction(encoder, plain, records),
    }


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


def run_eval(models: Sequence[str], records: Sequence[ProductRecord], out_dir: Path | None, **kwargs) -> str:
    per_model = {model: flatten(evaluate_model(model, records, **kwargs)) for model in models}
    table = format_side_by_side(per_model)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "eval.json").write_text(json.dumps({"products": len(records), "models": per_model}, indent=2))
    return table
