"""check_checkpoint on a checkpoint laid out as a two-rank DeepSpeed ZeRO-2 run saves it, written by the real
writers (safetensors, torch.save, TrainerState), then cut short file by file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerState

from moon_swift.core.errors import MoonInputError
from moon_swift.integrations.swift.checkpoint_files import check_checkpoint
from moon_swift.losses.moon_infonce import QUEUE_FILE
from moon_swift.losses.negative_queue import NegativeQueue

SHARDS = ["global_step4/mp_rank_00_model_states.pt"] + [
    f"global_step4/zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)
]


@pytest.fixture
def checkpoint(tiny_moon_dir, tmp_path) -> Path:
    root = tmp_path / "checkpoint-4"
    root.mkdir()
    shutil.copy(tiny_moon_dir / "model.safetensors", root)
    shutil.copy(tiny_moon_dir / "config.json", root)
    TrainerState(global_step=4, max_steps=8).save_to_json(str(root / "trainer_state.json"))
    torch.save({"step": 4}, root / "scheduler.pt")
    (root / "global_step4").mkdir()
    (root / "latest").write_text("global_step4")
    weights = load_file(root / "model.safetensors")
    torch.save({"module": weights}, root / SHARDS[0])
    for rank in (0, 1):
        torch.save({"cpu_rng_state": torch.get_rng_state(), "python": (3, tuple(range(600)), None)},
                   root / f"rng_state_{rank}.pth")  # fmt: skip
        queue = NegativeQueue(8)
        queue.enqueue(torch.randn(5, 64), torch.arange(5), step=4)
        torch.save(queue.state_dict(), root / QUEUE_FILE.format(rank=rank))
        torch.save({"optimizer_state_dict": {"exp_avg": torch.randn(1000)}}, root / SHARDS[1 + rank])
    return root


def truncate(path: Path, size: int) -> None:
    with path.open("r+b") as file:
        file.truncate(size)


def test_a_complete_checkpoint_passes(checkpoint):
    checked = {p.relative_to(checkpoint).as_posix() for p in check_checkpoint(checkpoint)}
    assert {"model.safetensors", "trainer_state.json", "rng_state_1.pth", "moon_infonce_queue_rank1.pt", *SHARDS} <= (
        checked
    )


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -1], ids=["empty", "in-prefix", "in-header", "half", "last-byte"])
def test_truncated_safetensors_is_named(checkpoint, keep):
    path = checkpoint / "model.safetensors"
    size = path.stat().st_size
    truncate(path, int(size * keep) if isinstance(keep, float) else size + keep if keep < 0 else keep)
    with pytest.raises(MoonInputError, match="truncated") as caught:
        check_checkpoint(checkpoint)
    assert caught.value.file == str(path) and str(caught.value).startswith(f"file {path}: ")
    with pytest.raises(Exception, match="header|not fully covered"):  # what safetensors would have said
        load_file(path)


def test_bytes_after_the_last_tensor_are_named(checkpoint):
    path = checkpoint / "model.safetensors"
    with path.open("ab") as file:
        file.write(b"\0" * 16)
    with pytest.raises(MoonInputError, match="16 bytes after the last tensor") as caught:
        check_checkpoint(checkpoint)
    assert caught.value.file == str(path)


@pytest.mark.parametrize(
    "name", ["rng_state_1.pth", "moon_infonce_queue_rank0.pt", "scheduler.pt", *SHARDS], ids=lambda n: n.split("/")[-1]
)
@pytest.mark.parametrize("keep", [0, 3, 0.5, -1], ids=["empty", "3-bytes", "half", "last-byte"])
def test_truncated_torch_file_is_named(checkpoint, name, keep):
    path = checkpoint / name
    size = path.stat().st_size
    truncate(path, int(size * keep) if isinstance(keep, float) else size + keep if keep < 0 else keep)
    with pytest.raises(MoonInputError) as caught:
        check_checkpoint(checkpoint)
    assert caught.value.file == str(path)
    assert "truncated" in caught.value.reason or "not a torch.save archive" in caught.value.reason
    with pytest.raises(Exception) as loading:  # what torch would have said: a message naming no file
        torch.load(path, weights_only=False)
    assert str(path) not in str(loading.value)


def test_truncated_trainer_state_is_named(checkpoint):
    path = checkpoint / "trainer_state.json"
    truncate(path, path.stat().st_size // 2)
    with pytest.raises(MoonInputError, match="not valid JSON") as caught:
        check_checkpoint(checkpoint)
    assert caught.value.file == str(path)


def test_missing_pieces_are_named(checkpoint):
    (checkpoint / "rng_state_1.pth").unlink()
    with pytest.raises(MoonInputError, match=r"rng_state file of rank\(s\) \[1\] is missing") as caught:
        check_checkpoint(checkpoint)
    assert caught.value.file == str(checkpoint)

    shutil.rmtree(checkpoint / "global_step4")
    with pytest.raises(MoonInputError, match="names DeepSpeed checkpoint folder 'global_step4', which is missing"):
        check_checkpoint(checkpoint)

    (checkpoint / "trainer_state.json").unlink()
    with pytest.raises(MoonInputError, match="no trainer_state.json: not a complete checkpoint"):
        check_checkpoint(checkpoint)
    with pytest.raises(MoonInputError, match="not a directory"):
        check_checkpoint(checkpoint / "nowhere")


def test_legacy_torch_files_and_other_files_are_accepted(checkpoint):
    torch.save({"step": 4}, checkpoint / "scheduler.pt", _use_new_zipfile_serialization=False)
    (checkpoint / "zero_to_fp32.py").write_text("# not read on resume\n")
    (checkpoint / "moon_embedding.json").write_text(json.dumps({"image_views": "original"}))
    check_checkpoint(checkpoint)


def test_the_trainer_checks_the_checkpoint_it_resumes_from(checkpoint):
    """MoonEmbeddingTrainer.train refuses before transformers' train runs (swift passes the checkpoint first)."""
    from types import SimpleNamespace

    from moon_swift.integrations.swift.trainer import MoonEmbeddingTrainer

    path = checkpoint / "global_step4" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    truncate(path, 100)
    trainer = SimpleNamespace(args=SimpleNamespace(output_dir=str(checkpoint.parent), world_size=2))
    for args, kwargs in [((str(checkpoint),), {}), ((), {"resume_from_checkpoint": str(checkpoint)}),
                         ((), {"resume_from_checkpoint": True})]:  # fmt: skip
        with pytest.raises(MoonInputError, match="truncated") as caught:
            MoonEmbeddingTrainer.train(trainer, *args, **kwargs)
        assert caught.value.file == str(path)


def test_a_missing_shard_of_a_sharded_model_is_named(checkpoint):
    index = checkpoint / "model.safetensors.index.json"
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(checkpoint / "model.safetensors", checkpoint / "model-00001-of-00002.safetensors")
    with pytest.raises(MoonInputError, match="lists shard model-00002-of-00002.safetensors, which is missing") as e:
        check_checkpoint(checkpoint)
    assert e.value.file == str(index)


def test_a_rank_of_the_resuming_run_without_any_files_is_named(checkpoint):
    """Rank 1 killed while saving: only rank 0's files are there; the two-process resume must not start."""
    for path in checkpoint.rglob("*"):
        if path.is_file() and ("rank_1" in path.name or "rank1" in path.name or path.name.endswith("_1.pth")):
            path.unlink()
    check_checkpoint(checkpoint)  # a one-process resume of rank 0's files is allowed
    with pytest.raises(MoonInputError, match=r"rank\(s\) \[1\] is missing .* \(this run has 2 process"):
        check_checkpoint(checkpoint, world_size=2)
