"""Every ms-swift registration of moon-swift, in one place.

``register_all()`` is what ``registry/moon.py`` (``--external_plugins``) calls. After
``pip install``, the start-up hook in :mod:`moon_swift.autoload` calls the parts one by one as
swift imports its own registries, so ``swift sft --model_type moon`` works with no flag.
"""

from __future__ import annotations

import sys


def _still_importing(module_name: str, attribute: str) -> bool:
    """True while ``module_name`` is half-imported (its own import of swift fired the start-up hook).

    The plugin modules call their register function again as their last line, so nothing is lost.
    """
    module = sys.modules.get(module_name)
    return module is not None and not hasattr(module, attribute)


def register_templates() -> None:
    """Template ``moon`` (needs ``swift.template`` fully imported)."""
    if _still_importing("moon_swift.template", "MoonTemplate"):
        return
    from swift.template import TEMPLATE_MAPPING, register_template

    from .template import MOON_TEMPLATE_TYPE, moon_template_meta

    if MOON_TEMPLATE_TYPE not in TEMPLATE_MAPPING:
        register_template(moon_template_meta())


def register_models() -> None:
    """Model type ``moon`` (needs ``swift.model`` fully imported)."""
    if _still_importing("moon_swift.model_loader", "MoonLoader") or _still_importing(
        "moon_swift.template", "MoonTemplate"
    ):
        return
    from swift.model import MODEL_MAPPING, ModelArch, ModelGroup, ModelMeta, register_model

    from .model_loader import MOON_MODEL_TYPE, MoonLoader
    from .template import MOON_TEMPLATE_TYPE

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
        )
    )


def register_callbacks() -> None:
    """Callback ``moon_moe`` (``--callbacks moon_moe``; needs ``swift.callbacks`` fully imported)."""
    if _still_importing("moon_swift.callbacks", "MoonMoeCallback"):
        return
    from swift.callbacks import callbacks_map

    from .callbacks import MOON_MOE_CALLBACK, MoonMoeCallback

    callbacks_map.setdefault(MOON_MOE_CALLBACK, MoonMoeCallback)


def register_losses() -> None:
    """Loss ``moon_infonce`` (``--loss_type moon_infonce``; needs ``swift.loss`` fully imported)."""
    if _still_importing("moon_swift.loss", "MoonInfoNCELoss"):
        return
    from swift.loss import loss_map

    from .loss import MOON_INFONCE, MoonInfoNCELoss

    loss_map.setdefault(MOON_INFONCE, MoonInfoNCELoss)


def register_datasets() -> None:
    """Dataset ``moon-fashion-dev`` (``--dataset moon-fashion-dev:title``; needs ``swift.dataset``)."""
    if _still_importing("moon_swift.data.swift_datasets", "fashion_dataset_meta"):
        return
    from swift.dataset import DATASET_MAPPING, register_dataset

    from .data.swift_datasets import MOON_FASHION_DATASET, fashion_dataset_meta

    if MOON_FASHION_DATASET not in DATASET_MAPPING:
        register_dataset(fashion_dataset_meta())


def register_eval_benchmarks() -> None:
    """evalscope benchmarks ``moon_retrieval`` / ``moon_classification`` / ``moon_attributes`` for
    ``swift eval`` (needs evalscope, which ``swift.pipelines.eval`` imports; absent: nothing to do)."""
    if _still_importing("moon_swift.eval.evalscope_benchmarks", "register_benchmarks"):
        return
    try:
        from .eval.evalscope_benchmarks import register_benchmarks
    except ImportError:  # evalscope not installed: `swift eval` cannot run anyway
        return
    register_benchmarks()


def register_export_hook() -> None:
    """``swift export --push_to_hub`` of a moon model uploads a staged folder with a model card."""
    if _still_importing("moon_swift.hub", "patch_swift_export"):
        return
    from .hub import patch_swift_export

    patch_swift_export()


#: swift module -> what to register once that module has finished importing.
REGISTRATIONS_AFTER_IMPORT = {
    "swift.template": register_templates,
    "swift.model": register_models,
    "swift.callbacks": register_callbacks,
    "swift.loss": register_losses,
    "swift.dataset": register_datasets,
    "swift.pipelines.eval": register_eval_benchmarks,
    "swift.pipelines.export": register_export_hook,
}


def register_all() -> None:
    """Register everything (idempotent)."""
    import moon_swift.modeling  # noqa: F401  (transformers Auto classes)

    register_templates()
    register_models()
    register_callbacks()
    register_losses()
    register_datasets()
    if "swift.pipelines.eval" in sys.modules:  # `swift eval --external_plugins registry/moon.py`
        register_eval_benchmarks()
    if "swift.pipelines.export" in sys.modules:
        register_export_hook()
