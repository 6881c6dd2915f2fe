"""From a swift row to model inputs: each image's views (original / core-product crop) and the ``moon``
swift template class (markup -> token types, Qwen2.5-VL chat encoding).

Importing this package is light (no swift): :class:`MoonTemplate` loads on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "MoonTemplate": "moon_swift.template.moon_template",
    "MoonTemplateMeta": "moon_swift.template.moon_template",
    "MOON_TEMPLATE_TYPE": "moon_swift.template.moon_template",
    "ImageViews": "moon_swift.template.views",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moon_swift.template' has no attribute {name!r}")


__all__ = list(_LAZY)
