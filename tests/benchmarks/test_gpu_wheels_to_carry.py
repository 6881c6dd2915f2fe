"""benchmarks/gpu_wheels_to_carry.py: which wheels travel to the air-gapped GPU machine, given what it has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_wheels_to_carry.py"
MACHINE_LIST = REPO_ROOT / "benchmarks" / "gpu_machine_packages.txt"


def load() -> ModuleType:
    return load_script(SCRIPT)


def item(name: str, version: str, *requires: str) -> dict:
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


#: a resolution of the shape gpu_wheelhouse.sh gets: ms-swift bounding peft from above, datasets needing pyarrow and
#: pandas from below, a Windows-only upper bound that must not count, the machine's CUDA stack, bounds from the
#: machine's own packages (requests, torch), which its image already satisfies, and the machine's torch given with
#: a local label
RESOLVED = [
    item("ms-swift", "4.6.0", "peft<0.21,>=0.11", "datasets>=3.0", "transformers>=4.33", "numpy<3.0"),
    item("datasets", "4.8.4", "pyarrow>=21.0.0", "pandas", "fsspec[http]<=2026.2.0,>=2023.1.0"),
    item("colorama-user", "1.0", "pywin32>=300,<400; sys_platform == 'win32'", "tqdm>=4"),
    item("peft", "0.20.0"),
    item("pyarrow", "26.0.1"),
    item("pandas", "3.1.1"),
    item("fsspec", "2026.2.0"),
    item("pywin32", "311"),
    item("tqdm", "4.67.1"),
    item("requests", "2.34.2", "urllib3<3,>=1.21.1"),
    item("urllib3", "2.8.0"),
    item("numpy", "2.5.2"),
    item("sentencepiece", "0.2.3"),
    item("torch", "2.11.0", "cuda-bindings<14,>=13.0.3", "nvidia-nccl-cu13==2.28.9"),
    item("cuda-bindings", "13.5.0"),
    item("nvidia-nccl-cu13", "2.28.9"),
    item("Transformers", "5.17.0"),
]
MACHINE = {
    "peft": "",
    "pyarrow": "",
    "pandas": "",
    "fsspec": "",
    "tqdm": "",
    "pywin32": "",
    "numpy": "2.5.2",
    "sentencepiece": "0.2.2",
    "torch": "2.11.0+cu130",
    "transformers": "5.17.0",
    "requests": "",
    "urllib3": "",
    "cuda-bindings": "",
}


def test_carried_are_the_missing_the_changed_and_the_bounded_from_above() -> None:
    choice = load().choose(RESOLVED, MACHINE)
    # the offline install pins only what replaces a known version of the machine's: a name would keep that one
    assert sorted(choice.install) == ["colorama-user", "datasets", "fsspec", "ms-swift", "peft", "sentencepiece==0.2.3"]
    assert sorted(choice.carry) == [
        "colorama-user==1.0",
        "datasets==4.8.4",
        "fsspec==2026.2.0",
        "ms-swift==4.6.0",
        "peft==0.20.0",
        "sentencepiece==0.2.3",
    ]
    assert choice.replaced == ["sentencepiece 0.2.2 -> 0.2.3"]
    # what the stand-in installs in the machine's place: its versions where known (torch too), names where not
    assert sorted(choice.expected) == [
        "Transformers==5.17.0",
        "cuda-bindings",
        "fsspec",
        "numpy==2.5.2",
        "pandas",
        "peft",
        "pyarrow",
        "pywin32",
        "requests",
        "sentencepiece==0.2.2",
        "torch==2.11.0+cu130",
        "tqdm",
        "urllib3",
    ]
    assert choice.bounded == ["peft==0.20.0 (<0.21 from ms-swift)", "fsspec==2026.2.0 (<=2026.2.0 from datasets)"]
    # lower bounds only (pyarrow, tqdm), none at all (pandas), needed only on another platform (pywin32), or upper
    # bounds only from the machine's own packages (urllib3 from requests, cuda-bindings from torch)
    assert sorted(choice.left) == ["cuda-bindings", "pandas", "pyarrow", "pywin32", "requests", "tqdm", "urllib3"]


def test_a_carried_package_bounds_what_it_needs_in_turn() -> None:
    resolved = [
        item("ms-swift", "4.6.0", "peft<0.21"),
        item("peft", "0.20.0", "accelerate<2,>=1.0"),
        item("accelerate", "1.16.0", "psutil"),
        item("psutil", "7.0.0"),
    ]
    choice = load().choose(resolved, {"peft": "", "accelerate": "", "psutil": ""})
    assert choice.carry == ["ms-swift==4.6.0", "peft==0.20.0", "accelerate==1.16.0"]
    assert choice.bounded == ["peft==0.20.0 (<0.21 from ms-swift)", "accelerate==1.16.0 (<2 from peft)"]
    assert choice.left == ["psutil"]


def test_the_checks_own_pins_bound_what_the_machine_has_at_an_unknown_version() -> None:
    resolved = [item("modelscope", "1.40.2", "requests>=2.25"), item("requests", "2.34.2")]
    have = {"modelscope": "", "requests": ""}
    assert load().choose(resolved, have).carry == []  # nothing bounds modelscope: the machine's stays
    choice = load().choose(resolved, have, requirements=["modelscope==1.40.2", "numpy"])
    assert choice.carry == ["modelscope==1.40.2"] and choice.left == ["requests"]
    assert choice.bounded == ["modelscope==1.40.2 (==1.40.2 from (the check))"]


def test_versions_compare_as_versions_without_local_labels() -> None:
    resolved = [item("numpy", "2.5.0"), item("foo", "1.0")]
    assert load().choose(resolved, {"numpy": "2.5", "foo": "1.0.0+local"}).carry == []


def test_machine_list_reads_freeze_lines_bare_names_and_urls(tmp_path: Path) -> None:
    freeze = tmp_path / "freeze.txt"
    freeze.write_text(
        "# comment\nPeft==0.21.2\nsentence_transformers\n-e git+https://x/y#egg=y\n"
        "moon @ file:///src\n\ntorch==2.11.0+cu130  # the CUDA build\n"
    )
    have = {"peft": "0.21.2", "sentence-transformers": "", "moon": "", "torch": "2.11.0+cu130"}
    assert load().read_machine(freeze) == have
    pins = tmp_path / "pins.txt"
    printed = subprocess.run(
        [sys.executable, str(SCRIPT), "pins", str(freeze), str(pins)], check=True, capture_output=True, text=True
    ).stdout
    assert pins.read_text().split() == ["peft==0.21.2", "torch==2.11.0"]  # constraints: no local label
    assert "4 packages, 2 of known version" in printed


def test_machine_list_names_the_file_and_line_of_a_line_it_cannot_read(tmp_path: Path) -> None:
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("peft==0.21.2\nnumpy>=2\n")
    with pytest.raises(SystemExit, match=r"freeze\.txt:2: not a pip freeze line .*'numpy>=2'"):
        load().read_machine(freeze)


def test_the_committed_machine_list_parses_with_its_known_versions() -> None:
    have = load().read_machine(MACHINE_LIST)
    assert have["torch"] == "2.11.0" and have["transformers"] == "5.17.0" and have["peft"] == ""
    assert "pyarrow" in have and "ms-swift" not in have and "deepspeed" not in have


def test_command_line_writes_the_carry_list(tmp_path: Path) -> None:
    report, machine, out = tmp_path / "report.json", tmp_path / "machine.txt", tmp_path / "download.txt"
    expected = tmp_path / "expected.txt"
    report.write_text(json.dumps({"install": RESOLVED}))
    machine.write_text("\n".join(f"{name}=={version}" if version else name for name, version in MACHINE.items()))
    printed = subprocess.run(
        [sys.executable, str(SCRIPT), "choose", str(report), str(machine), str(out), "--expected", str(expected)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "6 packages to carry" in printed and "replaced: sentencepiece 0.2.2 -> 0.2.3" in printed
    assert "7: cuda-bindings pandas pyarrow pywin32 requests tqdm urllib3" in printed
    choice = load().choose(RESOLVED, MACHINE)
    assert sorted(out.read_text().split()) == sorted(choice.carry)
    assert sorted(expected.read_text().split()) == sorted(choice.expected)
