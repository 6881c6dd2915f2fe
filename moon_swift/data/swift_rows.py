"""Product records -> ms-swift embedding rows (``messages`` / ``positive_messages`` / ``*_images``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import MoonInputError
from ..core.markup import ATTRIBUTE_TAGS, CATEGORY_TAGS, GROUP_ID_TAGS
from .records import ProductRecord


def product_content(record: ProductRecord, *, with_title: bool = True, with_fields: bool = True) -> str:
    """The product as one user turn: every image, then title, category path and attributes.

    Category and attributes are wrapped in ``<category>``/``<attributes>`` markup, which the
    ``moon`` template turns into token types for the guided MoE experts; ``<group_id>`` carries the
    id used to mask false negatives (the template removes it before tokenizing).
    """
    lines = [record.title] if with_title else []
    if with_fields and record.category_path:
        lines.append(f"{CATEGORY_TAGS[0]}{' > '.join(record.category_path)}{CATEGORY_TAGS[1]}")
    if with_fields and record.attributes:
        attributes = "; ".join(f"{name}: {value}" for name, value in record.attributes.items())
        lines.append(f"{ATTRIBUTE_TAGS[0]}{attributes}{ATTRIBUTE_TAGS[1]}")
    group = record.group_id or record.product_id
    return f"{GROUP_ID_TAGS[0]}{group}{GROUP_ID_TAGS[1]}" + "<image>" * len(record.images) + "\n".join(lines)


def product_messages(record: ProductRecord, **parts: bool) -> list[dict[str, str]]:
    """``parts``: ``with_title`` / ``with_fields`` of :func:`product_content`."""
    return [{"role": "user", "content": product_content(record, **parts)}]


def embedding_row(
    query: str,
    query_images: Sequence[str],
    product: ProductRecord,
    negatives: Sequence[ProductRecord] | None = None,
    **parts,
) -> dict[str, Any]:
    """One swift embedding row: the query (text and/or images) -> the product, plus hard negatives.

    ``parts`` (``with_title`` / ``with_fields``) choose the product view, the same for positive and negatives.
    With hard negatives asked for (``negatives`` not None), a product that has none still gets empty negative
    columns: swift reads a missing column of a file whose other rows have it as None and fails on it.
    """
    row: dict[str, Any] = {
        "messages": [{"role": "user", "content": "<image>" * len(query_images) + query}],
        "positive_messages": [product_messages(product, **parts)],
        "positive_images": [list(product.images)],
    }
    if query_images:
        row["images"] = list(query_images)
    if negatives is not None:
        row["negative_messages"] = [product_messages(n, **parts) for n in negatives]
        row["negative_images"] = [list(n.images) for n in negatives]
    return row


#: Pairs a catalog yields without a behaviour log: the query, and the product view it should find.
CATALOG_PAIR_KINDS = ("title", "image", "category")


def title_to_product_row(record: ProductRecord, negatives: Sequence[ProductRecord] | None = None) -> dict[str, Any]:
    """Anchor = the title as a text query; positive = the product without its title (images,
    category, attributes), so the pair teaches matching text to what the product looks like."""
    return embedding_row(record.title, (), record, negatives, with_title=False)


def catalog_rows(
    records: Sequence[ProductRecord],
    kinds: Sequence[str] = ("title",),
    negatives: Sequence[Sequence[ProductRecord]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Training rows from the catalog itself, for each record and each kind:

    * ``title``: title -> product without its title;
    * ``image``: the first image alone -> the full product (title, category, attributes, images);
    * ``category``: the category path -> product without its category/attributes (products of one
      category are each other's false negatives here: prefer small batches or few such rows).
    """
    unknown = set(kinds) - set(CATALOG_PAIR_KINDS)
    if unknown:
        raise ValueError(f"unknown catalog pair kinds {sorted(unknown)}; choose from {CATALOG_PAIR_KINDS}")
    for index, record in enumerate(records):
        chosen = negatives[index] if negatives is not None else None
        if "title" in kinds:
            yield title_to_product_row(record, chosen)
        if "image" in kinds and record.images:
            yield embedding_row("", record.images[:1], record, chosen)
        if "category" in kinds and record.category_path:
            yield embedding_row(" > ".join(record.category_path), (), record, chosen, with_fields=False)


def title_to_product_rows(
    records: Sequence[ProductRecord], negatives: Sequence[Sequence[ProductRecord]] | None = None
) -> Iterator[dict[str, Any]]:
    return catalog_rows(records, ("title",), negatives)


#: how a behaviour pair queries: text only, a photo only, or a photo with text (a multimodal query)
QUERY_KINDS = ("text", "image", "multimodal")


def query_kind(text: str | None, image: str | None) -> str:
    if image and text:
        return "multimodal"
    return "image" if image else "text"


def behaviour_rows(
    pairs: Sequence[Any],
    products: dict[str, ProductRecord],
    negatives: dict[str, Sequence[ProductRecord]] | None = None,
) -> Iterator[dict[str, Any]]:
    """User behaviour (query text and/or image -> product id) -> rows against the full product; a photo +
    text query is ``<image>`` followed by the text, one anchor (as :func:`embedding_row` writes any query)."""
    for pair in pairs:
        product = products[pair.product_id]
        chosen = negatives.get(pair.product_id, []) if negatives is not None else None
        yield embedding_row(pair.query_text or "", [pair.query_image] if pair.query_image else [], product, chosen)


def is_held_out(product_id: str, fraction: float) -> bool:
    """Deterministic split by product id (stable across runs, machines and row order)."""
    digest = hashlib.sha1(product_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def split_records(records: list[ProductRecord], val_fraction: float) -> tuple[list[ProductRecord], list[ProductRecord]]:
    train = [r for r in records if not is_held_out(r.product_id, val_fraction)]
    val = [r for r in records if is_held_out(r.product_id, val_fraction)]
    return train, val


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_records(records: Iterable[ProductRecord], path: str | Path) -> int:
    """Product records as JSONL (the evaluation side reads them back with :func:`read_records`)."""
    return write_jsonl(({**vars(r)} for r in records), path)


def read_records(path: str | Path) -> list[ProductRecord]:
    """Products written by :func:`write_records`; errors name the file and row."""
    if not Path(path).is_file():
        raise MoonInputError("products file does not exist", file=str(path))
    records = []
    with Path(path).open(encoding="utf-8") as file:
        for row, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                records.append(ProductRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                raise MoonInputError(f"not a product record ({error})", file=str(path), row=row) from error
    return records
