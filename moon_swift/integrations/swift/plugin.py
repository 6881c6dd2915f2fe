"""Importing this module registers everything moon-swift adds to ms-swift (``registry/moon.py`` does)."""

from .registration import register_all

register_all()
