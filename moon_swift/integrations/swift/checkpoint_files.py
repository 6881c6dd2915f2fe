"""Checks a checkpoint's files before ``--resume_from_checkpoint`` reads them.

A run killed while saving (or a copy cut short) leaves truncated files; torch, safetensors and DeepSpeed
then fail deep inside their loaders, on one rank, with an error that names no file. This reads only
headers, zip directories and the small pickles, so it costs milliseconds, and names the file and what is
wrong with it.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from ...core.errors import MoonInputError

#: bytes per element of the safetensors dtypes
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
#: per-rank files: a rank's file missing while another rank's is there means the save was cut short
RANK_FILES = {
    "rng_state": re.compile(r"rng_state_(\d+)\.pth"),
    "moon_infonce queue": re.compile(r"moon_infonce_queue_rank(\d+)\.pt"),
    "moon_infonce momentum encoder": re.compile(r"moon_infonce_momentum_rank(\d+)\.pt"),
    "DeepSpeed optimizer shard": re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt"),
    "DeepSpeed ZeRO-3 model shard": re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_model_states\.pt"),
}
TRAINER_STATE = "trainer_state.json"
HINT = "the save was interrupted or the copy is incomplete: resume from an earlier checkpoint"


def check_checkpoint(checkpoint: str | Path, world_size: int = 1) -> list[Path]:
    """Raise :class:`MoonInputError` naming the first damaged or missing file of ``checkpoint``; returns
    the files checked. ``world_size``: processes of the resuming run, each of which needs its own rank files
    (a rank killed while saving leaves none, and the highest one would otherwise go unnoticed)."""
    root = Path(checkpoint)
    if not root.is_dir():
        raise MoonInputError("resume_from_checkpoint is not a directory", file=str(root))
    if not (root / TRAINER_STATE).is_file():
        raise MoonInputError(f"no {TRAINER_STATE}: not a complete checkpoint ({HINT})", file=str(root))
    checked = []
    for path in _files(root):
        check_file(path)
        checked.append(path)
    _check_deepspeed_tag(root)
    _check_ranks(root, checked, world_size)
    return checked


def check_file(path: Path) -> None:
    """One file, by its kind (safetensors, torch.save archive, JSON); other files are not read."""
    name = path.name
    if name.endswith(".safetensors"):
        check_safetensors(path)
    elif name.endswith((".pt", ".pth", ".bin")):
        check_torch_archive(path)
    elif name.endswith(".json"):
        check_json(path)
        if name.endswith(".index.json"):
            _check_index(path)


def check_safetensors(path: Path) -> None:
    """The header fits in the file, parses, and its tensors' byte ranges are the rest of the file."""
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            _fail(path, f"safetensors file of {size} bytes has no header (truncated)")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > size - 8:
            _fail(path, f"safetensors header of {header_length} bytes does not fit in the file's {size} (truncated)")
        raw = file.read(header_length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        _fail(path, f"safetensors header is not valid JSON ({error})")
    if not isinstance(header, dict):
        _fail(path, "safetensors header is not a JSON object")
    data_size, end = size - 8 - header_length, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(offset) for offset in info["data_offsets"])
            expected = SAFETENSORS_DTYPE_BYTES.get(info["dtype"], 0)
            for dim in info["shape"]:
                expected *= int(dim)
        except (KeyError, TypeError, ValueError) as error:
            _fail(path, f"safetensors header entry {name!r} is malformed ({error!r})")
        if expected and stop - begin != expected:
            _fail(path, f"tensor {name!r} takes {stop - begin} bytes, its dtype and shape need {expected}")
        end = max(end, stop)
    if end > data_size:
        _fail(path, f"truncated: the header places tensors up to byte {end} of the data, the file holds {data_size}")
    if end < data_size:
        _fail(path, f"{data_size - end} bytes after the last tensor (damaged or not a safetensors file)")


def check_torch_archive(path: Path) -> None:
    """A ``torch.save`` file: its zip directory (at the end of the file) is there, every member lies inside
    the file, and the pickle (``data.pkl``) reads back with a matching CRC."""
    size = path.stat().st_size
    with path.open("rb") as file:
        magic = file.read(4)
    if size == 0:
        _fail(path, "empty file (truncated)")
    if magic[:2] != b"PK":
        if magic[:1] == b"\x80":  # torch's legacy (pre-zip) format: nothing cheap to check
            return
        _fail(path, "not a torch.save archive (no zip or pickle header)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for member in members:
                if member.header_offset + len(member.filename) + 30 + member.compress_size > size:
                    _fail(path, f"truncated: member {member.filename} ends past the file's {size} bytes")
            pickles = [member for member in members if member.filename.endswith("data.pkl")]
            if not pickles:
                _fail(path, "torch.save archive without data.pkl")
            for member in pickles:
                archive.read(member)  # checks the CRC
    except zipfile.BadZipFile as error:
        _fail(path, f"truncated or damaged torch.save archive ({error})")
    except (OSError, EOFError) as error:
        _fail(path, f"unreadable torch.save archive ({error})")


def check_json(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        _fail(path, f"not valid JSON, truncated? ({error})")


def _check_index(path: Path) -> None:
    """A sharded model's index: every shard it maps a weight to is there."""
    weight_map = json.loads(path.read_text(encoding="utf-8")).get("weight_map") or {}
    for shard in sorted(set(weight_map.values())):
        if not (path.parent / shard).is_file():
            _fail(path, f"lists shard {shard}, which is missing ({HINT})")


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def _check_deepspeed_tag(root: Path) -> None:
    """DeepSpeed reads the folder that ``latest`` names; it must be there with the model states."""
    latest = root / "latest"
    if not latest.is_file():
        return
    tag = latest.read_text(encoding="utf-8", errors="replace").strip()
    folder = root / tag
    if not tag or not folder.is_dir():
        _fail(latest, f"names DeepSpeed checkpoint folder {tag!r}, which is missing ({HINT})")
    if not any(folder.glob("*model_states.pt")):
        _fail(folder, f"DeepSpeed checkpoint folder without *model_states.pt ({HINT})")


def _check_ranks(root: Path, files: list[Path], world_size: int = 1) -> None:
    """Every rank that saved something, and every rank of the resuming run, saved each kind of per-rank file."""
    ranks: dict[str, set[int]] = {kind: set() for kind in RANK_FILES}
    for path in files:
        for kind, pattern in RANK_FILES.items():
            match = pattern.fullmatch(path.name)
            if match:
                ranks[kind].add(int(match.group(1)))
    present = {kind: found for kind, found in ranks.items() if found}
    if not present:
        return
    world = max(max(max(found) for found in present.values()) + 1, world_size)
    for kind, found in present.items():
        missing = sorted(set(range(world)) - found)
        if missing:
            raise MoonInputError(
                f"the {kind} file of rank(s) {missing} is missing while other ranks' are there (this run has "
                f"{world_size} process(es); a rank killed while saving, or a checkpoint of fewer processes: {HINT})",
                file=str(root),
            )


def _fail(path: Path, reason: str) -> NoReturn:
    raise MoonInputError(reason, file=str(path))
