"""`swift sft --loss_type moon_infonce` end to end: hard negatives, queue checkpoint/resume, two processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import FASHION_CATALOG, REPO_ROOT, run_cli, swift_executable

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"
QUEUE_ENV = {"MOON_INFONCE_QUEUE_SIZE": "48", "MOON_INFONCE_QUEUE_MAX_AGE": "100"}


@pytest.fixture(scope="module")
def data_with_negatives(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    command = [str(Path(swift_executable()).with_name("moon-swift")), "prepare-data", "--catalog", str(FASHION_CATALOG),
               "--out", str(out), "--limit", "80", "--hard-negatives", "2"]  # fmt: skip
    result = run_cli(command)
    assert result.returncode == 0 and "hard negatives (same category" in result.stdout, result.stdout
    return out / "train.jsonl"


def candidates_per_anchor(logs, anchors):
    """Negatives per anchor plus the false negatives that were masked away (per anchor)."""
    return [e["moon_infonce/negatives_per_anchor"] + e["moon_infonce/false_negatives_masked"] / anchors for e in logs]


def sft(model, dataset, output_dir, *extra, env=None):
    args = [swift_executable(), "sft", str(RECIPE), "--model", str(model), "--dataset", str(dataset),
            "--output_dir", str(output_dir), "--loss_type", "moon_infonce", "--max_steps", "4",
            "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "5", "--logging_steps", "1",
            "--per_device_train_batch_size", "2", *extra]  # fmt: skip
    result = run_cli(args, env={**QUEUE_ENV, **(env or {})}, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:]
    logs = [json.loads(line) for line in (Path(output_dir) / "logging.jsonl").read_text().splitlines()]
    return result, [entry for entry in logs if "loss" in entry]


def test_queue_grows_with_hard_negatives_and_is_saved(tiny_moon_dir, data_with_negatives, tmp_path):
    _, logs = sft(tiny_moon_dir, data_with_negatives, tmp_path / "out")
    # batch of 2 rows x (positive + 2 hard negatives) = 6 products -> 5 negatives, then +6 queued per step;
    # candidates of the positive's own product (a hard negative seen again) are masked, not counted
    assert candidates_per_anchor(logs, anchors=2) == [5.0, 11.0, 17.0, 23.0]
    assert all(entry["moon_infonce/queue_length"] >= 6 for entry in logs)
    for step in (2, 4):
        state = torch.load(tmp_path / "out" / f"checkpoint-{step}" / "moon_infonce_queue_rank0.pt")
        assert state["filled"] == 6 * step


def test_resumed_run_sees_the_same_queue(tiny_moon_dir, data_with_negatives, tmp_path):
    _, full = sft(tiny_moon_dir, data_with_negatives, tmp_path / "full")
    _, resumed = sft(tiny_moon_dir, data_with_negatives, tmp_path / "resumed", "--resume_from_checkpoint",
                     str(tmp_path / "full" / "checkpoint-2"))  # fmt: skip
    assert candidates_per_anchor(resumed, anchors=2)[-2:] == [17.0, 23.0]  # the queue was restored
    assert [e["loss"] for e in resumed][-2:] == pytest.approx([e["loss"] for e in full][-2:], abs=1e-3)
    a = torch.load(tmp_path / "full" / "checkpoint-4" / "moon_infonce_queue_rank0.pt")
    b = torch.load(tmp_path / "resumed" / "checkpoint-4" / "moon_infonce_queue_rank0.pt")
    assert a["filled"] == b["filled"] and a["pointer"] == b["pointer"]
    torch.testing.assert_close(a["embeddings"], b["embeddings"], atol=1e-5, rtol=0)
    assert torch.equal(a["group_ids"], b["group_ids"])


def test_two_processes_use_each_others_embeddings(tiny_moon_dir, data_with_negatives, tmp_path):
    _, logs = sft(tiny_moon_dir, data_with_negatives, tmp_path / "out", env={"NPROC_PER_NODE": "2"})
    # 2 ranks x 6 products = 12 per step -> 11 in-batch/spatial negatives, then +12 queued per step
    assert candidates_per_anchor(logs, anchors=4) == [11.0, 23.0, 35.0, 47.0]
    assert (tmp_path / "out" / "checkpoint-4" / "moon_infonce_queue_rank1.pt").is_file()


def test_evaluation_steps_leave_the_training_queue_alone(tiny_moon_dir, data_with_negatives, tmp_path):
    _, logs = sft(tiny_moon_dir, data_with_negatives, tmp_path / "out", "--split_dataset_ratio", "0.2",
                  "--eval_strategy", "steps", "--eval_steps", "2")  # fmt: skip
    entries = [json.loads(line) for line in (tmp_path / "out" / "logging.jsonl").read_text().splitlines()]
    assert [e["global_step/max_steps"] for e in entries if "eval_loss" in e] == ["2/4", "4/4"]
    assert candidates_per_anchor(logs, anchors=2) == [5.0, 11.0, 17.0, 23.0]  # no validation rows queued
    state = torch.load(tmp_path / "out" / "checkpoint-4" / "moon_infonce_queue_rank0.pt")
    assert state["filled"] == 6 * 4


def test_matryoshka_dimensions_train_with_group_ids_and_the_queue(tiny_moon_dir, data_with_negatives, tmp_path):
    _, logs = sft(tiny_moon_dir, data_with_negatives, tmp_path / "out", "--mrl_dims", '{"64": 1.0, "16": 0.5}')
    assert candidates_per_anchor(logs, anchors=2) == [5.0, 11.0, 17.0, 23.0]  # as without --mrl_dims
    state = torch.load(tmp_path / "out" / "checkpoint-4" / "moon_infonce_queue_rank0.pt")
    assert state["filled"] == 6 * 4 and state["embeddings"].shape[1] == 64  # one queue of full vectors
    assert (state["group_ids"] >= 0).all()  # product ids reached the loss (rows without ids get negative ones)
