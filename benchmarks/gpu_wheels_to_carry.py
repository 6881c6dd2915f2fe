"""Which of a resolved install an air-gapped GPU machine needs carried, given what it already has.

    python benchmarks/gpu_wheels_to_carry.py REPORT MACHINE OUT [--expected FILE] [--python 3.12]

REPORT is pip's ``install --dry-run --report`` of what the check needs (``benchmarks/gpu_wheelhouse.sh`` makes it);
MACHINE what the machine has: ``pip freeze`` lines, or bare names for packages of unknown version
(``benchmarks/gpu_machine_packages.txt``). OUT gets one ``name==version`` per package to carry; ``--expected``
what the install takes from the machine instead (its version where known, the bare name where not), so that a
stand-in of the machine can be built from it (``benchmarks/gpu_standin.sh``).

A package the machine lacks is carried. One it has at a known version is carried when the resolution picked
another. One it has at an unknown version is carried only when a carried package bounds it from above (``<``,
``<=``, ``==``, ``~=``, ``===``: ``peft<0.21`` from ms-swift 4.6.0, say), since a recent image may well be past
such a bound; the bounds of the machine's own packages (``urllib3<3`` from requests) held when the image was
installed. Otherwise it is left to the machine, and named, so that a too-old version there stops the offline
install with pip naming it rather than being carried for nothing. torch, triton and the CUDA libraries
(``nvidia-*``) are never carried: the machine's CUDA build stays.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

UPPER_BOUNDS = ("<", "==", "~=", "===")  # "<=" starts with "<"
NEVER_CARRIED = ("torch", "triton")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_machine(path: Path) -> dict[str, str]:
    """Name -> version ("" where not known) from pip freeze lines or bare names; comments and URLs skipped."""
    have: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-") or " @ " in line:
            continue
        name, _, version = line.partition("==")
        have[normalized(name)] = version.strip()
    return have


@dataclass
class Choice:
    carry: list[str] = field(default_factory=list)  # name==version
    replaced: list[str] = field(default_factory=list)  # "name old -> new"
    bounded: list[str] = field(default_factory=list)  # "name==version (the upper bounds, from whom)"
    left: list[str] = field(default_factory=list)  # names left to the machine's unknown version
    expected: list[str] = field(default_factory=list)  # the needed packages the machine has: name[==version]


def target_environment(python: str) -> dict[str, str]:
    """Marker variables of CPython ``python`` on Linux x86-64 (no extras: only plain installs happen)."""
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


def choose(items: list[dict[str, Any]], have: dict[str, str], python: str = "3.12") -> Choice:
    """The module's rule over pip's report ``items``, ``have`` as :func:`read_machine` gives it."""
    environment = target_environment(python)
    versions = {normalized(item["metadata"]["name"]): item["metadata"]["version"] for item in items}
    names = {normalized(item["metadata"]["name"]): item["metadata"]["name"] for item in items}
    bounds: dict[str, list[tuple[str, str]]] = {}  # package -> (upper bound, requirer)
    for item in items:
        for text in item["metadata"].get("requires_dist") or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                bounds.setdefault(normalized(requirement.name), []).extend(
                    (str(spec), normalized(item["metadata"]["name"]))
                    for spec in requirement.specifier
                    if str(spec).startswith(UPPER_BOUNDS)
                )
    candidates = [key for key in versions if not key.startswith("nvidia-") and key not in NEVER_CARRIED]
    carried = {key for key in candidates if key not in have or (have[key] and have[key] != versions[key])}
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
        if have.get(key):
            choice.replaced.append(f"{name} {have[key]} -> {version}")
        elif key in have:
            upper = [f"{spec} from {names[requirer]}" for spec, requirer in bounds[key] if requirer in carried]
            choice.bounded.append(f"{name}=={version} ({', '.join(upper)})")
        choice.carry.append(f"{name}=={version}")
    return choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("machine", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--expected", type=Path, help="write what the install takes from the machine here")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python version (markers)")
    args = parser.parse_args()
    items = json.loads(args.report.read_text(encoding="utf-8"))["install"]
    choice = choose(items, read_machine(args.machine), args.python)
    args.out.write_text("".join(f"{line}\n" for line in choice.carry), encoding="utf-8")
    if args.expected:
        args.expected.write_text("".join(f"{line}\n" for line in choice.expected), encoding="utf-8")
    print(f"   {len(choice.carry)} packages to carry")
    for line in choice.replaced:
        print(f"   the machine's version is replaced: {line}")
    for line in choice.bounded:
        print(f"   carried, the machine's version not known and bounded from above: {line}")
    print(
        f"   left to the machine's own version (not known here; no carried package bounds it from above): "
        f"{len(choice.left)}: {' '.join(sorted(choice.left))}"
    )


if __name__ == "__main__":
    main()
