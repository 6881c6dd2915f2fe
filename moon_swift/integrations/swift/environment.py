"""moon's environment variables, read in one place (swift's own options are its ``--flags``; moon's reach
swift's dataloader workers and ``swift deploy`` alike as environment variables, like swift's ``INFONCE_*``).

Embedding settings (a checkpoint carries its own in ``moon_embedding.json``; these override them):

==========================  ===================================================================================
``MOON_IMAGE_VIEWS``        ``original``, ``crop`` or ``both`` ([original, core-product crop])
``MOON_BOXES``              the box store (``moon-swift detect``) to take crops from
``MOON_BOXES_MISSING``      an image without a stored box: ``error``, ``full`` (full image as crop) or ``detect``
``MOON_DETECTOR_CONFIG``    with ``MOON_DETECTOR_CHECKPOINT``: the MMDetection detector for ``detect``
==========================  ===================================================================================

Training may override any of them (the override is logged with the saved value and the new checkpoint
records it). Where a checkpoint is used for embedding (eval, index, deploy), only where things are
(``MOON_BOXES``, the detector's files) and the missing-box policy may be overridden; a different image
view setting, or a box store or detector other than the one the crops came from, stops with a message.

``moon_infonce`` (``--loss_type moon_infonce``): ``MOON_INFONCE_TEMPERATURE``, ``MOON_INFONCE_SPATIAL``,
``MOON_INFONCE_QUEUE_SIZE``, ``MOON_INFONCE_QUEUE_MAX_AGE``, ``MOON_INFONCE_QUEUE_NEGATIVES``,
``MOON_INFONCE_QUEUE_START``, ``MOON_INFONCE_QUEUE_MODE``, ``MOON_INFONCE_QUEUE_WEIGHT``,
``MOON_INFONCE_MOMENTUM``, ``MOON_INFONCE_UNIFORMITY``, ``MOON_INFONCE_COLLAPSE_PATIENCE`` (see
:class:`~moon_swift.losses.moon_infonce.MoonInfoNCEOptions` and README's "Temporal negatives").

Training steps (any embedding loss):

==========================  ===================================================================================
``MOON_GRAD_CACHE_ROWS``    rows per forward chunk of a cached contrastive step (GradCache); unset or 0: off
                            (see :mod:`moon_swift.integrations.swift.cached_steps`)
==========================  ===================================================================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...core.errors import MoonInputError
from ...core.settings import EmbeddingSettings

if TYPE_CHECKING:
    from ...losses.moon_infonce import MoonInfoNCEOptions

logger = logging.getLogger("moon_swift")

IMAGE_VIEWS, BOXES, BOXES_MISSING = "MOON_IMAGE_VIEWS", "MOON_BOXES", "MOON_BOXES_MISSING"
DETECTOR_CONFIG, DETECTOR_CHECKPOINT = "MOON_DETECTOR_CONFIG", "MOON_DETECTOR_CHECKPOINT"
GRAD_CACHE_ROWS = "MOON_GRAD_CACHE_ROWS"
#: setting -> its environment variable
SETTING_VARIABLES = {"image_views": IMAGE_VIEWS, "boxes": BOXES, "missing_boxes": BOXES_MISSING}


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(name)
    if value is None:
        return default
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise MoonInputError(f"{name}={value!r}: expected true/false", field=name)


def env_number(name: str, default, kind, env: Mapping[str, str] | None = None):
    value = (os.environ if env is None else env).get(name)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError as error:
        expected = "an integer" if kind is int else "a number"
        raise MoonInputError(f"{name}={value!r}: expected {expected}", field=name) from error


def grad_cache_rows(env: Mapping[str, str] | None = None) -> int:
    """``MOON_GRAD_CACHE_ROWS``: rows per forward chunk of a cached step (0: steps are not cached)."""
    rows = env_number(GRAD_CACHE_ROWS, 0, int, env)
    if rows < 0:
        raise MoonInputError(
            f"{GRAD_CACHE_ROWS}={rows}: expected a number of rows >= 0 (0: off)", field=GRAD_CACHE_ROWS
        )
    return rows


def infonce_options(env: Mapping[str, str] | None = None) -> MoonInfoNCEOptions:
    """``moon_infonce``'s options from ``MOON_INFONCE_*`` (defaults where unset)."""
    from ...losses.moon_infonce import MoonInfoNCEOptions

    d = MoonInfoNCEOptions()
    try:
        return MoonInfoNCEOptions(
            temperature=env_number("MOON_INFONCE_TEMPERATURE", d.temperature, float, env),
            spatial=env_bool("MOON_INFONCE_SPATIAL", d.spatial, env),
            queue_size=env_number("MOON_INFONCE_QUEUE_SIZE", d.queue_size, int, env),
            queue_max_age=env_number("MOON_INFONCE_QUEUE_MAX_AGE", d.queue_max_age, int, env),
            queue_negatives=env_bool("MOON_INFONCE_QUEUE_NEGATIVES", d.queue_negatives, env),
            queue_start=env_number("MOON_INFONCE_QUEUE_START", d.queue_start, int, env),
            queue_mode=(env if env is not None else os.environ).get("MOON_INFONCE_QUEUE_MODE", d.queue_mode).strip(),
            queue_weight=env_number("MOON_INFONCE_QUEUE_WEIGHT", None, float, env),
            momentum=env_number("MOON_INFONCE_MOMENTUM", d.momentum, float, env),
            uniformity=env_number("MOON_INFONCE_UNIFORMITY", d.uniformity, float, env),
            collapse_patience=env_number("MOON_INFONCE_COLLAPSE_PATIENCE", d.collapse_patience, int, env),
        )
    except MoonInputError as error:
        names = {"temperature": "MOON_INFONCE_TEMPERATURE", "queue_mode": "MOON_INFONCE_QUEUE_MODE",
                 "momentum": "MOON_INFONCE_MOMENTUM"}  # fmt: skip
        name = names.get(error.field or "", "MOON_INFONCE_QUEUE_*")
        raise MoonInputError(error.reason, field=name) from error


