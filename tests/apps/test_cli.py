"""The `moon-swift` command called in-process leaves the caller's environment as it found it: a
LOG_LEVEL left behind would silence the INFO logs of every swift process the caller starts later."""

import os

from moon_swift.apps.cli import main


def test_a_command_leaves_the_environment_as_it_was(tmp_path, monkeypatch):
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    assert main(["check-data", str(tmp_path / "missing.jsonl")]) == 2
    assert "LOG_LEVEL" not in os.environ
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert main(["check-data", str(tmp_path / "missing.jsonl")]) == 2
    assert os.environ["LOG_LEVEL"] == "DEBUG"
