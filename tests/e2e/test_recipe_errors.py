"""A recipe run against a missing dataset or model stops with a message naming the path."""

import pytest
from helpers import REPO_ROOT, run_cli, swift_executable

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"


@pytest.mark.parametrize(
    "override, message",
    [
        ({"--dataset": "/no/such/train.jsonl"}, "The local path does not exist, dataset_id: `/no/such/train.jsonl`"),
        ({"--model": "/no/such/model"}, "path: '/no/such/model' not found"),
    ],
)
def test_missing_inputs_are_named(tiny_moon_dir, tmp_path, override, message):
    args = {"--model": str(tiny_moon_dir), "--dataset": str(tmp_path / "x.jsonl"), **override}
    (tmp_path / "x.jsonl").write_text("")
    command = [swift_executable(), "sft", str(RECIPE), "--output_dir", str(tmp_path / "out")]
    result = run_cli(command + [part for pair in args.items() for part in pair])
    assert result.returncode != 0 and message in result.stdout
