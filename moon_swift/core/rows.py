"""Rows of a CSV or JSONL file, numbered as a user counts them, so that every bad-input message can name
the file and row."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import MoonInputError


def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) of a CSV (header = row 1) or JSONL (line = row) file."""
    if not path.is_file():
        raise MoonInputError("file not found", file=str(path))
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as file:
            yield from enumerate(csv.DictReader(file), start=2)
        return
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise MoonInputError(f"not valid JSON ({error})", file=str(path), row=number) from error
            if not isinstance(row, dict):
                raise MoonInputError("a row must be a JSON object", file=str(path), row=number)
            yield number, row
