"""``moon-swift eval``: several models side by side on held-out products (table + JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..data.catalog_files import QueryPair
from ..data.records import ProductRecord
from .encode import Encoder, ProductEncoder, image_query_request, query_request
from .index import IndexKind
from .tasks import (
    Outcome,
    attribute_outcomes,
    category_levels,
    classification_outcomes,
    predictable_attributes,
    retrieval_outcome,
)


def retrieval_queries(pairs: Sequence[QueryPair], direction: str) -> list[QueryPair]:
    """The behaviour pairs that query in ``direction`` (``text`` or ``image``)."""
    return [p for p in pairs if (p.query_text if direction == "text" else p.query_image)]


def retrieval_directions(pairs: Sequence[QueryPair]) -> list[str]:
    """``text`` / ``image`` with behaviour pairs; ``title`` (title -> product) without."""
    return [d for d in ("text", "image") if retrieval_queries(pairs, d)] if pairs else ["title"]


def task_names(records: Sequence[ProductRecord], pairs: Sequence[QueryPair] = ()) -> list[str]:
    """Every task :func:`evaluate_outcomes` reports for this data, known before encoding anything."""
    return (
        [f"retrieval/{d}->product" for d in retrieval_directions(pairs)]
        + [f"classification/{level}" for level in category_levels(records)]
        + [f"attributes/{name}" for name in predictable_attributes(records)]
    )


def evaluate_outcomes(encoder: Encoder, records: Sequence[ProductRecord], pairs: Sequence[QueryPair] = (), *,
                      index: IndexKind = "flat", name: str = "model") -> dict[str, Outcome]:  # fmt: skip
    """Every task's per-item outcome for one model. Products are encoded once per view:

    * with behaviour ``pairs``: text -> product and image -> product over the full products;
      without: title -> product (images, category, attributes; no title), the catalog pairs' view;
    * classification / attributes: products as images + title only (the label must not be in the input).
    """
    outcomes: dict[str, Outcome] = {}
    if pairs:
        catalog = encoder.encode_products(records, desc=f"products {name}")
        position = {record.product_id: i for i, record in enumerate(records)}
        for direction in retrieval_directions(pairs):
            chosen = retrieval_queries(pairs, direction)
            requests = [query_request(p.query_text) if direction == "text" else image_query_request(p.query_image)
                        for p in chosen]  # fmt: skip
            queries = encoder.encode(requests, desc=f"{direction} queries {name}")
            targets = [position[p.product_id] for p in chosen]
            outcomes[f"retrieval/{direction}->product"] = retrieval_outcome(queries, catalog, targets, index=index)
    else:
        titles = encoder.encode_queries([r.title for r in records], desc=f"titles   {name}")
        catalog = encoder.encode_products(records, with_title=False, desc=f"products {name}")
        outcomes["retrieval/title->product"] = retrieval_outcome(titles, catalog, range(len(records)), index=index)
    plain = encoder.encode_products(records, with_fields=False, desc=f"plain    {name}")
    for level, outcome in classification_outcomes(encoder, plain, records).items():
        outcomes[f"classification/{level}"] = outcome
    for attribute, outcome in attribute_outcomes(encoder, plain, records).items():
        outcomes[f"attributes/{attribute}"] = outcome
    return outcomes


def metrics_by_task(outcomes: dict[str, Outcome]) -> dict[str, dict]:
    """``{"retrieval/x->product": metrics, "classification": {level: metrics}, "attributes": {name: metrics}}``."""
    results: dict[str, dict] = {}
    for task, outcome in outcomes.items():
        group, _, name = task.partition("/")
        if group == "retrieval":
            results[task] = outcome.metrics()
        else:
            results.setdefault(group, {})[name] = outcome.metrics()
    return results


def evaluate_model(model_dir: str, records: Sequence[ProductRecord], pairs: Sequence[QueryPair] = (), *,
                   index: IndexKind = "flat", batch_size: int = 16, cache_dir: Path | None = None,
                   ) -> dict[str, dict]:  # fmt: skip
    """Every task's metrics for one checkpoint, encoded in this process."""
    encoder = ProductEncoder(model_dir, batch_size=batch_size, cache_dir=cache_dir)
    outcomes = evaluate_outcomes(encoder, records, pairs, index=index, name=Path(model_dir).name)
    return metrics_by_task(outcomes)


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


def run_eval(
    models: Sequence[str],
    records: Sequence[ProductRecord],
    out_dir: Path | None,
    pairs: Sequence[QueryPair] = (),
    **kwargs,
) -> str:
    per_model = {model: flatten(evaluate_model(model, records, pairs, **kwargs)) for model in models}
    table = format_side_by_side(per_model)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "eval.json").write_text(json.dumps({"products": len(records), "models": per_model}, indent=2))
        from .plots import plot_results

        plot_results(per_model, out_dir)
    return table
