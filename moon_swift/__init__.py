"""moon-swift: MOON product embeddings (arXiv 2508.11999) as an ms-swift plugin.

Importing this package is cheap (no torch, no swift); the model classes load on first use:
``from moon_swift import MoonModel`` registers ``moon`` with transformers' Auto classes.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "MoonConfig": "moon_swift.modeling",
    "MoonModel": "moon_swift.modeling",
    "MoonEmbeddingOutput": "moon_swift.modeling",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moon_swift' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
