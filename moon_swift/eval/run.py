"""``moon-swift eval``: several models side by side on held-out products (table + JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..data.catalog_files import QueryPair
from ..data.records import ProductRecord
from ..data.swift_rows import QUERY_KINDS, query_kind
from .encode import Encoder, ProductEncoder, image_query_request, query_request
from .index import IndexKind
from .plots import plot_results
from .report import flatten, format_side_by_side, metrics_by_task
from .tasks import (
    Outcome,
    category_levels,
    label_outcomes,
    predictable_attributes,
    retrieval_outcome,
)


def retrieval_queries(pairs: Sequence[QueryPair], direction: str) -> list[QueryPair]:
    """The behaviour pairs that query in ``direction`` (``text``, ``image`` or ``multimodal``)."""
    return [p for p in pairs if query_kind(p.query_text, p.query_image) == direction]


def retrieval_directions(pairs: Sequence[QueryPair]) -> list[str]:
    """The query kinds the behaviour pairs have; ``title`` (title -> product) without pairs."""
    return [d for d in QUERY_KINDS if retrieval_queries(pairs, d)] if pairs else ["title"]


def query_request_of(pair: QueryPair) -> dict:
    """The request a behaviour pair's query is encoded from (as its training row's anchor)."""
    if pair.query_image:
        return image_query_request(pair.query_image, pair.query_text or "")
    return query_request(pair.query_text or "")


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

    * with behaviour ``pairs``: text -> product, photo -> product and photo + text -> product (each
      query kind the pairs have) over the full products;
      without: title -> product (images, category, attributes; no title), the catalog pairs' view;
    * classification / attributes: products as images + title only (the label must not be in the input).
    """
    outcomes: dict[str, Outcome] = {}
    if pairs:
        catalog = encoder.encode_products(records, desc=f"products {name}")
        position = {record.product_id: i for i, record in enumerate(records)}
        for direction in retrieval_directions(pairs):
            chosen = retrieval_queries(pairs, direction)
            requests = [query_request_of(p) for p in chosen]
            queries = encoder.encode(requests, desc=f"{direction} queries {name}")
            targets = [position[p.product_id] for p in chosen]
            outcomes[f"retrieval/{direction}->product"] = retrieval_outcome(queries, catalog, targets, index=index)
    else:
        titles = encoder.encode_queries([r.title for r in records], desc=f"titles   {name}")
        catalog = encoder.encode_products(records, with_title=False, desc=f"products {name}")
        outcomes["retrieval/title->product"] = retrieval_outcome(titles, catalog, range(len(records)), index=index)
    outcomes.update(label_outcomes(encoder, records, name))
    return outcomes


def evaluate_model(model_dir: str, records: Sequence[ProductRecord], pairs: Sequence[QueryPair] = (), *,
                   index: IndexKind = "flat", cache_dir: Path | None = None, **encoder_options,
                   ) -> dict[str, dict]:  # fmt: skip
    """Every task's metrics for one checkpoint, encoded in this process (``encoder_options``: those of
    :class:`ProductEncoder`: ``adapters``, ``batch_size``, ``device``, ``dtype``)."""
    encoder = ProductEncoder(model_dir, cache_dir=cache_dir, **encoder_options)
    outcomes = evaluate_outcomes(encoder, records, pairs, index=index, name=Path(model_dir).name)
    return metrics_by_task(outcomes)


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
        plot_results(per_model, out_dir)
    return table
