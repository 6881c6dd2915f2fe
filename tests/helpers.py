"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOON_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
FASHION_CATALOG = SHARED_DATA / "fashion-catalog-dev"
STREET_PHOTOS = SHARED_DATA / "street-photos"


def swift_executable() -> str:
    return str(Path(sys.executable).with_name("swift"))


def run_cli(args: list[str], *, cwd: Path = REPO_ROOT, env: dict | None = None, timeout: float = 900):
    """Run a console command of this environment; returns the CompletedProcess (output merged)."""
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run(
        args, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
