"""End to end through the real `swift` CLI: the tiny recipe with DeepSpeed ZeRO-2, two processes, LoRA.

Slow (each run starts swift and DeepSpeed): marked ``slow``; CI runs them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FASHION_CATALOG, REPO_ROOT, run_cli, swift_executable
from PIL import Image

pytestmark = pytest.mark.slow

RECIPE = REPO_ROOT / "recipes" / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    moon_swift = str(Path(swift_executable()).with_name("moon-swift"))
    command = [moon_swift, "prepare-data", "--catalog", str(FASHION_CATALOG), "--out", str(out), "--limit", "64"]
    result = run_cli(command)
    assert result.returncode == 0, result.stdout
    assert "catalog pair rows (title -> product)" in result.stdout
    return out


def swift_sft(model_dir, dataset, output_dir, *extra, env=None):
    args = [swift_executable(), "sft", str(RECIPE), "--model", str(model_dir), "--dataset", str(dataset),
            "--output_dir", str(output_dir), "--max_steps", "3", "--save_steps", "3", "--logging_steps", "1",
            "--per_device_train_batch_size", "4", *extra]  # fmt: skip
    return run_cli(args, env=env)


def last_checkpoint(output_dir: Path) -> Path:
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    assert checkpoints, f"no checkpoint in {output_dir}"
    return checkpoints[-1]


def logged_losses(output_dir: Path) -> list[float]:
    entries = [json.loads(line) for line in (output_dir / "logging.jsonl").read_text().splitlines()]
    return [entry["loss"] for entry in entries if "loss" in entry]


def engine_embeddings(model_dir, requests, adapters=()):
    from swift.infer_engine import InferRequest, TransformersEngine

    engine = TransformersEngine(str(model_dir), model_type="moon", task_type="embedding", adapters=list(adapters),
                                torch_dtype=torch.float32)  # fmt: skip
    return np.array([r.data[0].embedding for r in engine.infer([InferRequest(**r) for r in requests])])


def transformers_embeddings(model_dir, requests):
    """Plain transformers: AutoModel + AutoProcessor + chat template, no swift involved."""
    from transformers import AutoModel, AutoProcessor

    import moon_swift.modeling  # noqa: F401  (registers MoonConfig/MoonModel with the Auto classes)

    model, processor = AutoModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)
    out = []
    for request in requests:
        text = request["messages"][0]["content"]
        images = [Image.open(p) for p in request.get("images", [])]
        content = [{"type": "image"} for _ in images] + ([{"type": "text", "text": text.replace("<image>", "")}]
                                                         if text.replace("<image>", "") else [])  # fmt: skip
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = processor(text=[prompt], images=images or None, return_tensors="pt")
        with torch.no_grad():
            out.append(model(**inputs).last_hidden_state[0].numpy())
    return np.stack(out)


def _requests(data_dir: Path):
    products = [json.loads(line) for line in (data_dir / "val_products.jsonl").read_text().splitlines()[:3]]
    return [{"messages": [{"role": "user", "content": "<image>"}], "images": p["images"]} for p in products] + [
        {"messages": [{"role": "user", "content": p["title"]}]} for p in products
    ]


def test_tiny_recipe_trains_with_zero2_and_checkpoint_reloads_identically(tiny_moon_dir, small_data, tmp_path):
    result = swift_sft(tiny_moon_dir, small_data / "train.jsonl", tmp_path / "out")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "deepspeed" in result.stdout.lower() and "zero" in result.stdout.lower()
    checkpoint = last_checkpoint(tmp_path / "out")
    losses = logged_losses(tmp_path / "out")
    assert len(losses) == 3 and all(np.isfinite(losses))

    requests = _requests(small_data)
    via_swift = engine_embeddings(checkpoint, requests)
    via_transformers = transformers_embeddings(checkpoint, requests)
    assert np.abs(via_swift - via_transformers).max() <= 1e-5
    before = engine_embeddings(tiny_moon_dir, requests)
    assert np.abs(before - via_swift).max() > 1e-4, "training did not change the embeddings"


def test_two_process_zero2_on_cpu_with_gloo(tiny_moon_dir, small_data, tmp_path):
    result = swift_sft(tiny_moon_dir, small_data / "train.jsonl", tmp_path / "out", env={"NPROC_PER_NODE": "2"})
    assert result.returncode == 0, result.stdout[-4000:]
    assert "--nproc_per_node 2" in result.stdout
    assert re.search(r"world_size[^0-9]+2", result.stdout), "swift did not report two ranks"
    assert len(logged_losses(tmp_path / "out")) == 3
    assert (last_checkpoint(tmp_path / "out") / "model.safetensors").is_file()


def test_lora_adapter_trains_and_reloads(tiny_moon_dir, small_data, tmp_path):
    result = swift_sft(tiny_moon_dir, small_data / "train.jsonl", tmp_path / "out", "--tuner_type", "lora",
                       "--target_modules", "all-linear", "--learning_rate", "5e-3")  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    adapter = last_checkpoint(tmp_path / "out")
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()

    from moon_swift.eval.encode import ProductEncoder

    requests = _requests(small_data)
    ours = ProductEncoder(str(tiny_moon_dir), adapters=[str(adapter)]).encode(requests, progress=False)
    via_engine = engine_embeddings(tiny_moon_dir, requests, adapters=[str(adapter)])
    assert np.abs(ours - via_engine).max() <= 1e-5
    base = engine_embeddings(tiny_moon_dir, requests)
    assert np.abs(base - ours).max() > 1e-5, "the adapter had no effect"


def test_unknown_model_type_spelling_is_one_clear_error(tiny_moon_dir, small_data, tmp_path):
    result = swift_sft(tiny_moon_dir, small_data / "train.jsonl", tmp_path / "out", "--model_type", "mooon")
    assert result.returncode != 0
    assert re.search(r"ValueError: model_type: 'mooon' not in \[.*'moon'", result.stdout)


def test_a_row_with_a_missing_image_stops_training_with_file_and_field(tiny_moon_dir, small_data, tmp_path):
    rows = (small_data / "train.jsonl").read_text().splitlines()
    bad = json.loads(rows[1])
    bad["positive_images"] = [["/data/gone/missing-photo.jpg"]]
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text("\n".join([rows[0], json.dumps(bad), *rows[2:]]) + "\n")
    result = swift_sft(tiny_moon_dir, dataset, tmp_path / "out")
    assert result.returncode != 0
    product = bad["positive_messages"][0][0]["content"].split("<group_id>")[1].split("</group_id>")[0]
    assert (f"MoonInputError: file /data/gone/missing-photo.jpg, row with positive product '{product}', field "
            "'positive[0] images[0]': image file does not exist") in result.stdout  # fmt: skip
    check = run_cli([str(Path(swift_executable()).with_name("moon-swift")), "check-data", str(dataset)])
    assert check.returncode == 2
    assert f"file {dataset}, row 2, field 'positive_images[0][0]'" in check.stdout
