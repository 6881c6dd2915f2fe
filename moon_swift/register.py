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


#: swift module -> what to register once that module has finished importing.
REGISTRATIONS_AFTER_IMPORT = {
    "swift.template": register_templates,
    "swift.model": register_models,
    "swift.callbacks": register_callbacks,
    "swift.loss": register_losses,
}


def register_all() -> None:
    """Register everything (idempotent)."""
    import moon_swift.modeling  # noqa: F401  (transformers Auto classes)

    register_templates()
    register_models()
    register_callbacks()
    register_losses()
