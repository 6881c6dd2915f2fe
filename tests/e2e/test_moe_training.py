"""Guided MoE through the real `swift sft`: the ablation switch, ZeRO-3 with two processes, LoRA on experts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import FASHION_CATALOG, REPO_ROOT, run_cli, swift_executable
from safetensors.torch import load_file

from moon_swift.apps.tiny_model import make_tiny
from moon_swift.modeling.upcycle import upcycle

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"
ABLATIONS = {
    "dense": {},
    "plain_moe": {"moe_layers": "all", "num_experts": 4, "moe_top_k": 2, "guided_experts": False},
    "guided_moe": {"moe_layers": "all", "num_experts": 4, "moe_top_k": 2},
}


@pytest.fixture(scope="module")
def train_jsonl(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    command = [str(Path(swift_executable()).with_name("moon-swift")), "prepare-data", "--catalog", str(FASHION_CATALOG),
               "--out", str(out), "--limit", "64"]  # fmt: skip
    assert run_cli(command).returncode == 0
    return out / "train.jsonl"


@pytest.fixture(scope="module")
def moon_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ablations")
    make_tiny(root / "base", seed=2, as_base=True)
    for name, options in ABLATIONS.items():
        upcycle(root / "base", root / name, noise=0.01, **options)
    return {name: root / name for name in ABLATIONS}


def sft(model_dir, dataset, output_dir, *extra, env=None):
    args = [swift_executable(), "sft", str(RECIPE), "--model", str(model_dir), "--dataset", str(dataset),
            "--output_dir", str(output_dir), "--max_steps", "3", "--save_steps", "3", "--logging_steps", "1",
            "--per_device_train_batch_size", "4", *extra]  # fmt: skip
    result = run_cli(args, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:]
    logs = [json.loads(line) for line in (Path(output_dir) / "logging.jsonl").read_text().splitlines()]
    return result, [entry for entry in logs if "loss" in entry]


def router_weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(path / "model.safetensors").items() if k.endswith("router.weight")}


@pytest.mark.parametrize("ablation", list(ABLATIONS))
def test_ablation_switch_trains_through_swift_sft(ablation, moon_models, train_jsonl, tmp_path):
    # gradient checkpointing on (swift uses reentrant checkpointing with DeepSpeed): the aux loss must still train
    _, logs = sft(moon_models[ablation], train_jsonl, tmp_path / "out", "--gradient_checkpointing", "true")
    assert len(logs) == 3
    checkpoint = tmp_path / "out" / "checkpoint-3"
    if ablation == "dense":
        assert "moe_aux_loss" not in logs[0] and not router_weights(checkpoint)
        return
    assert all(entry["moe_aux_loss"] > 0 for entry in logs)
    loads = [value for key, value in logs[-1].items() if key.startswith("moe_load_l0_e")]
    assert len(loads) == 4 and abs(sum(loads) - 1.0) < 1e-3
    before, after = router_weights(moon_models[ablation]), router_weights(checkpoint)
    assert before.keys() == after.keys() and len(after) == 2  # both decoder layers are MoE
    assert all(not torch.equal(before[k], after[k]) for k in before), "routers did not train"


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_two_processes_with_guided_moe(zero, moon_models, train_jsonl, tmp_path):
    result, logs = sft(moon_models["guided_moe"], train_jsonl, tmp_path / "out", "--deepspeed", zero,
                       env={"NPROC_PER_NODE": "2"})  # fmt: skip
    if zero == "zero3":  # experts without tokens on one rank must not stall the others
        assert "Setting z3_leaf_modules" in result.stdout and "GuidedMoE" in result.stdout
    assert len(logs) == 3 and all("moe_aux_loss" in entry for entry in logs)
    from transformers import AutoModel

    import moon_swift.modeling  # noqa: F401

    _, info = AutoModel.from_pretrained(tmp_path / "out" / "checkpoint-3", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_lora_on_attention_and_experts_trains_routers_and_the_learned_temperature_in_full(
    moon_models, train_jsonl, tmp_path
):
    model = tmp_path / "moon-learned-temperature"
    upcycle(moon_models["guided_moe"].parent / "base", model, noise=0.01, **ABLATIONS["guided_moe"],
            learnable_temperature=True, init_temperature=0.07)  # fmt: skip
    assert load_file(model / "model.safetensors")["temperature.logit_scale"].item() == pytest.approx(math.log(1 / 0.07))
    # the 3B recipe's LoRA targets: no router, no temperature among them
    _, logs = sft(model, train_jsonl, tmp_path / "out", "--tuner_type", "lora", "--target_modules", "q_proj",
                  "v_proj", "gate_proj", "up_proj", "down_proj", "--learning_rate", "5e-3", "--loss_type",
                  "moon_infonce")  # fmt: skip
    checkpoint = tmp_path / "out" / "checkpoint-3"
    adapter = load_file(checkpoint / "adapter_model.safetensors")
    names = list(adapter)
    assert any(".mlp.experts.3.gate_proj.lora_A" in n for n in names)
    assert any(".mlp.category_expert.down_proj.lora_B" in n for n in names)
    assert any(".self_attn.q_proj.lora_A" in n for n in names)
    trained_b = [v for n, v in adapter.items() if ".mlp.experts." in n and "lora_B" in n]
    assert any(v.abs().sum() > 0 for v in trained_b), "expert LoRA weights did not train"

    before = router_weights(model)
    saved_routers = {n: v for n, v in adapter.items() if n.endswith(".mlp.router.weight")}  # peft's saved names
    assert len(saved_routers) == len(before) == 2, names
    for name, value in saved_routers.items():
        layer = name.split(".layers.")[1].split(".")[0]
        assert not torch.equal(value, before[f"model.language_model.layers.{layer}.mlp.router.weight"]), name
    temperature = [v for n, v in adapter.items() if n.endswith("temperature.logit_scale")]
    assert len(temperature) == 1 and temperature[0].item() != pytest.approx(math.log(1 / 0.07), abs=1e-6)
    assert logs[-1]["moon_infonce/temperature"] != pytest.approx(0.07, abs=1e-7)

    from peft import PeftModel
    from transformers import AutoModel

    import moon_swift.modeling  # noqa: F401

    loaded = PeftModel.from_pretrained(AutoModel.from_pretrained(model), str(checkpoint))
    restored = {n.replace(".modules_to_save.default", ""): p.detach() for n, p in loaded.named_parameters()
                if ".modules_to_save.default." in n}  # fmt: skip
    assert restored.keys() == {*saved_routers, "base_model.model.temperature.logit_scale"}
    for name, value in saved_routers.items():
        assert torch.equal(restored[name], value)
    assert torch.equal(restored["base_model.model.temperature.logit_scale"], temperature[0])

    from moon_swift.eval.encode import ProductEncoder

    queries = ["Blue Skirts", "black running shoes"]
    base = ProductEncoder(str(model)).encode_queries(queries, progress=False)
    tuned = ProductEncoder(str(model), adapters=[str(checkpoint)])
    assert abs(tuned.encode_queries(queries, progress=False) - base).max() > 1e-5