def setting_overrides(env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """The embedding settings the environment gives (setting name -> value; only those set)."""
    env = os.environ if env is None else env
    given: dict[str, str | None] = {}
    for setting, variable in SETTING_VARIABLES.items():
        if variable in env:
            given[setting] = env[variable] or None
    return given


def detector_files(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(config, checkpoint) of ``MOON_DETECTOR_CONFIG`` / ``MOON_DETECTOR_CHECKPOINT``, or None."""
    env = os.environ if env is None else env
    config, checkpoint = env.get(DETECTOR_CONFIG), env.get(DETECTOR_CHECKPOINT)
    if bool(config) != bool(checkpoint):
        raise MoonInputError(f"set both {DETECTOR_CONFIG} and {DETECTOR_CHECKPOINT}, or neither", field=DETECTOR_CONFIG)
    return (config, checkpoint) if config else None


def resolve_settings(
    saved: EmbeddingSettings, source: str | None, *, training: bool, env: Mapping[str, str] | None = None
) -> EmbeddingSettings:
    """The settings to encode with: ``saved`` (from ``source``, a checkpoint; None: the defaults) with the
    environment's overrides, each logged beside the saved value (see the module docstring for the rules)."""
    from ...detection.backend import BUNDLED_CHECKPOINT, BUNDLED_CONFIG, detector_record
    from ...detection.box_index import BoxIndex

    given = setting_overrides(env)
    files = detector_files(env)
    where = f"{source}/moon_embedding.json" if source else "the defaults (no moon_embedding.json)"
    changes: dict = {}
    if training and "boxes" in given and given["boxes"] and "image_views" not in given and not saved.uses_crops:
        given["image_views"] = "both"  # a box store given for training means: train on [original, crop]
    for setting, value in given.items():
        old = getattr(saved, setting)
        if value == old:
            continue
        variable = SETTING_VARIABLES[setting]
        if setting == "image_views" and not training and source is not None:
            raise MoonInputError(
                f"{variable}={value!r} conflicts with the checkpoint: it embeds with image_views={old!r} (saved in "
                f"{where}); unset {variable}, or train a checkpoint with these views",
                field=variable,
            )
        logger.warning("moon: %s=%r overrides %s=%r saved in %s", variable, value, setting, old, where)
        changes[setting] = value
    settings = saved.replace(**changes) if changes else saved
    detector = None
    if files:  # the detector for missing_boxes=detect (and the record of what made the crops)
        detector = detector_record(*files)
    if settings.uses_crops and not training:
        if detector is not None and saved.detector and detector["fingerprint"] != saved.detector.get("fingerprint"):
            raise MoonInputError(
                f"{DETECTOR_CONFIG}/{DETECTOR_CHECKPOINT} give detector {detector['fingerprint']}, but the "
                f"checkpoint's crops come from {saved.detector.get('fingerprint')} (saved in {where})",
                field=DETECTOR_CONFIG,
            )
        return settings.replace(detector=detector or settings.detector) if detector else settings
    if training and settings.uses_crops:  # record what makes this run's crops
        store_first = BoxIndex(settings.boxes).first_entry() if settings.boxes else None
        if store_first is not None:
            detector = store_first.get("detector") or detector
            policy = store_first.get("policy")
            if detector and files is None:
                detector = _with_paths(detector)
            settings = settings.replace(detector=detector, box_policy=policy)
        else:
            settings = settings.replace(detector=detector or detector_record(BUNDLED_CONFIG, BUNDLED_CHECKPOINT))
    return settings


def _with_paths(described: dict) -> dict:
    """A box store line names its detector's files but not where they are; the bundled one is known."""
    from ...detection.backend import BUNDLED_CHECKPOINT, BUNDLED_CONFIG, files_fingerprint

    if described.get("fingerprint") == files_fingerprint(BUNDLED_CONFIG, BUNDLED_CHECKPOINT):
        return {**described, "config_path": str(BUNDLED_CONFIG), "checkpoint_path": str(BUNDLED_CHECKPOINT)}
    return dict(described)
