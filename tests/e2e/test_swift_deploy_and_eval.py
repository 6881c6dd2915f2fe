"""`swift deploy` serving MOON embeddings to an OpenAI-style client, and `swift eval` with the moon
benchmarks, through the real swift CLI on loopback. Slow (each starts a swift server): CI runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import FASHION_CATALOG, run_cli, swift_deploy, swift_executable

from moon_swift.data import read_fashion_catalog, write_records
from moon_swift.eval.encode import ProductEncoder, image_query_request, product_request, query_request
from moon_swift.eval.report import flatten
from moon_swift.eval.run import evaluate_model
from moon_swift.eval.service import ServiceEncoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_tiny(tiny_moon_dir, tmp_path_factory):
    """`swift deploy --model_type moon` on a free loopback port; yields the OpenAI base URL."""
    with swift_deploy(tiny_moon_dir, tmp_path_factory.mktemp("deploy") / "deploy.log") as url:
        yield url


@pytest.fixture(scope="module")
def products_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "products.jsonl"
    write_records(read_fashion_catalog(FASHION_CATALOG, limit=24), path)
    return path


def test_openai_client_gets_the_same_embeddings_as_local_encoding(served_tiny, tiny_moon_dir):
    """Text, image-only and image+text products (with category / attribute spans): mean pooled,
    normalised, equal to swift's own template + model run in this process."""
    records = read_fashion_catalog(FASHION_CATALOG, limit=2)
    requests = [query_request("navy blue cotton t-shirt"), image_query_request(records[0].images[0]),
                product_request(records[0]), product_request(records[1], with_title=False)]  # fmt: skip
    served = ServiceEncoder(served_tiny, model="moon-tiny").encode(requests, progress=False)
    local = ProductEncoder(str(tiny_moon_dir)).encode(requests, progress=False)
    assert served.shape == local.shape == (4, local.shape[1])
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served, local, atol=1e-5)


def test_swift_eval_reports_what_moon_swift_eval_computes(tiny_moon_dir, products_file, tmp_path):
    benchmarks = ["moon_retrieval", "moon_classification", "moon_attributes"]
    dataset_args = {name: {"dataset_id": str(products_file)} for name in benchmarks}
    result = run_cli([swift_executable(), "eval", "--model", str(tiny_moon_dir), "--model_type", "moon",
                      "--task_type", "embedding", "--infer_backend", "transformers", "--eval_dataset", *benchmarks,
                      "--eval_dataset_args", json.dumps(dataset_args), "--eval_output_dir", str(tmp_path / "out")],
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    (result_file,) = tmp_path.glob("result/*/eval_result.jsonl")  # swift's result_jsonl, under the working dir
    (report,) = [json.loads(line) for line in result_file.read_text().splitlines()]
    reported = {}
    for benchmark in report["Native"]:
        group = benchmark["dataset_name"].removeprefix("moon_")
        for metric in benchmark["metrics"]:
            name = metric["name"].removeprefix("mean_")
            for subset in metric["categories"][0]["subsets"]:
                key = f"{group}/{subset['name']}/{name}"
                reported[key] = subset["score"]
    from moon_swift.data import read_records

    expected = flatten(evaluate_model(str(tiny_moon_dir), read_records(products_file)))
    assert set(expected) == set(reported), set(expected) ^ set(reported)
    for key, value in expected.items():
        assert reported[key] == pytest.approx(value, abs=1e-4), key  # evalscope rounds to 4 places


def test_swift_eval_names_a_missing_products_file(served_tiny, tmp_path):
    missing = tmp_path / "nope.jsonl"
    result = run_cli([swift_executable(), "eval", "--eval_url", served_tiny, "--model", "moon-tiny",
                      "--eval_dataset", "moon_retrieval", "--eval_output_dir", str(tmp_path / "out"),
                      "--eval_dataset_args", json.dumps({"moon_retrieval": {"dataset_id": str(missing)}})],
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert f"file {missing}: products file does not exist" in result.stdout
