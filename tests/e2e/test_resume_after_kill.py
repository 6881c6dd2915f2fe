"""A rank killed mid-epoch: resuming from the last checkpoint continues exactly as if nothing had happened.

Two processes (gloo, DeepSpeed ZeRO-2) train a tiny guided-MoE MOON with ``moon_infonce``'s negative queue;
one worker gets SIGKILL after checkpoint-4. The resumed run must reproduce the uninterrupted run's losses
and final weights (queue, RNG, data order and optimizer state restored), and a truncated checkpoint file
must be named in one line instead of failing deep inside a loader.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil  # a DeepSpeed dependency
import pytest
import torch
from helpers import FASHION_CATALOG, REPO_ROOT, run_cli, swift_executable
from safetensors.torch import load_file

from moon_swift.apps.tiny_model import TinySpec, make_tiny
from moon_swift.integrations.swift.checkpoint_files import check_checkpoint

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"
# 28 rows / (2 ranks x 2) = 7 steps an epoch: the kill comes mid-epoch, the resumed run goes on into the
# (reshuffled) second epoch; 2 rows have one hard negative, not two, so the ranks' batches differ in size
STEPS, SAVE_EVERY, KILL_AFTER_STEP, CATALOG_LIMIT = 8, 2, 5, 31
# a queue of 30 (steps bring 11 or 12 products, a row may have fewer hard negatives) wraps around at uneven
# points; the default momentum mode fills it from the moving-average key encoder, which must resume too
ENV = {"NPROC_PER_NODE": "2", "MOON_INFONCE_QUEUE_SIZE": "30", "MOON_INFONCE_QUEUE_MAX_AGE": "3"}
# Each rank runs one thread (torchrun's OMP_NUM_THREADS=1), DeepSpeed reduces without overlap and a sum of
# two ranks' gradients is order-free, so a faithful resume is bitwise equal here (as measured). The tolerance
# leaves room for runners whose float32 reductions are not reproducible (more threads: ulps, ~1e-6 after a
# few steps) while staying far below what lost state moves: resuming with the data order lost
# (--ignore_data_skip true) moved the losses by 0.3-1.5%, fresh Adam moments change every weight's next step
# by up to the learning rate, a lost queue changes negatives_per_anchor. Weights are compared absolutely:
# Adam turns a gradient that is zero up to rounding (attention k_proj biases) into a learning-rate-sized step,
# so noise there scales with the learning rate (5e-4), not the weight; 1e-5 is 1/50 of one step.
RTOL, WEIGHTS_ATOL = 1e-5, 1e-5
COMPARED = ("loss", "grad_norm", "learning_rate", "moe_aux_loss", "moon_infonce/negatives_per_anchor",
            "moon_infonce/queue_length", "moon_infonce/positive_similarity")  # fmt: skip


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("moe-model")
    make_tiny(out, seed=0, spec=TinySpec(extra_config={"moe_layers": "all", "num_experts": 4, "moe_top_k": 2}))
    return out


@pytest.fixture(scope="module")
def train_jsonl(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    command = [str(Path(swift_executable()).with_name("moon-swift")), "prepare-data", "--catalog", str(FASHION_CATALOG),
               "--out", str(out), "--limit", str(CATALOG_LIMIT), "--hard-negatives", "2"]  # fmt: skip
    assert run_cli(command).returncode == 0
    return out / "train.jsonl"


def sft_command(model: Path, dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [swift_executable(), "sft", str(RECIPE), "--model", str(model), "--dataset", str(dataset),
            "--output_dir", str(output_dir), "--loss_type", "moon_infonce", "--max_steps", str(STEPS),
            "--save_strategy", "steps", "--save_steps", str(SAVE_EVERY), "--save_total_limit", "10",
            "--logging_steps", "1", "--per_device_train_batch_size", "2", *extra]  # fmt: skip


def logs_by_step(output_dir: Path) -> dict[int, dict]:
    """The training log entries by global step; a step logged twice (before a kill, then resumed) keeps the last."""
    entries = [json.loads(line) for line in (output_dir / "logging.jsonl").read_text().splitlines() if line]
    return {int(e["global_step/max_steps"].split("/")[0]): e for e in entries if "loss" in e}


def last_logged_step(output_dir: Path) -> int:
    """While training runs: the last line may be half written."""
    path, step = output_dir / "logging.jsonl", 0
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "loss" in entry:
            step = int(entry["global_step/max_steps"].split("/")[0])
    return step


@pytest.fixture(scope="module")
def uninterrupted(moe_model, train_jsonl, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    result = run_cli(sft_command(moe_model, train_jsonl, out), env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:]
    logs = logs_by_step(out)
    assert sorted(logs) == list(range(1, STEPS + 1)) and logs[KILL_AFTER_STEP]["epoch"] < 1 < logs[STEPS]["epoch"]
    return out


def worker(launcher: subprocess.Popen, local_rank: int) -> psutil.Process | None:
    """The training process of ``local_rank``: `swift` starts torchrun, torchrun one worker per rank (with
    ``LOCAL_RANK`` in its environment; anything a worker starts inherits it, hence the outermost)."""
    for process in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if process.environ().get("LOCAL_RANK") == str(local_rank) and (
                process.parent().environ().get("LOCAL_RANK") != str(local_rank)
            ):
                return process
        except psutil.Error:
            continue
    return None


def run_and_kill_rank1(command: list[str], output_dir: Path, log: Path) -> int:
    """Run ``command``; SIGKILL rank 1's worker once step ``KILL_AFTER_STEP`` is logged (checkpoint-4 is then
    complete on every rank: step 5's all-reduce needs them all). Returns the launcher's exit status."""
    with log.open("w") as out:
        launcher = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **ENV})  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while launcher.poll() is None and time.monotonic() < deadline:
            if last_logged_step(output_dir) >= KILL_AFTER_STEP:
                victim = worker(launcher, local_rank=1)
                assert victim is not None, "rank 1's worker not found"
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        return launcher.wait(timeout=300)
    finally:
        if launcher.poll() is None:
            for process in psutil.Process(launcher.pid).children(recursive=True):
                process.kill()
            launcher.kill()
            launcher.wait()


def last_complete_checkpoint(output_dir: Path) -> Path:
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True)
    for checkpoint in checkpoints:
        try:
            check_checkpoint(checkpoint)
            return checkpoint
        except ValueError:
            continue
    raise AssertionError(f"no complete checkpoint in {output_dir}")


def test_killed_rank_resumes_exactly_like_the_uninterrupted_run(uninterrupted, moe_model, train_jsonl, tmp_path):
    out = tmp_path / "out"
    command = sft_command(moe_model, train_jsonl, out)
    status = run_and_kill_rank1(command, out, tmp_path / "killed.log")
    killed_log = (tmp_path / "killed.log").read_text()
    assert status != 0 and "Signal 9 (SIGKILL) received" in killed_log, killed_log[-5000:]
    assert max(logs_by_step(out)) < STEPS and not (out / f"checkpoint-{STEPS}").exists(), "the kill came too late"
    checkpoint = last_complete_checkpoint(out)
    resumed_from = int(checkpoint.name.rsplit("-", 1)[1])
    assert resumed_from >= KILL_AFTER_STEP - 1

    result = run_cli(command + ["--resume_from_checkpoint", str(checkpoint)], env=ENV, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:]
    full, resumed = logs_by_step(uninterrupted), logs_by_step(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(resumed_from + 1, STEPS + 1):
        for key in COMPARED:  # queue_length / negatives_per_anchor: the queue came back (else it starts empty)
            assert resumed[step][key] == pytest.approx(full[step][key], rel=RTOL), (step, key)

    a, b = (load_file(d / f"checkpoint-{STEPS}" / "model.safetensors") for d in (uninterrupted, out))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=WEIGHTS_ATOL, msg=lambda m, n=name: f"{n}: {m}")
    for rank in (0, 1):
        queue = f"checkpoint-{STEPS}/moon_infonce_queue_rank{rank}.pt"
        qa, qb = torch.load(uninterrupted / queue), torch.load(out / queue)
        assert (qa["pointer"], qa["filled"]) == (qb["pointer"], qb["filled"])
        assert torch.equal(qa["group_ids"], qb["group_ids"]) and torch.equal(qa["steps"], qb["steps"])
        torch.testing.assert_close(qb["embeddings"], qa["embeddings"], rtol=RTOL, atol=1e-6)
        average = f"checkpoint-{STEPS}/moon_infonce_momentum_rank{rank}.pt"  # the key encoder came back too
        ea, eb = torch.load(uninterrupted / average), torch.load(out / average)
        assert ea["updates"] == eb["updates"] == STEPS
        for x, y in zip(ea["averages"], eb["averages"], strict=True):
            torch.testing.assert_close(y, x, rtol=0, atol=WEIGHTS_ATOL)


def test_truncated_checkpoint_file_is_named_before_resuming(uninterrupted, moe_model, train_jsonl, tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    shutil.copytree(uninterrupted / "checkpoint-4", checkpoint)
    weights = checkpoint / "model.safetensors"
    with weights.open("r+b") as file:
        file.truncate(weights.stat().st_size // 2)
    command = sft_command(moe_model, train_jsonl, tmp_path / "out", "--resume_from_checkpoint", str(checkpoint))
    result = run_cli(command, env={**ENV, "NPROC_PER_NODE": "1"}, timeout=900)
    assert result.returncode != 0
    error = f"MoonInputError: file {weights}: truncated"
    assert error in result.stdout, result.stdout[-5000:]
    before = result.stdout[: result.stdout.index(error)]
    traceback = before[before.rindex("Traceback (most recent call last)") :]
    frames = re.findall(r'File "([^"]+)", line \d+', traceback)  # lines start with "[rank0]: " under torchrun
    assert frames and frames[-1].endswith("moon_swift/integrations/swift/checkpoint_files.py"), traceback
    assert not [frame for frame in frames if "site-packages/swift/trainers" in frame or "transformers/" in frame]
    internals = ("deepspeed/runtime", "site-packages/safetensors", "SafetensorError", "torch/serialization")
    assert not [name for name in internals if name in result.stdout]
