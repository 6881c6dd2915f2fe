"""The `moon-swift` command called in-process leaves the caller's environment as it found it: a
LOG_LEVEL left behind would silence the INFO logs of every swift process the caller starts later."""

import os

import pytest

from moon_swift.apps.cli import main


def test_a_command_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    assert main(["check-data", str(tmp_path / "missing.jsonl")]) == 2
    assert "LOG_LEVEL" not in os.environ
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert main(["check-data", str(tmp_path / "missing.jsonl")]) == 2
    assert os.environ["LOG_LEVEL"] == "DEBUG"


def test_make_tiny_and_upcycle_flags_reach_the_config(tmp_path, capsys):
    import json
    import math

    from safetensors.torch import load_file

    assert main(["make-tiny", str(tmp_path / "base"), "--as-base", "qwen2_5_vl"]) == 0
    assert main(["upcycle", "--base", str(tmp_path / "base"), "--out", str(tmp_path / "moon"), "--moe-layers", "all",
                 "--learnable-temperature", "--init-temperature", "0.1"]) == 0  # fmt: skip
    config = json.loads((tmp_path / "moon" / "config.json").read_text())
    assert config["learnable_temperature"] and config["init_temperature"] == 0.1 and config["moe_layers"] == [0, 1]
    logit_scale = load_file(tmp_path / "moon" / "model.safetensors")["temperature.logit_scale"]
    assert abs(logit_scale.item() - math.log(1 / 0.1)) < 1e-6  # initialised, not left on the meta device
    printed = capsys.readouterr().out
    assert "guided-MoE layers)" in printed and "2 guided-MoE layers" in printed
    assert "8 GPUs, 32 rows per GPU x 3 sequences" in printed and "at 2048 tokens" in printed  # the 3B recipe's
    assert "ZeRO-2:" in printed and "ZeRO-3:" in printed


def test_plan_reads_a_config_alone_and_refuses_moe_options_for_a_moon_checkpoint(tmp_path, capsys):

    from moon_swift.core.errors import MoonInputError

    assert main(["make-tiny", str(tmp_path / "base"), "--as-base", "qwen2_5_vl"]) == 0
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "config.json").write_text((tmp_path / "base" / "config.json").read_text())
    capsys.readouterr()
    assert main(["plan", str(config_only), "--moe-layers", "all", "--plan-gpus", "2", "--no-plan-momentum"]) == 0
    printed = capsys.readouterr().out
    assert "2 guided-MoE layers" in printed and "2 GPUs" in printed and "momentum average 0.0" in printed
    assert main(["make-tiny", str(tmp_path / "moon"), "--moe-layers", "all"]) == 0
    with pytest.raises(MoonInputError, match="keeps its own MoE layers"):
        from moon_swift.apps.cli import build_parser, cmd_plan

        cmd_plan(build_parser().parse_args(["plan", str(tmp_path / "moon"), "--moe-layers", "all"]))


def test_a_plan_out_of_range_is_refused_naming_the_option(capsys):

    from moon_swift.apps.cli import build_parser
    from moon_swift.modeling.sizes import TrainingPlan

    with pytest.raises(SystemExit):
        build_parser().parse_args(["plan", "some/dir", "--plan-gpus", "0"])
    assert "--plan-gpus: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tokens must be at least 1"):
        TrainingPlan(tokens=0)


def test_the_demo_refuses_an_unknown_variant_or_no_seeds_before_any_work(tmp_path, capsys):
    from moon_swift.apps.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--seeds", "0"])
    assert "--seeds: must be at least 1, got 0" in capsys.readouterr().err
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--variants", "MOON", "bigger model"]) == 2
    error = capsys.readouterr().err
    assert "unknown variants ['bigger model']" in error and "'no temporal'" in error
    assert not (tmp_path / "demo").exists()  # nothing was made
