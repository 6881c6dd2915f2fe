"""A box store's lookup table on disk: content hash -> the store's line, memory-mapped.

Loading ``boxes.jsonl`` into a dict (:class:`~moon_swift.detection.store.BoxStore`) gives every dataloader
worker on every rank its own copy of the whole store and makes each of them parse all of it at start: for a
million-product catalog, millions of lines and gigabytes per process. The index is built once, by
``moon-swift detect`` when it has written the store (or by the first reader that finds it missing or older
than the store), into ``<store>.index/``: the effective lines' hashes, sorted, and each one's byte offset in
the store. Readers map both and the store itself read-only, so all processes share one copy in the page
cache, and a lookup is a binary search plus one line parsed. Later lines win, as in ``BoxStore``.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MoonInputError
from .selection import Selection

logger = logging.getLogger("moon_swift.detection")

#: bumped when the files' layout changes (an index of another version is rebuilt)
INDEX_VERSION = 1


def index_dir(store: str | Path) -> Path:
    return Path(f"{store}.index")


def _store_stamp(store: Path) -> dict[str, int]:
    stat = store.stat()
    return {"store_bytes": stat.st_size, "store_mtime_ns": stat.st_mtime_ns}


def build_box_index(store: str | Path) -> dict[str, Any]:
    """Scan ``store`` once: the arrays and facts :class:`BoxIndex` serves (not written; see :func:`write_box_index`).

    A line that is not JSON or has no ``sha256`` stops with the store's name and the line's number."""
    store = Path(store)
    stamp = _store_stamp(store)
    digests, offsets, fingerprint_ids = bytearray(), [], []
    fingerprints: dict[str, int] = {}
    offset = 0
    with store.open("rb") as file:
        for row, line in enumerate(file, start=1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                digest = bytes.fromhex(entry["sha256"])
            except (ValueError, KeyError, TypeError) as error:
                raise MoonInputError(f"not a box store line ({error})", file=str(store), row=row,
                                     field="sha256") from error  # fmt: skip
            if len(digest) != 32:
                raise MoonInputError("not a sha256 (64 hex digits)", file=str(store), row=row, field="sha256")
            fingerprint = str((entry.get("detector") or {}).get("fingerprint"))
            digests += digest
            offsets.append(start)
            fingerprint_ids.append(fingerprints.setdefault(fingerprint, len(fingerprints)))
    all_digests = np.frombuffer(bytes(digests), dtype=np.uint8).reshape(-1, 32)
    # the last line of each hash: np.unique over the lines in reverse finds each hash's first = last line
    backwards = np.ascontiguousarray(all_digests[::-1]).view("V32").ravel()
    _, first_backwards = np.unique(backwards, return_index=True)  # sorted by bytes = by big-endian prefix
    last = len(all_digests) - 1 - first_backwards
    first = int(np.flatnonzero((all_digests == all_digests[0]).all(axis=1))[-1]) if len(offsets) else None
    names = list(fingerprints)
    used = sorted({names[i] for i in np.asarray(fingerprint_ids, dtype=np.int64)[last].tolist()} - {"None"})
    return {
        "hashes": np.ascontiguousarray(all_digests[last]),
        "offsets": np.asarray(offsets, dtype=np.uint64)[last],
        "meta": {
            "version": INDEX_VERSION,
            **stamp,
            "lines": len(offsets),
            "entries": int(len(last)),
            "fingerprints": used,
            "first_offset": None if first is None else offsets[first],
        },  # fmt: skip
    }


def write_box_index(store: str | Path) -> Path:
    """Build the index of ``store`` into ``<store>.index/``; each file is replaced whole (two processes
    building at once write the same bytes), ``meta.json`` last, as the mark that the arrays are complete."""
    built = build_box_index(store)
    folder = index_dir(store)
    folder.mkdir(exist_ok=True)
    suffix = f".{os.getpid()}.tmp"
    for name in ("hashes", "offsets"):
        temporary = folder / f"{name}.npy{suffix}"
        with temporary.open("wb") as file:
            np.save(file, built[name])
        os.replace(temporary, folder / f"{name}.npy")
    temporary = folder / f"meta.json{suffix}"
    temporary.write_text(json.dumps(built["meta"]))
    os.replace(temporary, folder / "meta.json")
    logger.info("box index: %d images (%d lines) of %s", built["meta"]["entries"], built["meta"]["lines"], store)
    return folder


class BoxIndex:
    """Read-only lookups in a box store through its index (built or rebuilt here when missing or stale).

    Where the index cannot be written (a read-only folder), it is built in memory, with a warning: still
    40 bytes an image instead of a parsed line."""

    def __init__(self, store: str | Path):
        self.path = Path(store)
        if not self.path.is_file():
            raise MoonInputError("box store does not exist", file=str(self.path), field="boxes")
        built = self._open_or_build()
        self.hashes, self.offsets, self.meta = built["hashes"], built["offsets"], built["meta"]
        self._prefixes = self.hashes[:, :8].copy().view(">u8").ravel().astype(np.uint64)  # 8 bytes an image
        size = self.meta["store_bytes"]
        with self.path.open("rb") as file:  # the map keeps its own handle
            self._lines = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) if size else b""

    def _open_or_build(self) -> dict[str, Any]:
        folder = index_dir(self.path)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            fresh = all(meta.get(key) == value for key, value in _store_stamp(self.path).items())
            if meta.get("version") == INDEX_VERSION and fresh:
                hashes = np.load(folder / "hashes.npy", mmap_mode="r")
                offsets = np.load(folder / "offsets.npy", mmap_mode="r")
                if len(hashes) == len(offsets) == meta["entries"]:
                    return {"hashes": hashes, "offsets": offsets, "meta": meta}
        except (OSError, ValueError, KeyError):
            pass  # missing or unreadable: rebuilt below
        try:
            write_box_index(self.path)
            return self._open_or_build()
        except PermissionError:
            logger.warning("box index: cannot write %s; indexing %s in memory for this process", folder, self.path)
            return build_box_index(self.path)

    def __len__(self) -> int:
        return int(self.meta["entries"])

    def __contains__(self, sha256: str) -> bool:
        return self._position(sha256) is not None

    def _position(self, sha256: str) -> int | None:
        try:
            digest = bytes.fromhex(sha256)
        except ValueError:
            return None
        prefix = np.uint64(int.from_bytes(digest[:8], "big"))
        low = int(np.searchsorted(self._prefixes, prefix, side="left"))
        high = int(np.searchsorted(self._prefixes, prefix, side="right"))
        for position in range(low, high):  # more than one only if two hashes share 64 bits
            if self.hashes[position].tobytes() == digest:
                return position
        return None

    def _line_at(self, offset: int) -> dict[str, Any]:
        end = self._lines.find(b"\n", offset)
        return json.loads(self._lines[offset : end if end >= 0 else len(self._lines)])

    def entry_sha256(self, sha256: str) -> dict[str, Any] | None:
        """The store's (last) line for this content hash, or None."""
        position = self._position(sha256)
        return None if position is None else self._line_at(int(self.offsets[position]))

    def lookup_sha256(self, sha256: str) -> Selection | None:
        """The stored :class:`Selection` for an image's content hash, or None if it was never detected."""
        entry = self.entry_sha256(sha256)
        return None if entry is None else Selection.from_dict(entry)

    def detector_fingerprints(self) -> set[str]:
        """The fingerprints of the detectors whose results the store's effective lines hold."""
        return set(self.meta["fingerprints"])

    def first_entry(self) -> dict[str, Any] | None:
        """The effective line of the store's first image (the lines of one ``detect`` share detector and policy)."""
        first = self.meta.get("first_offset")
        return None if first is None else self._line_at(first)
