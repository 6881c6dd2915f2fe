"""The momentum queue through the real `swift sft`: keys from the moving average, the average in every
checkpoint and restored on resume, two processes under ZeRO-2 and ZeRO-3, the collapse monitors and drift
probe in the logs, and the option combinations that cannot work stopping at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import FASHION_CATALOG, REPO_ROOT, run_cli, swift_executable

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"
#: 2 rows x (positive + 2 hard negatives) = 6 products per step and process; the queue starts at step 1
MOMENTUM = {"MOON_INFONCE_QUEUE_SIZE": "48", "MOON_INFONCE_QUEUE_MAX_AGE": "100", "MOON_INFONCE_QUEUE_START": "1",
            "MOON_INFONCE_QUEUE_MODE": "momentum", "MOON_INFONCE_MOMENTUM": "0.9"}  # fmt: skip
MONITORS = (
    "product_mean_cosine",
    "embedding_std",
    "hardest_batch_negative_similarity",
    "margin",
    "positive_similarity",
)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    command = [str(Path(swift_executable()).with_name("moon-swift")), "prepare-data", "--catalog", str(FASHION_CATALOG),
               "--out", str(out), "--limit", "80", "--hard-negatives", "2"]  # fmt: skip
    assert run_cli(command).returncode == 0
    return out / "train.jsonl"


def sft(model, dataset, output_dir, *extra, env=None, check=True):
    args = [swift_executable(), "sft", str(RECIPE), "--model", str(model), "--dataset", str(dataset),
            "--output_dir", str(output_dir), "--loss_type", "moon_infonce", "--max_steps", "4",
            "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "5", "--logging_steps", "1",
            "--per_device_train_batch_size", "2", *extra]  # fmt: skip
    result = run_cli(args, env={**MOMENTUM, **(env or {})}, timeout=900)
    if not check:
        return result, []
    assert result.returncode == 0, result.stdout[-5000:]
    logs = [json.loads(line) for line in (Path(output_dir) / "logging.jsonl").read_text().splitlines()]
    return result, [entry for entry in logs if "loss" in entry]


def last_checkpoint_file(run: Path, name: str) -> dict:
    return torch.load(run / "checkpoint-4" / name)


def test_the_momentum_queue_is_checkpointed_and_resumes_exactly(tiny_moon_dir, rows, tmp_path):
    result, full = sft(tiny_moon_dir, rows, tmp_path / "full")
    assert "queue momentum of 48 entries, 6 products per optimizer step, max age 100: 48 usable" in result.stdout
    assert [e["moon_infonce/queue_in_use"] for e in full] == [0.0, 0.0, 1.0, 1.0]  # keys from step 1, queued at 2
    assert [e["moon_infonce/queue_length"] for e in full] == [0.0, 6.0, 12.0, 18.0]  # the warm-up queues nothing
    for key in MONITORS:
        assert all(f"moon_infonce/{key}" in e for e in full), key
    assert "moon_infonce/hardest_queue_negative_similarity" in full[-1]
    assert [("moon_infonce/drift_cosine" in e) for e in full] == [False, True, True, True]
    for step in (2, 4):
        saved = torch.load(tmp_path / "full" / f"checkpoint-{step}" / "moon_infonce_momentum_rank0.pt")
        assert saved["updates"] == step - 1  # built at step 1, moved after each optimizer step since

    result, resumed = sft(tiny_moon_dir, rows, tmp_path / "resumed", "--resume_from_checkpoint",
                          str(tmp_path / "full" / "checkpoint-2"))  # fmt: skip
    assert "momentum encoder restored from" in result.stdout
    assert [e["loss"] for e in resumed][-2:] == pytest.approx([e["loss"] for e in full][-2:], rel=1e-5)
    a, b = (last_checkpoint_file(tmp_path / run, "moon_infonce_momentum_rank0.pt") for run in ("full", "resumed"))
    assert a["updates"] == b["updates"] == 3
    for x, y in zip(a["averages"], b["averages"], strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)  # a fresh average from the resumed weights is ~1e-4 off
    qa, qb = (last_checkpoint_file(tmp_path / run, "moon_infonce_queue_rank0.pt") for run in ("full", "resumed"))
    assert qa["mode"] == qb["mode"] == "momentum"
    torch.testing.assert_close(qa["embeddings"], qb["embeddings"], atol=1e-5, rtol=0)


def test_two_processes_share_keys_and_keep_one_average_each(tiny_moon_dir, rows, tmp_path):
    _, logs = sft(tiny_moon_dir, rows, tmp_path / "out", env={"NPROC_PER_NODE": "2"})
    # 2 ranks x 6 products: every rank queues the global batch's keys
    assert [e["moon_infonce/queue_length"] for e in logs] == [0.0, 12.0, 24.0, 36.0]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)
    averages = [torch.load(tmp_path / "out" / "checkpoint-4" / f"moon_infonce_momentum_rank{r}.pt") for r in (0, 1)]
    for x, y in zip(averages[0]["averages"], averages[1]["averages"], strict=True):
        torch.testing.assert_close(x, y)  # ZeRO-2: replicated weights, so replicated averages


def test_under_zero3_the_keys_and_the_training_are_those_of_zero2(tiny_moon_dir, rows, tmp_path):
    # ZeRO-3 averages each rank's partition and swaps it in for the key forward; the small parameters it keeps
    # gathered between steps (biases, norms: under its persistence threshold) must be swapped as well, and the
    # live values be back for the trained forward. Same model, data and process count: keys, losses and weights
    # as under ZeRO-2's replicated average.
    runs = {}
    for zero in ("zero2", "zero3"):
        _, runs[zero] = sft(tiny_moon_dir, rows, tmp_path / zero, "--deepspeed", zero, env={"NPROC_PER_NODE": "2"})
    assert [e["moon_infonce/queue_in_use"] for e in runs["zero3"]] == [0.0, 0.0, 1.0, 1.0]
    for key in ("loss", "grad_norm", "moon_infonce/hardest_queue_negative_similarity"):
        logged = {zero: [e[key] for e in logs if key in e] for zero, logs in runs.items()}
        assert logged["zero3"] and logged["zero3"] == pytest.approx(logged["zero2"], rel=1e-4), (key, logged)
    for rank in (0, 1):
        queues = [torch.load(tmp_path / zero / "checkpoint-4" / f"moon_infonce_queue_rank{rank}.pt") for zero in runs]
        torch.testing.assert_close(queues[1]["embeddings"], queues[0]["embeddings"], atol=1e-5, rtol=0)
    shards = [torch.load(tmp_path / "zero3" / "checkpoint-4" / f"moon_infonce_momentum_rank{r}.pt") for r in (0, 1)]
    replicated = torch.load(tmp_path / "zero2" / "checkpoint-4" / "moon_infonce_momentum_rank0.pt")
    assert shards[0]["names"] == replicated["names"] and shards[0]["updates"] == replicated["updates"] == 3
    for i, whole in enumerate(replicated["averages"]):  # each rank holds its padded slice of the flat average
        joined = torch.cat([shard["averages"][i] for shard in shards])[: whole.numel()]
        torch.testing.assert_close(joined, whole.flatten(), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("extra", "env", "named"),
    [
        (("--fp16", "true"), {}, ("MOON_INFONCE_QUEUE_MODE=momentum", "--fp16")),
        ((), {"MOON_INFONCE_QUEUE_MAX_AGE": "4"}, ("MOON_INFONCE_QUEUE_SIZE=48", "MOON_INFONCE_QUEUE_MAX_AGE=4")),
    ],
    ids=["momentum-fp16", "queue-longer-than-max-age-fills"],
)
def test_combinations_that_cannot_work_stop_at_start(tiny_moon_dir, rows, tmp_path, extra, env, named):
    result, _ = sft(tiny_moon_dir, rows, tmp_path / "out", *extra, env=env, check=False)
    assert result.returncode != 0
    assert "MoonInputError" in result.stdout and all(name in result.stdout for name in named), result.stdout[-3000:]
    assert not (tmp_path / "out" / "checkpoint-2").exists()
