"""The same gradients through the real `swift sft`, whatever the process count or gradient accumulation.

The model is a tiny guided MoE with a strong auxiliary loss (balance 0.5, z-loss 0.01), the rows carry two
hard negatives each, and plain SGD without clipping or warm-up makes every weight update proportional to
its gradient (Adam would hide a wrong gradient scale). Neither shuffle is on: with batch B per rank, rank
r gets rows r, r + 2, ..., so at every step the two ranks hold together exactly the 2B rows that one
process gets. Both losses compute the global batch's loss on every rank and multiply its gradient by the
world size (swift 4.6's ``infonce`` does too, with ``INFONCE_USE_BATCH``), which DDP / DeepSpeed averaging
undoes; a loss that did not would show here as half the grad_norm.

Measured on 2 CPU cores (relative differences): two processes against one, both losses, loss and
grad_norm <= 5e-7 and weight updates <= 4e-7; accumulated against not, 0. Before the MoE layers balanced
the global batch, the routers' update differed by 8e-4 (the logged aux loss by 7e-5); before the trainer
gave the aux loss the main loss's factor (no ``--callbacks moon_moe``), the accumulated run's first
grad_norm differed by 1.4e-3 and its routers' update by 1.2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    COMPARED_LOSS_ENV,
    REPO_ROOT,
    TWO_SGD_STEPS,
    logged_steps,
    relative,
    rows_with_two_negatives,
    run_cli,
    swift_executable,
)
from safetensors.torch import load_file

from moon_swift.apps.tiny_model import make_tiny
from moon_swift.modeling.upcycle import upcycle

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
ENV = COMPARED_LOSS_ENV


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("equivalence")
    make_tiny(root / "base", seed=2, as_base=True)
    upcycle(root / "base", root / "model", noise=0.01, moe_layers="all", num_experts=4, moe_top_k=2,
            moe_aux_loss_coef=0.5, moe_z_loss_coef=0.01)  # fmt: skip
    rows = rows_with_two_negatives(root).read_text().splitlines()
    # each step's 4 rows twice in a row: an accumulated step of 2 x 4 rows is one step of those 4 rows
    (root / "repeated.jsonl").write_text("\n".join(rows[:4] * 2 + rows[4:] * 2) + "\n")
    recipe = yaml.safe_load((REPO_ROOT / "recipes" / "tiny_cpu.yaml").read_text())
    del recipe["callbacks"]  # what these tests check needs no flag
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return {"root": root, "model": root / "model", "recipe": root / "recipe.yaml", "runs": {}}


def sft(setup, name, *, loss, nproc, batch, dataset="rows.jsonl", extra=()) -> Path:
    """One run of `swift sft` (two steps), once per module: tests share the single-process ones."""
    out = setup["root"] / name
    if name in setup["runs"]:
        return out
    args = [swift_executable(), "sft", str(setup["recipe"]), "--model", str(setup["model"]),
            "--dataset", str(setup["root"] / dataset), "--output_dir", str(out), "--loss_type", loss,
            "--per_device_train_batch_size", str(batch), *TWO_SGD_STEPS, *extra]  # fmt: skip
    result = run_cli(args, env={**ENV, "NPROC_PER_NODE": str(nproc)}, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:]
    setup["runs"][name] = out
    return out


def one_process(setup, loss) -> Path:
    # --callbacks moon_moe (the old way to get routing logs) is still accepted
    return sft(setup, f"{loss}-one", loss=loss, nproc=1, batch=4, extra=("--callbacks", "moon_moe"))


def differences(setup, one: Path, other: Path) -> dict[str, float]:
    """Relative differences of the logged values of each step and of the two runs' weight updates."""
    found = {}
    steps = list(zip(logged_steps(one), logged_steps(other), strict=True))
    assert len(steps) == 2
    for step, (a, b) in enumerate(steps, 1):
        assert "moe_aux_loss" in a and "moe_aux_loss" in b  # routing is logged without --callbacks moon_moe
        for key in ("loss", "grad_norm", "moe_aux_loss"):
            found[f"{key}@{step}"] = relative(a[key], b[key])
    start = load_file(setup["model"] / "model.safetensors")
    after = [load_file(out / "checkpoint-2" / "model.safetensors") for out in (one, other)]
    for part, keys in (("update", list(start)), ("router update", [k for k in start if "router" in k])):
        updates = [torch.cat([(weights[k] - start[k]).double().flatten() for k in keys]) for weights in after]
        assert updates[0].norm() > 1e-3 * torch.cat([start[k].double().flatten() for k in keys]).norm()
        found[part] = relative(*updates)
    return found


@pytest.mark.parametrize("loss", ["infonce", "moon_infonce"])
def test_two_processes_equal_one_process_on_both_batches(setup, loss):
    # moon_infonce: the other rank's products are spatial negatives; infonce: swift's INFONCE_USE_BATCH gather.
    # One run recomputes the MoE layers in backward (swift's reentrant checkpointing): their all-reduce too.
    checkpointing = ("--gradient_checkpointing", "true") if loss == "moon_infonce" else ()
    two = sft(setup, f"{loss}-two", loss=loss, nproc=2, batch=2, extra=checkpointing)
    found = differences(setup, one_process(setup, loss), two)
    assert max(found.values()) < TOLERANCE, found


def test_gradient_accumulation_gives_the_aux_loss_the_main_loss_factor(setup):
    # no --callbacks moon_moe: the aux loss's gradient is halved like the main loss's, or the router's differs
    accumulated = sft(setup, "accumulated", loss="infonce", nproc=1, batch=4, dataset="repeated.jsonl",
                      extra=("--gradient_accumulation_steps", "2"))  # fmt: skip
    found = differences(setup, one_process(setup, "infonce"), accumulated)
    assert max(found.values()) < TOLERANCE, found


def test_fp16_is_refused_at_start_for_a_moe_model(setup, tmp_path):
    command = [swift_executable(), "sft", str(setup["recipe"]), "--model", str(setup["model"]),
               "--dataset", str(setup["root"] / "rows.jsonl"), "--output_dir", str(tmp_path / "out"),
               "--max_steps", "1", "--fp16", "true"]  # fmt: skip
    result = run_cli(command, env={**ENV, "NPROC_PER_NODE": "1"}, timeout=600)
    assert result.returncode != 0
    assert "MoonInputError" in result.stdout and "cannot train in fp16" in result.stdout, result.stdout[-3000:]
    assert "Train:" not in result.stdout  # stopped before the first step
