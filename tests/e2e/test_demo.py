"""`moon-swift demo` on a slice of the catalog: every variant trains through `swift sft`, the table
comes from the run, and an interrupted rerun retrains only what had not finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FASHION_CATALOG, run_cli, swift_executable

pytestmark = pytest.mark.slow


def demo(workdir: Path):
    moon_swift = str(Path(swift_executable()).with_name("moon-swift"))
    return run_cli([moon_swift, "demo", "--workdir", str(workdir), "--catalog", str(FASHION_CATALOG),
                    "--limit", "120", "--epochs", "1"])  # fmt: skip


def test_demo_compares_variants_and_resumes_after_an_interruption(tmp_path):
    workdir = tmp_path / "demo"
    first = demo(workdir)
    assert first.returncode == 0, first.stdout[-4000:]
    results = json.loads((workdir / "results.json").read_text())
    assert list(results["metrics"]) == ["untrained", "MOON", "dense FFN", "no crops", "plain infonce", "+ time queue"]
    table = first.stdout[first.stdout.index("model  ") :]
    for name, metrics in results["metrics"].items():  # the printed table is the run's own figures
        assert f"{name:<15}{metrics['retrieval/title->product/recall@1']:>11.3f}" in table
    assert (workdir / "recall_at_k.png").is_file() and (workdir / "classification.png").is_file()
    assert results["held_out_products"] > 0 and "detected" in first.stdout

    # Interrupted during the last variant: its done.json (written last) is missing.
    (workdir / "train" / "plain_infonce" / "done.json").unlink()
    second = demo(workdir)
    assert second.returncode == 0, second.stdout[-4000:]
    assert second.stdout.count("finished in an earlier run, reused") == 4
    assert "training plain infonce" in second.stdout and " images: 0 detected, " in second.stdout
