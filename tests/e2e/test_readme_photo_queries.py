"""README's photo-query commands, run as written (smaller: fewer products and steps), so they cannot
silently break again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

pytestmark = pytest.mark.slow


def readme_block(heading: str) -> list[str]:
    """The commands of the first ``bash`` block after ``heading`` in README.md."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]


def test_readme_photo_query_commands_train_and_evaluate_photo_and_multimodal_queries(tmp_path):
    commands = readme_block("### Photo queries")
    assert [c.split()[0] if not c.startswith("MOON_") else c.split()[1] for c in commands] == [
        "moon-swift", "moon-swift", "moon-swift", "moon-swift", "swift", "moon-swift"]  # fmt: skip
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TOKENIZERS_PARALLELISM": "false",
    }
    outputs = []
    for command in commands:
        command = command.replace("runs/photo", str(tmp_path)).replace("--limit 400", "--limit 48")
        command = command.replace("--max_steps 40 --save_steps 40", "--max_steps 2 --save_steps 2")
        command = command.replace("checkpoint-40", "checkpoint-2")
        result = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=900)  # fmt: skip
        assert result.returncode == 0, f"$ {command}\n{result.stdout[-4000:]}"
        outputs.append(result.stdout)
    assert "behaviour pairs (image:" in outputs[0] and "multimodal:" in outputs[0]
    assert "queries image:" in outputs[1] and "multimodal:" in outputs[1]
    settings = (tmp_path / "out" / "checkpoint-2" / "moon_embedding.json").read_text()
    assert '"image_views": "both"' in settings
    for task in ("retrieval/image->product/recall@1", "retrieval/multimodal->product/recall@1"):
        assert task in outputs[-1]
