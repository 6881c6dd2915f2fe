"""`moon-swift demo` on a slice of the catalog: every variant trains through `swift sft` on the study's query
mix, the table (with baselines, and with seeds their spread) comes from the run, and an interrupted rerun
retrains only what had not finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FASHION_CATALOG, run_cli, swift_executable

from moon_swift.eval.seeds import Spread

pytestmark = pytest.mark.slow


def demo(workdir: Path, *options: str):
    moon_swift = str(Path(swift_executable()).with_name("moon-swift"))
    return run_cli([moon_swift, "demo", "--workdir", str(workdir), "--catalog", str(FASHION_CATALOG),
                    "--limit", "120", "--max-steps", "2", *options])  # fmt: skip


def table_of(stdout: str) -> str:
    return stdout[stdout.index("held-out products, seeds") :]


def test_demo_compares_variants_with_baselines_over_seeds_and_resumes_after_an_interruption(tmp_path):
    workdir = tmp_path / "demo"
    first = demo(workdir)
    assert first.returncode == 0, first.stdout[-4000:]
    results = json.loads((workdir / "results.json").read_text())
    assert list(results["summary"]) == ["MOON", "dense FFN", "no crops", "plain infonce", "no temporal"]
    assert set(results["held_out_queries"]) == {"photo", "title", "short text", "multimodal", "product",
                                                "street photo"}  # fmt: skip
    table = table_of(first.stdout)
    photo = results["summary"]["no crops"]["retrieval/photo->product/recall@10"]
    assert f"{photo['mean']:.3f}" in table.splitlines()[3] and "one seed: no spread" in table
    thumbnail = results["baselines"]["thumbnail match"]["retrieval/photo->product/recall@10"]
    assert f"{thumbnail:.3f}" in table.splitlines()[3]  # photo R@10 is the table's second row
    assert (workdir / "recall_at_k.png").is_file() and (workdir / "photo_queries.png").is_file()
    assert " detected, " in first.stdout and "photo: " in first.stdout

    # Interrupted in seed 0's "no crops": its done.json (written last) is missing. A second seed is added.
    (workdir / "train" / "seed0" / "no_crops" / "done.json").unlink()
    second = demo(workdir, "--seeds", "2", "--variants", "MOON", "no crops")
    assert second.returncode == 0, second.stdout[-4000:]
    assert second.stdout.count("finished in an earlier run, reused") == 1  # seed 0's MOON
    assert "seed 0, training no crops" in second.stdout and "seed 1, training MOON" in second.stdout
    assert " 0 detected, " in second.stdout  # the box store answered for every image
    results = json.loads((workdir / "results.json").read_text())
    cell = Spread(**{k: tuple(v) if k == "values" else v for k, v in
                     results["summary"]["MOON"]["retrieval/title->product/recall@1"].items()})  # fmt: skip
    assert len(cell.values) == 2 and cell.cell() in table_of(second.stdout)
    assert results["seeds"] == [0, 1] and set(results["separated_from_moon"]) == {"no crops"}
