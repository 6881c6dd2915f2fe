"""`swift export --push_to_hub` of a moon checkpoint through the real swift CLI. Only ModelScope's
network calls are replaced (tests/fixtures/offline_modelscope.py records what would be sent)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import REPO_ROOT, run_cli, swift_executable

from moon_swift.core.settings import EmbeddingSettings

pytestmark = pytest.mark.slow

OFFLINE_HUB = REPO_ROOT / "tests" / "fixtures" / "offline_modelscope.py"


@pytest.fixture
def training_checkpoint(tiny_moon_dir, tmp_path):
    """A checkpoint folder as `swift sft` + DeepSpeed leave it: weights plus optimizer / RNG state."""
    checkpoint = tmp_path / "output" / "checkpoint-3"
    shutil.copytree(tiny_moon_dir, checkpoint)
    (checkpoint / "global_step3").mkdir()
    (checkpoint / "global_step3" / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 64)
    for name in ("rng_state.pth", "training_args.bin", "scheduler.pt", "trainer_state.json", "latest"):
        (checkpoint / name).write_bytes(b"\0")
    (checkpoint / "args.json").write_text(json.dumps({"dataset": ["data/train.jsonl"], "loss_type": "moon_infonce",
                                                      "hub_token": "OLD-TRAINING-TOKEN"}))  # fmt: skip
    EmbeddingSettings(
        image_views="both", boxes="data/boxes.jsonl",
        detector={"config": "rtmdet_product_tiny.py", "checkpoint": "product_detector.pth", "fingerprint": "abc"},
        training={"loss_type": "moon_infonce", "moon_infonce": {"temperature": 0.05, "spatial": True,
                  "queue_size": 4096, "queue_max_age": 8, "queue_negatives": True}},
    ).save(checkpoint)  # fmt: skip
    return checkpoint


def export(checkpoint, record, env):
    command = [swift_executable(), "export", "--model", str(checkpoint), "--model_type", "moon", "--push_to_hub",
               "true", "--hub_model_id", "someone/moon-tiny", "--external_plugins", str(OFFLINE_HUB)]  # fmt: skip
    return run_cli(command, env={"MOON_TEST_HUB_RECORD": str(record), **env})


def test_upload_stages_weights_card_and_configuration_only(training_checkpoint, tmp_path):
    record = tmp_path / "hub.jsonl"
    result = export(training_checkpoint, record, {"MODELSCOPE_API_TOKEN": "SECRET-TOKEN-123"})
    assert result.returncode == 0, result.stdout[-4000:]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    (upload,) = [c for c in calls if c["call"] == "push_model"]
    assert upload["model_id"] == "someone/moon-tiny"
    expected = {"README.md", "configuration.json", "config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
                "moon_embedding.json"}  # fmt: skip
    assert set(upload["files"]) == expected | ({"preprocessor_config.json"} & set(upload["files"]))
    assert upload["configuration"]["task"] == "sentence-embedding" and upload["configuration"]["model_type"] == "moon"
    card = upload["card"]
    for section in ("## Architecture", "## Core-product detection", "## Training", "## Evaluation", "## Usage",
                    "swift deploy --model someone/moon-tiny", "AutoModel"):  # fmt: skip
        assert section in card
    assert "rtmdet_product_tiny.py" in card and "temporal queue 4096" in card and "`moon_infonce`" in card
    assert all(c["token_given"] for c in calls if c["call"] == "login")
    assert "SECRET-TOKEN-123" not in result.stdout and "SECRET-TOKEN-123" not in record.read_text()
    assert "OLD-TRAINING-TOKEN" not in record.read_text()
    assert not list(training_checkpoint.glob("README.md")), "the user's checkpoint is left as it was"


def test_without_a_token_nothing_is_sent_and_the_message_says_how(training_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    record = tmp_path / "hub.jsonl"
    result = export(training_checkpoint, record, {})
    assert result.returncode != 0
    assert "no ModelScope token: set MODELSCOPE_API_TOKEN" in result.stdout
    assert not record.exists()
