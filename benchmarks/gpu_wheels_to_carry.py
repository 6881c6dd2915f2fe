"""Which of a resolved install an air-gapped GPU machine needs carried, given what it already has.

    python benchmarks/gpu_wheels_to_carry.py pins MACHINE OUT
    python benchmarks/gpu_wheels_to_carry.py choose REPORT MACHINE OUT [--requirements FILE] [--install FILE]
                                                                       [--expected FILE] [--python 3.12]

MACHINE is what the machine has: ``pip freeze`` lines (``name==version``, ``name @ URL``), or bare names for
packages of unknown version (``benchmarks/gpu_machine_packages.txt``). ``pins`` writes its known versions as pip
constraints (local labels such as ``+cu130`` dropped: the index has none). ``choose`` reads REPORT, pip's
``install --dry-run --report`` of what the check needs under those constraints (``benchmarks/gpu_wheelhouse.sh``
makes both), and writes one ``name==version`` per package to carry to OUT; ``--install`` the requirement lines of
the offline install (a name, so that pip keeps a satisfying version of the machine's, pinned where the machine's
known version is replaced, since a name alone would keep it); ``--expected`` what the install takes from the
machine instead (its version where known, the bare name where not), for a stand-in of the machine
(``benchmarks/gpu_standin.sh``).

A package the machine lacks is carried. One it has at a known version is carried when the resolution picked
another. One it has at an unknown version is carried only when a carried package, or the check's own
``--requirements``, bound it from above (``<``, ``<=``, ``==``, ``~=``, ``===``: ``peft<0.21`` from ms-swift
4.6.0, say), since a recent image may well be past such a bound; the bounds of the machine's own packages
(``urllib3<3`` from requests) held when the image was installed. Otherwise it is left to the machine, and named,
so that a too-old version there stops the offline install with pip naming it rather than being carried for
nothing. torch, triton and the CUDA libraries (``nvidia-*``) are never carried: the machine's CUDA build stays.
Requirements behind extras are not followed (only plain installs happen).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

UPPER_BOUNDS = ("<", "==", "~=", "===")  # "<=" starts with "<"
NEVER_CARRIED = ("torch", "triton")
#: the requirer of ``--requirements``: the check itself, always installed
THE_CHECK = "(the check)"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """``version`` without its local label (``2.11.0+cu130`` -> ``2.11.0``)."""
    return version.split("+", 1)[0]


def same_version(a: str, b: str) -> bool:
    try:
        return Version(public(a)) == Version(public(b))
    except InvalidVersion:
        return public(a) == public(b)


PACKAGE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


def read_machine(path: Path) -> dict[str, str]:
    """Name -> version ("" where not known) from pip freeze lines or bare names; ``name @ URL`` is a package of
    unknown version; comments, blank lines and options (``-e ...``) are skipped. Any other line (a range such
    as ``foo>=1``, which pip freeze never writes) stops with its file and line number."""
    have: dict[str, str] = {}
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = text.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, version = line.split(" @ ", 1)[0].strip(), ""
        if " @ " not in line:
            name, _, version = (part.strip() for part in line.partition("=="))
        if not PACKAGE_NAME.fullmatch(name) or ("==" in line and not version):
            raise SystemExit(f"{path}:{number}: not a pip freeze line (name==version, name @ URL or a name): {text!r}")
        have[normalized(name)] = version
    return have


@dataclass
class Choice:
    carry: list[str] = field(default_factory=list)  # name==version
    install: list[str] = field(default_factory=list)  # name, or name==version where the machine's is replaced
    replaced: list[str] = field(default_factory=list)  # "name old -> new"
    bounded: list[str] = field(default_factory=list)  # "name==version (the upper bounds, from whom)"
    left: list[str] = field(default_factory=list)  # names left to the machine's unknown version
    expected: list[str] = field(default_factory=list)  # the needed packages the machine has: name[==version]


def target_environment(python: str) -> dict[str, str]:
    """Marker variables of CPython ``python`` (X.Y or X.Y.Z) on Linux x86-64; no extras."""
    major_minor = ".".join(python.split(".")[:2])
    return {
        "python_version": major_minor,
        "python_full_version": python if python.count(".") >= 2 else f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


def upper_bounds(requirements: Iterable[str], requirer: str, environment: dict[str, str]) -> dict[str, list]:
    """Package -> [(upper bound, requirer)] of the ``requirements`` whose markers hold in ``environment``."""
    bounds: dict[str, list[tuple[str, str]]] = {}
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            bounds.setdefault(normalized(requirement.name), []).extend(
                (str(spec), requirer) for spec in requirement.specifier if str(spec).startswith(UPPER_BOUNDS)
            )
    return bounds


def choose(
    items: list[dict[str, Any]], have: dict[str, str], python: str = "3.12", requirements: Iterable[str] = ()
) -> Choice:
    """The module's rule over pip's report ``items``, ``have`` as :func:`read_machine` gives it, and the check's
    own ``requirements`` (always installed, so their bounds count)."""
    environment = target_environment(python)
    versions = {normalized(item["metadata"]["name"]): item["metadata"]["version"] for item in items}
    names = {normalized(item["metadata"]["name"]): item["metadata"]["name"] for item in items}
    names[THE_CHECK] = THE_CHECK
    bounds: dict[str, list[tuple[str, str]]] = {}
    sources = [(THE_CHECK, list(requirements))]
    sources += [(normalized(item["metadata"]["name"]), item["metadata"].get("requires_dist") or []) for item in items]
    for requirer, texts in sources:
        for key, found in upper_bounds(texts, requirer, environment).items():
            bounds.setdefault(key, []).extend(found)
    candidates = [key for key in versions if not key.startswith("nvidia-") and key not in NEVER_CARRIED]
    replaced = {key for key in candidates if have.get(key) and not same_version(have[key], versions[key])}
    carried = {key for key in candidates if key not in have} | replaced | {THE_CHECK}
    unknown = [key for key in candidates if key in have and not have[key]]
    while True:  # a package carried for a bound can bound others in turn
        bounded = {key for key in unknown if any(requirer in carried for _, requirer in bounds.get(key, []))}
        if bounded <= carried:
            break
        carried |= bounded
    choice = Choice()
    choice.expected = [f"{names[key]}=={have[key]}" if have[key] else names[key]
                       for key in versions if key in have and not key.startswith("nvidia-")]  # fmt: skip
    for key in candidates:
        name, version = names[key], versions[key]
        if key not in carried:
            if not have.get(key):
                choice.left.append(name)
            continue
        if key in replaced:
            choice.replaced.append(f"{name} {have[key]} -> {version}")
        elif key in have:
            upper = [f"{spec} from {names[requirer]}" for spec, requirer in bounds[key] if requirer in carried]
            choice.bounded.append(f"{name}=={version} ({', '.join(upper)})")
        choice.carry.append(f"{name}=={version}")
        choice.install.append(f"{name}=={version}" if key in replaced else name)
    return choice


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pins = commands.add_parser("pins", help="the machine's known versions as pip constraints")
    pins.add_argument("machine", type=Path)
    pins.add_argument("out", type=Path)
    chosen = commands.add_parser("choose", help="what to carry")
    chosen.add_argument("report", type=Path)
    chosen.add_argument("machine", type=Path)
    chosen.add_argument("out", type=Path)
    chosen.add_argument("--requirements", type=Path, help="the check's own requirements (their bounds count)")
    chosen.add_argument("--install", type=Path, help="write the offline install's requirement lines here")
    chosen.add_argument("--expected", type=Path, help="write what the install takes from the machine here")
    chosen.add_argument("--python", default="3.12", help="the GPU machine's Python version (markers)")
    args = parser.parse_args()
    have = read_machine(args.machine)
    if args.command == "pins":
        known = {name: version for name, version in have.items() if version}
        write_lines(args.out, (f"{name}=={public(version)}" for name, version in known.items()))
        print(f"   {len(have)} packages, {len(known)} of known version")
        return
    items = json.loads(args.report.read_text(encoding="utf-8"))["install"]
    requirements = []
    if args.requirements:
        lines = args.requirements.read_text(encoding="utf-8").splitlines()
        requirements = [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
    choice = choose(items, have, args.python, requirements)
    if "torch" not in have:
        print(f"   WARNING: {args.machine} lists no torch: the bundle never carries torch (the machine's CUDA build)")
    write_lines(args.out, choice.carry)
    if args.install:
        write_lines(args.install, choice.install)
    if args.expected:
        write_lines(args.expected, choice.expected)
    print(f"   {len(choice.carry)} packages to carry")
    for line in choice.replaced:
        print(f"   the machine's version is replaced: {line}")
    for line in choice.bounded:
        print(f"   carried, the machine's version not known and bounded from above: {line}")
    print(
        f"   left to the machine's own version (not known here; nothing carried bounds it from above): "
        f"{len(choice.left)}: {' '.join(sorted(choice.left))}"
    )


if __name__ == "__main__":
    main()
