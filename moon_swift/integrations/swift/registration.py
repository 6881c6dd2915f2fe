"""Everything moon-swift adds to ms-swift, in one table: what it registers, in which swift registry.

Each entry needs some swift modules (the registry) and some moon modules (what is registered).
:func:`register_all` registers every entry, importing what it needs (``--external_plugins``, via
:mod:`.plugin`). The start-up hook (:mod:`.autoload`) calls :func:`register_ready` whenever a watched
module finishes importing: it registers the entries whose modules are all completely imported and
leaves the others for later, so registering never touches a half-imported module. Nothing else in
moon-swift calls these functions.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("moon_swift")


def _template() -> None:
    from swift.template import TEMPLATE_MAPPING, register_template

    from ...template.moon_template import MOON_TEMPLATE_TYPE, moon_template_meta
    from .template import SwiftMoonTemplate

    if MOON_TEMPLATE_TYPE not in TEMPLATE_MAPPING:
        register_template(moon_template_meta(SwiftMoonTemplate))


def _model() -> None:
    from swift.model import MODEL_MAPPING, ModelArch, ModelGroup, ModelMeta, register_model

    import moon_swift.modeling  # noqa: F401  (transformers' Auto classes)

    from ...core.settings import SETTINGS_FILE
    from ...modeling.chat_format import CHAT_TEMPLATE_FILE
    from ...template.moon_template import MOON_TEMPLATE_TYPE
    from .loader import MOON_MODEL_TYPE, MoonLoader, refuse_remote_code_for_moon

    refuse_remote_code_for_moon()
    if MOON_MODEL_TYPE in MODEL_MAPPING:
        return
    register_model(
        ModelMeta(
            MOON_MODEL_TYPE,
            [ModelGroup([], template=MOON_TEMPLATE_TYPE)],
            MoonLoader,
            template=MOON_TEMPLATE_TYPE,
            model_arch=ModelArch.qwen2_vl,
            architectures=["MoonModel"],
            is_multimodal=True,
            task_type="embedding",
            tags=["vision", "embedding"],
            # merged LoRA checkpoints keep the adapter's settings and its chat template (a --system turn)
            additional_saved_files=[SETTINGS_FILE, CHAT_TEMPLATE_FILE],
        )
    )


def _callbacks() -> None:
    from swift.callbacks import callbacks_map

    from .callbacks import MOON_MOE_CALLBACK, MoonMoeCallback

    callbacks_map.setdefault(MOON_MOE_CALLBACK, MoonMoeCallback)


def _loss() -> None:
    from swift.loss import loss_map

    from ...losses.moon_infonce import MOON_INFONCE
    from .losses import SwiftMoonInfoNCELoss

    loss_map.setdefault(MOON_INFONCE, SwiftMoonInfoNCELoss)


#: what swift's TrainerFactory maps ``embedding`` to, without and with moon (imported by swift when used)
SWIFT_EMBEDDING_TRAINER = "swift.trainers.EmbeddingTrainer"
MOON_EMBEDDING_TRAINER = "moon_swift.integrations.swift.trainer.MoonEmbeddingTrainer"


def _trainer() -> None:
    from swift.trainers.trainer_factory import TrainerFactory

    current = TrainerFactory.TRAINER_MAPPING.get("embedding")
    if current == SWIFT_EMBEDDING_TRAINER:
        TrainerFactory.TRAINER_MAPPING["embedding"] = MOON_EMBEDDING_TRAINER
    elif current != MOON_EMBEDDING_TRAINER:
        logger.warning("moon: another plugin set swift's embedding trainer (%s); moon checkpoints will lack "
                       "moon_embedding.json unless written by hand", current)  # fmt: skip


def _dataset() -> None:
    from swift.dataset import DATASET_MAPPING, register_dataset

    from .datasets import MOON_FASHION_DATASET, fashion_dataset_meta

    if MOON_FASHION_DATASET not in DATASET_MAPPING:
        register_dataset(fashion_dataset_meta())


def _eval_benchmarks() -> None:
    try:
        from .eval_benchmarks import register_benchmarks
    except ImportError:  # evalscope not installed: `swift eval` cannot run anyway
        return
    register_benchmarks()


def _export() -> None:
    from .hub import patch_swift_export

    patch_swift_export()


@dataclass(frozen=True)
class Registration:
    name: str
    swift_modules: tuple[str, ...]  # must be completely imported first
    moon_modules: tuple[str, ...]  # imported by ``register``: must not be half-imported
    register: Callable[[], None]
    lazy: bool = False  # only once swift itself imports ``swift_modules`` (an optional extra, or a pipeline)


REGISTRATIONS = (
    Registration("template", ("swift.template",), ("moon_swift.template.moon_template",), _template),
    Registration("model", ("swift.model", "swift.template"), ("moon_swift.integrations.swift.loader",), _model),
    Registration("callbacks", ("swift.callbacks",), ("moon_swift.integrations.swift.callbacks",), _callbacks),
    Registration("loss", ("swift.loss",), ("moon_swift.losses.moon_infonce",), _loss),
    Registration("trainer", ("swift.trainers.trainer_factory",), (), _trainer),
    Registration("dataset", ("swift.dataset",), ("moon_swift.integrations.swift.datasets",), _dataset),
    Registration(
        "eval benchmarks",
        ("swift.pipelines.eval",),
        ("moon_swift.integrations.swift.eval_benchmarks",),
        _eval_benchmarks,
        lazy=True,
    ),  # fmt: skip
    Registration("export", ("swift.pipelines.export",), ("moon_swift.integrations.swift.hub",), _export, lazy=True),
)
#: every module whose import may complete an entry's prerequisites (what the start-up hook watches)
WATCHED_MODULES = tuple(sorted({m for r in REGISTRATIONS for m in (*r.swift_modules, *r.moon_modules)}))

_done: set[str] = set()
_state = {"running": False, "again": False}
#: modules whose code has run to the end (importlib marks a module initializing until its loader returns,
#: which is after the start-up hook has seen it finish)
_finished: set[str] = set()


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    if module is None or name in _finished:
        return False
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _imported(name: str) -> bool:
    return name in sys.modules and not _initializing(name)


def _run(entry: Registration) -> None:
    entry.register()
    _done.add(entry.name)


def register_ready(finished: str | None = None) -> None:
    """Register every entry whose swift modules are completely imported and whose moon modules are not
    half-imported (what the start-up hook calls after each watched import, ``finished`` being the module that
    just ran to its end). A call made while one runs (an entry's imports completing another watched module)
    is folded into the running one."""
    if finished:
        _finished.add(finished)
    if _state["running"]:
        _state["again"] = True
        return
    _state["running"] = True
    try:
        _state["again"] = True
        while _state["again"]:
            _state["again"] = False
            for entry in REGISTRATIONS:
                ready = all(_imported(m) for m in entry.swift_modules)
                if entry.name not in _done and ready and not any(_initializing(m) for m in entry.moon_modules):
                    _run(entry)
    finally:
        _state["running"] = False


def register_all() -> None:
    """Register everything (idempotent); the optional pipeline entries only where swift imported them."""
    for entry in REGISTRATIONS:
        if entry.name in _done:
            continue
        if entry.lazy and not all(_imported(m) for m in entry.swift_modules):
            continue
        for module in entry.swift_modules:
            importlib.import_module(module)
        _run(entry)
