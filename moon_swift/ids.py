"""Product / group ids as int64 tensors (for batching, all_gather and the negative queue)."""

from __future__ import annotations

import hashlib

UNKNOWN_GROUP = -1  # a row without an id: never masked as the same product as anything else


def group_id_hash(value: str) -> int:
    """A stable non-negative int64 for a product or group id string (same on every machine)."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "big") >> 2
