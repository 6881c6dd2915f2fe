"""The settings that change what a checkpoint's embedding is, saved beside its weights.

A MOON vector depends on more than the weights: which image views the model saw (original,
core-product crop, or both), which detector and box policy made the crops, what happens to an image
without a stored box, the field markup / token-type contract and the chat format. A checkpoint
carries them in ``moon_embedding.json``, written by ``upcycle`` / ``make-tiny`` and by every
checkpoint training saves, and read by everything that embeds with the checkpoint (``moon-swift
eval / index / visualize``, ``swift deploy / eval / export``). The training loss settings are
recorded there too (for the model card); they do not change an embedding.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import MoonInputError
from .markup import ATTRIBUTE_TAGS, CATEGORY_TAGS, GROUP_ID_TAGS, TOKEN_ATTRIBUTE, TOKEN_CATEGORY, TOKEN_OTHER

SETTINGS_FILE = "moon_embedding.json"
VIEW_MODES = ("original", "crop", "both")
MISSING_BOX_POLICIES = ("error", "full", "detect")

#: the markup / token-type contract the template implements (a checkpoint trained under another one is refused)
MARKUP_CONTRACT: dict[str, Any] = {
    "category_tags": list(CATEGORY_TAGS),
    "attribute_tags": list(ATTRIBUTE_TAGS),
    "group_id_tags": list(GROUP_ID_TAGS),
    "token_types": {"other": TOKEN_OTHER, "category": TOKEN_CATEGORY, "attribute": TOKEN_ATTRIBUTE},
    "markup_in_text": False,  # the tags are removed from the text the model reads
}

#: the fields whose value changes the vector of an image or text; the rest say where things are or how a
#: missing box is handled, and may be given anew where the checkpoint is used
EMBEDDING_FIELDS = ("image_views", "detector", "box_policy", "markup", "system")


@dataclass(frozen=True)
class EmbeddingSettings:
    """What a checkpoint's embedding depends on besides its weights (see the module docstring).

    * ``image_views``: ``original``, ``crop`` (the core-product crops only) or ``both`` ([original, crop]);
    * ``boxes``: the box store (``moon-swift detect``) the crops came from, where training found it;
    * ``missing_boxes``: an image without a stored box: ``error``, ``full`` (the full image is its crop;
      counted and logged) or ``detect`` (run the detector in the encoding process);
    * ``detector``: which detector made the crops (``config``, ``checkpoint``, ``fingerprint``, and the
      file paths it was at), ``box_policy``: how its boxes became crops;
    * ``markup``: the field markup / token-type contract (:data:`MARKUP_CONTRACT`);
    * ``system``: the chat format's system turn (None: no system turn, MOON's format);
    * ``training``: the loss of the run that saved it (recorded only).
    """

    image_views: str = "original"
    boxes: str | None = None
    missing_boxes: str = "error"
    detector: dict[str, Any] | None = None
    box_policy: dict[str, Any] | None = None
    markup: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(MARKUP_CONTRACT)))
    system: str | None = None
    training: dict[str, Any] | None = None

    def __post_init__(self):
        if self.image_views not in VIEW_MODES:
            raise MoonInputError(f"image_views must be one of {VIEW_MODES}, got {self.image_views!r}",
                                 field="image_views")  # fmt: skip
        if self.missing_boxes not in MISSING_BOX_POLICIES:
            raise MoonInputError(f"missing_boxes must be one of {MISSING_BOX_POLICIES}, got {self.missing_boxes!r}",
                                 field="missing_boxes")  # fmt: skip

    @property
    def uses_crops(self) -> bool:
        return self.image_views != "original"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = SETTINGS_FILE) -> EmbeddingSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MoonInputError(f"unknown settings {unknown} (this moon-swift knows {sorted(known)})", file=source)
        try:
            settings = cls(**data)
        except MoonInputError as error:
            raise MoonInputError(error.reason, file=source, field=error.field) from error
        if settings.markup != MARKUP_CONTRACT:
            raise MoonInputError(
                f"the checkpoint was trained with the markup contract {settings.markup}, this moon-swift implements "
                f"{MARKUP_CONTRACT}",
                file=source,
                field="markup",
            )
        return settings

    def replace(self, **changes: Any) -> EmbeddingSettings:
        return EmbeddingSettings(**{**self.to_dict(), **changes})

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / SETTINGS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def settings_path(directory: str | Path) -> Path:
    return Path(directory) / SETTINGS_FILE


def load_settings(directory: str | Path) -> EmbeddingSettings | None:
    """The settings saved in a checkpoint directory, or None when it has none (a pre-settings checkpoint)."""
    path = settings_path(directory)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise MoonInputError(f"not valid JSON ({error})", file=str(path)) from error
    if not isinstance(data, dict):
        raise MoonInputError("expected a JSON object", file=str(path))
    return EmbeddingSettings.from_dict(data, source=str(path))


def settings_of(directories: list[str | Path]) -> tuple[EmbeddingSettings, str | None]:
    """(settings, the directory they came from) of the first directory that has them (adapters before the
    base model); the defaults and None when none has."""
    for directory in directories:
        settings = load_settings(directory)
        if settings is not None:
            return settings, str(directory)
    return EmbeddingSettings(), None


def base_identity(model_dir: str | Path) -> str | None:
    """A hash of a checkpoint's architecture (its ``config.json`` without bookkeeping keys): what an adapter
    records of the base it was trained on (None without a config)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("transformers_version", "torch_dtype", "dtype", "_name_or_path", "architectures"):
        config.pop(key, None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
