"""The data contract between the data layer, the template and the model: field markup, token types, group ids.

``<category>Apparel > Topwear > Tshirts</category>`` and ``<attributes>colour: Blue</attributes>``
are written by :mod:`moon_swift.data` from the record's fields and read by the ``moon`` template,
which turns them into token types for the guided MoE experts (:data:`TOKEN_CATEGORY`,
:data:`TOKEN_ATTRIBUTE`; everything else is :data:`TOKEN_OTHER`). ``<group_id>SKU-123</group_id>``
carries the product's group id: the template removes it and passes the id on (hashed by
:func:`group_id_hash`), so that ``moon_infonce`` never uses another row of the same group as a negative.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import MoonInputError

CATEGORY_TAGS = ("<category>", "</category>")
ATTRIBUTE_TAGS = ("<attributes>", "</attributes>")
GROUP_ID_TAGS = ("<group_id>", "</group_id>")

#: ``token_type_ids`` values the template produces and :class:`~moon_swift.modeling.GuidedMoE` routes by.
TOKEN_OTHER, TOKEN_CATEGORY, TOKEN_ATTRIBUTE = 0, 1, 2

#: a row without an id: never masked as the same product as anything else
UNKNOWN_GROUP = -1


def group_id_hash(value: str) -> int:
    """A stable non-negative int64 for a product or group id string (same on every machine)."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "big") >> 2


# -- from markup to token types: one implementation, for the swift template and for MoonProcessor -------------

#: Each tag becomes a Qwen special token before tokenisation, so that a span always starts and ends on a token
#: boundary; the marker tokens are removed again after tokenisation (:meth:`MarkerIds.split`).
FIELD_MARKERS = {
    CATEGORY_TAGS[0]: "<|quad_start|>",
    CATEGORY_TAGS[1]: "<|quad_end|>",
    ATTRIBUTE_TAGS[0]: "<|box_start|>",
    ATTRIBUTE_TAGS[1]: "<|box_end|>",
}
_SPAN = re.compile(r"<(category|attributes)>(.*?)</\1>", re.S)
_ANY_TAG = re.compile(r"</?(?:category|attributes)>")
_GROUP_ID = re.compile(re.escape(GROUP_ID_TAGS[0]) + r"(.*?)" + re.escape(GROUP_ID_TAGS[1]) + r"\n?", re.S)


def take_group_ids(text: str) -> tuple[str, list[str]]:
    """``text`` without its ``<group_id>...</group_id>`` markup, and the ids it named."""
    if GROUP_ID_TAGS[0] not in text:
        return text, []
    return _GROUP_ID.sub("", text), [value.strip() for value in _GROUP_ID.findall(text)]


def to_markers(text: str, *, field: str) -> str:
    """Check ``text``'s field markup and turn its tags into marker tokens (``field`` names it in errors)."""
    markers = set(FIELD_MARKERS.values())
    reserved = sorted(marker for marker in markers if marker in text)
    if reserved:
        raise MoonInputError(
            f"text contains a reserved token {reserved}; moon uses them to mark <category>/<attributes> spans",
            field=field,
        )
    nested = [tag for span in _SPAN.finditer(text) for tag in _ANY_TAG.findall(span.group(2))]
    leftover = nested + _ANY_TAG.findall(_SPAN.sub("", text))
    if leftover:
        raise MoonInputError(
            f"unbalanced or nested field markup {leftover}: use <category>...</category> and "
            "<attributes>...</attributes>, each closed before the next opens",
            field=field,
        )
    for tag, marker in FIELD_MARKERS.items():
        text = text.replace(tag, marker)
    return text


@dataclass(frozen=True)
class MarkerIds:
    """The marker tokens' ids in one tokenizer: opening id -> token type, and the closing ids."""

    opens: dict[int, int]
    closes: frozenset[int]

    @classmethod
    def of(cls, tokenizer) -> MarkerIds:
        ids = tokenizer.convert_tokens_to_ids
        opens = {
            ids(FIELD_MARKERS[CATEGORY_TAGS[0]]): TOKEN_CATEGORY,
            ids(FIELD_MARKERS[ATTRIBUTE_TAGS[0]]): TOKEN_ATTRIBUTE,
        }
        return cls(opens, frozenset(ids(FIELD_MARKERS[tags[1]]) for tags in (CATEGORY_TAGS, ATTRIBUTE_TAGS)))

    def split(self, token_ids: Sequence[int]) -> tuple[list[bool], list[int]]:
        """(keep mask over ``token_ids``: False on marker tokens, token type of every kept token)."""
        keep, types, current = [], [], TOKEN_OTHER
        for token in token_ids:
            if token in self.opens:
                current = self.opens[token]
            elif token in self.closes:
                current = TOKEN_OTHER
            else:
                types.append(current)
                keep.append(True)
                continue
            keep.append(False)
        return keep, types
