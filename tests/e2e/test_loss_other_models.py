"""`--loss_type moon_infonce` with another swift embedding model: a tiny Qwen2 text model (last-token pooling)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, run_cli, swift_executable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_qwen2_text(tmp_path_factory) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from moon_swift.apps.tiny_model import QWEN_VOCAB_SIZE, build_tokenizer

    out = tmp_path_factory.mktemp("qwen2-text")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=QWEN_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip
    config.architectures = ["Qwen2ForCausalLM"]
    Qwen2ForCausalLM(config).save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out


def test_moon_infonce_trains_a_non_moon_embedding_model(tiny_qwen2_text, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"query {i}"}],
             "positive_messages": [[{"role": "user", "content": f"document {i}"}]]} for i in range(24)]  # fmt: skip
    dataset = tmp_path / "pairs.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = [
        swift_executable(), "sft", "--model", str(tiny_qwen2_text), "--model_type", "qwen2",
        "--template", "qwen2_5", "--task_type", "embedding", "--loss_type", "moon_infonce",
        "--dataset", str(dataset), "--split_dataset_ratio", "0", "--use_cpu", "true",
        "--fp16", "false", "--bf16", "false", "--torch_dtype", "float32",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--max_steps", "3",
        "--logging_steps", "1", "--check_model", "false", "--report_to", "none", "--add_version", "false",
        "--output_dir", str(tmp_path / "out"),
    ]  # fmt: skip
    result = run_cli(args, env={"MOON_INFONCE_QUEUE_SIZE": "8"}, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-4000:]
    logs = [json.loads(line) for line in (tmp_path / "out" / "logging.jsonl").read_text().splitlines()]
    negatives = [entry["moon_infonce/negatives_per_anchor"] for entry in logs if "loss" in entry]
    assert negatives == [3.0, 7.0, 11.0]  # 4 in-batch products, then the queue (size 8) fills up
