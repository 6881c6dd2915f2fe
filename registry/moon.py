import moon_swift.integrations.swift.plugin  # noqa: F401  (`--external_plugins registry/moon.py`; not needed after pip install)
