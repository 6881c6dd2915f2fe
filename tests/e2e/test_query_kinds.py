"""Every query kind the project writes trains through the real `swift sft` (DeepSpeed ZeRO-2, 1 and 2
processes): catalog pairs (title, photo, category and their mix) and behaviour pairs with a text, a photo,
and a photo + text (multimodal) query. Photos are real: catalog products composited onto street photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import FASHION_CATALOG, REPO_ROOT, run_cli, swift_executable

from moon_swift.data import read_fashion_catalog

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"
PRODUCTS = "40"


def moon_swift(*args: str):
    result = run_cli([str(Path(swift_executable()).with_name("moon-swift")), *args])
    assert result.returncode == 0, result.stdout[-3000:]
    return result


@pytest.fixture(scope="module")
def behaviour_pairs(tmp_path_factory) -> dict[str, Path]:
    """Pairs files of one query kind each, and one of all three."""
    root = tmp_path_factory.mktemp("queries")
    moon_swift("photo-queries", "--catalog", str(FASHION_CATALOG), "--out", str(root), "--limit", PRODUCTS)
    photos = [json.loads(line) for line in (root / "pairs.jsonl").read_text().splitlines()]
    titles = {r.product_id: r.title for r in read_fashion_catalog(FASHION_CATALOG, limit=int(PRODUCTS))}
    texts = [{"query_text": titles[p["product_id"]], "product_id": p["product_id"]} for p in photos[::2]]
    kinds = {"text": texts, "image": [p for p in photos if "query_text" not in p],
             "multimodal": [p for p in photos if "query_text" in p]}  # fmt: skip
    kinds["text,image,multimodal"] = [pair for kind in ("text", "image", "multimodal") for pair in kinds[kind][::2]]
    files = {}
    for kind, pairs in kinds.items():
        files[kind] = root / f"pairs_{kind.replace(',', '_')}.jsonl"
        files[kind].write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return files


def prepare(out: Path, *args: str) -> Path:
    result = moon_swift("prepare-data", "--catalog", str(FASHION_CATALOG), "--limit", PRODUCTS, "--out", str(out),
                        *args)  # fmt: skip
    assert "(swift embedding format)" in result.stdout
    return out / "train.jsonl"


def anchors_of(dataset: Path, count: int = 3) -> list[dict]:
    """The first rows' queries as requests (whatever their kind), to see the model's embedding of them move."""
    rows = [json.loads(line) for line in dataset.read_text().splitlines()[:count]]
    return [{"messages": row["messages"], **({"images": row["images"]} if row.get("images") else {})} for row in rows]


def embed(model: Path, requests: list[dict]) -> np.ndarray:
    from moon_swift.eval.encode import ProductEncoder

    return ProductEncoder(str(model)).encode(requests, progress=False)


def train(model: Path, dataset: Path, out: Path, processes: int) -> list[float]:
    args = [swift_executable(), "sft", str(RECIPE), "--model", str(model), "--dataset", str(dataset),
            "--output_dir", str(out), "--loss_type", "moon_infonce", "--max_steps", "2", "--save_steps", "2",
            "--logging_steps", "1", "--per_device_train_batch_size", "4"]  # fmt: skip
    result = run_cli(args, env={"NPROC_PER_NODE": str(processes)})
    assert result.returncode == 0, result.stdout[-5000:]
    if processes > 1:
        assert f"--nproc_per_node {processes}" in result.stdout
    logs = [json.loads(line) for line in (out / "logging.jsonl").read_text().splitlines()]
    return [entry["loss"] for entry in logs if "loss" in entry]


def check_trains(tiny_moon_dir: Path, dataset: Path, tmp_path: Path, processes: int) -> None:
    requests = anchors_of(dataset)
    before = embed(tiny_moon_dir, requests)
    losses = train(tiny_moon_dir, dataset, tmp_path / "out", processes)
    assert len(losses) == 2 and all(np.isfinite(losses)), losses
    after = embed(tmp_path / "out" / "checkpoint-2", requests)
    assert np.abs(after - before).max() > 1e-4, "training did not change the query embeddings"


@pytest.mark.parametrize("kinds", ["title", "image", "category"])
def test_catalog_pairs_of_each_kind_train(tiny_moon_dir, tmp_path, kinds):
    check_trains(tiny_moon_dir, prepare(tmp_path / "data", "--catalog-pairs", kinds), tmp_path, processes=1)


def test_mixed_catalog_pairs_train_with_two_processes(tiny_moon_dir, tmp_path):
    dataset = prepare(tmp_path / "data", "--catalog-pairs", "title,image,category")
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert {bool(row.get("images")) for row in rows} == {True, False}  # photo and text anchors in one file
    check_trains(tiny_moon_dir, dataset, tmp_path, processes=2)


@pytest.mark.parametrize("kind", ["text", "image", "multimodal"])
def test_behaviour_pairs_of_each_query_kind_train(tiny_moon_dir, behaviour_pairs, tmp_path, kind):
    dataset = prepare(tmp_path / "data", "--pairs", str(behaviour_pairs[kind]))
    first = json.loads(dataset.read_text().splitlines()[0])["messages"][0]["content"]
    assert first.startswith("<image>") == (kind != "text") and (first != "<image>") == (kind != "image")
    check_trains(tiny_moon_dir, dataset, tmp_path, processes=1)


def test_mixed_behaviour_pairs_train_with_two_processes(tiny_moon_dir, behaviour_pairs, tmp_path):
    dataset = prepare(tmp_path / "data", "--pairs", str(behaviour_pairs["text,image,multimodal"]))
    check_trains(tiny_moon_dir, dataset, tmp_path, processes=2)
