"""From a swift row to model inputs: each image's views (``views``: original / core-product crop) and the
``moon`` swift template class (``moon_template``: markup -> token types, Qwen2.5-VL chat encoding).

This ``__init__`` imports nothing, so the package costs nothing until a module of it is used.
"""
