"""Start-up hook that registers moon with ms-swift the moment swift imports its registries.

``pip install moon-swift`` puts ``moon_swift_autoload.pth`` in site-packages; it imports this
module at every Python start-up. This module imports nothing heavy: it only adds a finder to
``sys.meta_path`` that waits for the modules of :data:`WATCHED_MODULES` (swift's registries, and the
moon modules registered into them) to finish importing, then calls
:func:`moon_swift.integrations.swift.registration.register_ready`. Processes that never import swift
pay nothing, and those that do need no ``--external_plugins`` flag. Set ``MOON_SWIFT_AUTOLOAD=0`` to
turn it off.
"""

from __future__ import annotations

import os
import sys

ENV_SWITCH = "MOON_SWIFT_AUTOLOAD"
#: ``registration.WATCHED_MODULES``, spelled out so that start-up imports nothing more (a test keeps them equal)
WATCHED_MODULES = frozenset({
    "moon_swift.integrations.swift.callbacks",
    "moon_swift.integrations.swift.datasets",
    "moon_swift.integrations.swift.eval_benchmarks",
    "moon_swift.integrations.swift.hub",
    "moon_swift.integrations.swift.loader",
    "moon_swift.losses.moon_infonce",
    "moon_swift.template.moon_template",
    "swift.callbacks",
    "swift.dataset",
    "swift.loss",
    "swift.model",
    "swift.pipelines.eval",
    "swift.pipelines.export",
    "swift.template",
    "swift.trainers.trainer_factory",
})  # fmt: skip


def _register_after(module_name: str) -> None:
    try:
        from moon_swift.integrations.swift.registration import register_ready

        register_ready(module_name)
    except Exception as error:  # a broken plugin must not break swift itself
        print(f"[moon-swift] registration after importing {module_name} failed: {error!r}", file=sys.stderr)


class _LoaderThenRegister:
    """Wraps a module's loader; after the module has executed, registers moon's part."""

    def __init__(self, loader, module_name: str):
        self._loader = loader
        self._module_name = module_name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _register_after(self._module_name)

    def __getattr__(self, name: str):  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


class _SwiftImportWatcher:
    """A ``sys.meta_path`` finder (duck-typed: importing importlib.abc would slow every start-up)."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in WATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _LoaderThenRegister(spec.loader, fullname)
                return spec
        return None


def install() -> bool:
    """Add the watcher once (idempotent); returns whether it is active."""
    if os.environ.get(ENV_SWITCH, "1").lower() in ("0", "false", "no", "off"):
        return False
    if not any(isinstance(finder, _SwiftImportWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SwiftImportWatcher())
    return True


install()
