"""The house rules of the package layout (README "Layout"), checked on the code itself.

Imports are read from every module's syntax tree, those inside functions included (``TYPE_CHECKING``
blocks excluded: they never run). Layers follow the data flow; a module may import its own layer and
the ones below it, never one above, and no module imports, directly or through others, a module that
imports it back.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "moon_swift"

#: module prefix -> layer (the longest matching prefix wins); lower layers know nothing of higher ones
LAYERS = {
    "moon_swift": 0,
    "moon_swift.core": 0,  # errors, the image loader, the markup / token-type contract, embedding settings
    "moon_swift.data": 1,
    "moon_swift.modeling": 1,
    "moon_swift.detection": 1,
    "moon_swift.template": 2,  # image views (uses detection) and the swift template class
    "moon_swift.losses": 2,
    "moon_swift.eval": 3,
    "moon_swift.integrations": 4,
    "moon_swift.apps": 5,
}
#: where reading the environment and registering with swift are allowed
GLUE = ("moon_swift.integrations", "moon_swift.apps")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
    return skipped


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The moon_swift modules ``path`` imports (anywhere in it), resolved to module names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target in modules:
                found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def test_no_module_imports_a_higher_layer():
    upward = [f"{src} (layer {layer(src)}) -> {dst} (layer {layer(dst)})"
              for src, targets in import_graph().items() for dst in targets if layer(dst) > layer(src)]  # fmt: skip
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_there_is_no_import_circle():
    graph = import_graph()
    circles = []

    def reach(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    for module in graph:
        if module in reach(module):
            circles.append(module)
    assert not circles, f"modules that import themselves back through others: {circles}"


def _calls(path: Path, names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{node.value.id}.{node.attr}"
            if dotted in names:
                hits.append(f"{module_name(path)}:{node.lineno} {dotted}")
        elif isinstance(node, ast.Name) and node.id in names:
            hits.append(f"{module_name(path)}:{node.lineno} {node.id}")
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {a.name for a in node.names} & {"environ", "getenv"}
        ):
            hits.append(f"{module_name(path)}:{node.lineno} from os import environ/getenv")
    return hits


def _core_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if not module_name(p).startswith(GLUE)]


def test_only_the_integration_and_the_applications_read_the_environment():
    hits = [hit for path in _core_modules() for hit in _calls(path, {"os.environ", "os.getenv", "getenv"})]
    assert not hits, "environment read in the core: " + ", ".join(hits)


def test_only_the_integration_registers_with_swift():
    registries = {"register_model", "register_template", "register_dataset", "register_benchmark", "loss_map",
                  "callbacks_map", "TRAINER_MAPPING", "register_all", "register_ready"}  # fmt: skip
    hits = [hit for path in _core_modules() for hit in _calls(path, registries)]
    assert not hits, "swift registries touched outside moon_swift.integrations: " + ", ".join(hits)


def _imported_by(statement: str, autoload: bool = True) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    env = {**os.environ, "MOON_SWIFT_AUTOLOAD": "1" if autoload else "0"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


LOWER_PACKAGES = ["moon_swift.core", "moon_swift.modeling", "moon_swift.template", "moon_swift.data"]


@pytest.mark.parametrize("package", LOWER_PACKAGES)
def test_the_lower_layers_import_no_swift(package):
    loaded = _imported_by(f"import {package}")
    assert not {m for m in loaded if m == "swift" or m.startswith("swift.")}, f"{package} pulls in swift"


def test_the_template_class_imports_nothing_of_the_integration():
    start_up = _imported_by("pass", autoload=False)  # the start-up hook's own module is there in every process
    loaded = _imported_by("import moon_swift.template.moon_template", autoload=False) - start_up
    assert "moon_swift.template.moon_template" in loaded
    assert not {m for m in loaded if m.startswith("moon_swift.integrations")}


def test_the_start_up_hook_watches_exactly_what_registration_needs():
    from moon_swift.integrations.swift import autoload, registration

    assert autoload.WATCHED_MODULES == set(registration.WATCHED_MODULES)
