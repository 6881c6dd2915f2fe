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
