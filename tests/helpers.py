"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import os
import shutil
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


def write_generic_catalog(root: Path) -> tuple[Path, Path]:
    """4 real photos as a generic JSONL catalog (2 categories, 2 colours) + 2 behaviour pairs."""
    (root / "img").mkdir()
    products = []
    for i, name in enumerate(["10002.jpg", "10005.jpg", "10008.jpg", "10011.jpg"]):
        shutil.copy(FASHION_CATALOG / "images" / name, root / "img" / name)
        products.append({"product_id": f"P{i}", "title": f"product {i}", "images": [f"img/{name}"],
                         "category_path": ["Apparel", "Skirts" if i % 2 else "Tshirts"],
                         "attributes": {"colour": "Blue" if i < 2 else "Grey"}})  # fmt: skip
    catalog = root / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(p) + "\n" for p in products))
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"query_text": "blue tee", "product_id": "P0"}) + "\n"
        + json.dumps({"query_image": "img/10005.jpg", "product_id": "P1"}) + "\n"
    )  # fmt: skip
    return catalog, pairs
