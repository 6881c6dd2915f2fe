"""`moon-swift eval` through the real command line, on a generic catalog with behaviour pairs."""

import json
from pathlib import Path

from helpers import run_cli, swift_executable, write_generic_catalog


def moon_swift_cli() -> str:
    return str(Path(swift_executable()).with_name("moon-swift"))


def test_eval_compares_models_on_text_photo_and_multimodal_queries(tiny_moon_dir, tmp_path):
    catalog, pairs = write_generic_catalog(tmp_path)
    result = run_cli([moon_swift_cli(), "eval", "--model", str(tiny_moon_dir), "--model", str(tiny_moon_dir),
                      "--products", str(catalog), "--format", "generic", "--pairs", str(pairs),
                      "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "4 products from" in result.stdout and "3 queries" in result.stdout
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    for plot in ("recall_at_k.png", "classification.png"):
        assert (tmp_path / "out" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (metrics,) = report["models"].values()  # the same model twice: one column
    assert metrics["retrieval/image->product/recall@10"] == 1.0  # 4 products: always in the top 10
    assert {"retrieval/text->product/mrr", "retrieval/multimodal->product/mrr", "classification/level2/accuracy",
            "attributes/colour/accuracy"} <= set(metrics)  # fmt: skip
    for kind in ("text", "image", "multimodal"):
        assert f"retrieval/{kind}->product/recall@1" in result.stdout


def test_eval_refuses_pairs_outside_the_catalog(tiny_moon_dir, tmp_path):
    catalog, pairs = write_generic_catalog(tmp_path)
    pairs.write_text(json.dumps({"query_text": "q", "product_id": "missing"}) + "\n")
    result = run_cli([moon_swift_cli(), "eval", "--model", str(tiny_moon_dir), "--products", str(catalog),
                      "--format", "generic", "--pairs", str(pairs)])  # fmt: skip
    assert result.returncode == 2
    assert f"file {pairs}, row 1, field 'product_id': product 'missing' is not in the catalog" in result.stdout


def test_prepare_data_from_a_generic_catalog_with_behaviour_pairs(tmp_path):
    catalog, pairs = write_generic_catalog(tmp_path)
    out = tmp_path / "prepared"
    result = run_cli([moon_swift_cli(), "prepare-data", "--catalog", str(catalog), "--format", "generic",
                      "--pairs", str(pairs), "--out", str(out), "--val-fraction", "0"])  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "read 4 products and 3 behaviour pairs" in result.stdout
    assert "queries text: 1, image: 1, multimodal: 1" in result.stdout
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [row["messages"][0]["content"] for row in rows] == ["blue tee", "<image>", "<image>grey skirt"]
    assert rows[2]["images"] == [str((tmp_path / "img" / "street_skirt.jpg").resolve())]
    check = run_cli([moon_swift_cli(), "check-data", str(out / "train.jsonl")])
    assert check.returncode == 0, check.stdout
