"""Check an ms-swift embedding JSONL before training: every row, every image, with file:row:field errors.

swift itself resamples or drops rows that fail to encode; running this first (``moon-swift
check-data``) turns each such row into a precise message instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.errors import MoonInputError
from ..core.images import describe_value, image_problem
from .records import BadRowLog, OnBadRow, logger

# (messages key, images key, nested: one list of messages per positive/negative)
_SIDES = (("messages", "images", False), ("positive_messages", "positive_images", True),
          ("negative_messages", "negative_images", True))  # fmt: skip


def _text(messages: list[dict[str, Any]]) -> str:
    return " ".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))


def _row_problems(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, problem) pairs for one row."""
    problems = []
    if not isinstance(row.get("messages"), list) or not row["messages"]:
        return [("messages", "missing or empty 'messages' (the anchor)")]
    for messages_key, images_key, nested in _SIDES:
        groups = row.get(messages_key) or []
        image_groups = row.get(images_key) or []
        if not nested:
            groups, image_groups = [groups], [image_groups]
        for index, messages in enumerate(groups):
            images = image_groups[index] if index < len(image_groups) else []
            suffix = f"[{index}]" if nested else ""
            if isinstance(images, str):
                images = [images]
            text = _text(messages).replace("<image>", "").strip()
            if not text and not images:
                problems.append((f"{messages_key}{suffix}", "empty text and no image"))
            if _text(messages).count("<image>") != len(images):
                problems.append((f"{images_key}{suffix}", f"{len(images)} images for "
                                 f"{_text(messages).count('<image>')} <image> tags"))  # fmt: skip
            for image_index, image in enumerate(images):
                problem = image_problem(image)
                if problem:
                    problems.append((f"{images_key}{suffix}[{image_index}]", f"{problem}: {describe_value(image)}"))
    return problems


def check_embedding_jsonl(path: str | Path, *, on_bad_row: OnBadRow = "error") -> tuple[int, BadRowLog]:
    """Validate every row of a swift embedding JSONL (rows numbered from 1); returns (rows, log)."""
    path = Path(path)
    if not path.is_file():
        raise MoonInputError("dataset file not found", file=str(path))
    log = BadRowLog(on_bad_row)
    total = 0
    with path.open(encoding="utf-8") as file:
        for row_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            total += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                log.bad(MoonInputError(f"not valid JSON ({error})", file=str(path), row=row_number), "invalid JSON")
                continue
            for field, problem in _row_problems(row):
                log.bad(MoonInputError(problem, file=str(path), row=row_number, field=field), field.split("[")[0])
    logger.info(log.summary(total, str(path)))
    return total, log
