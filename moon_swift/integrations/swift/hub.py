"""Publishing a MOON checkpoint with ``swift export --push_to_hub``: a generated model card, the right
``configuration.json``, and only the files a user needs.

swift 4.6 uploads the checkpoint folder as it is (a DeepSpeed checkpoint carries its optimizer
state, gigabytes of it) and writes a ``text-generation`` ``configuration.json``. For moon models the
export hook (:func:`patch_swift_export`, installed by the start-up hook) stages a clean folder:
weights, config, tokenizer and processor files, ``README.md`` (the card) and ``configuration.json``
and hands that to swift's own upload.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ...core.errors import MoonInputError

logger = logging.getLogger(__name__)

#: what a published checkpoint (full model or LoRA adapter) consists of
UPLOAD_PATTERNS = (
    "config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "preprocessor_config.json",
    "generation_config.json",
    "adapter_config.json",
    "moon_embedding.json",
)  # fmt: skip  (not args.json: it can hold a hub token; the card summarises it)
CONFIGURATION = {"framework": "pytorch", "task": "sentence-embedding", "model_type": "moon", "allow_remote": True}
TOKEN_ENV = "MODELSCOPE_API_TOKEN"


def upload_files(model_dir: Path) -> list[Path]:
    """The files of ``model_dir`` that belong in a published checkpoint (no optimizer / RNG state)."""
    return sorted(p for p in model_dir.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, pattern)
                                                                       for pattern in UPLOAD_PATTERNS))  # fmt: skip


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _eval_table(model_dir: Path) -> str:
    """The latest ``swift eval`` result of this checkpoint (``eval_result.jsonl``) as a Markdown table."""
    path = model_dir / "eval_result.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    if not lines:
        return (
            "Not recorded. `swift eval --model_type moon ...` writes `eval_result.jsonl` here; export again after it.\n"
        )
    rows = ["| benchmark | task | metric | score | n |", "|---|---|---|---|---|"]
    for report in json.loads(lines[-1]).get("Native", []):
        for metric in report.get("metrics", []):
            for subset in metric["categories"][0]["subsets"]:
                rows.append(f"| {report['dataset_name']} | {subset['name']} | {metric['name']} | "
                            f"{subset['score']:.4f} | {subset['num']} |")  # fmt: skip
    return "\n".join(rows) + "\n"


def model_card(model_dir: Path, repo_id: str) -> str:
    """``README.md`` for the hub: architecture, MoE, detector, training data, evaluation, usage."""
    config = _read_json(model_dir / "config.json") or {}
    adapter = _read_json(model_dir / "adapter_config.json")
    args = _read_json(model_dir / "args.json") or {}
    record = _read_json(model_dir / "moon_embedding.json") or {}
    text = config.get("text_config", config)
    moe_layers = config.get("moe_layers")
    moe = (
        f"guided MoE in decoder layers `{moe_layers}`: {config.get('num_experts')} routed experts, top-"
        f"{config.get('moe_top_k')}, category + attribute experts "
        f"{'on' if config.get('guided_experts', True) else 'off (plain MoE)'}, shared expert "
        f"{'on' if config.get('shared_expert') else 'off'}, aux-loss weight {config.get('moe_aux_loss_coef')}"
        if moe_layers
        else "dense (no MoE layers)"
    )
    detector = record.get("detector")
    views = record.get("image_views", "not recorded")
    detector_text = (f"`{detector['config']}` + `{detector['checkpoint']}` (fingerprint {detector['fingerprint']})"
                     if detector else "none recorded")  # fmt: skip
    datasets = ", ".join(f"`{d}`" for d in args.get("dataset", [])) or "not recorded"
    deepspeed = args.get("deepspeed")
    stage = deepspeed.get("zero_optimization", {}).get("stage") if isinstance(deepspeed, dict) else None
    backbone = (f"`{config.get('base_model_type', 'qwen2_5_vl')}`, {text.get('num_hidden_layers')} decoder layers, "
                f"hidden size {text.get('hidden_size')}")  # fmt: skip
    normalised = ", L2-normalised" if config.get("normalize", True) else ""
    pooling = f"{config.get('pooling', 'mean')} of the last hidden states{normalised}"
    lora = f"LoRA adapter (rank {adapter.get('r')}, modules {adapter.get('target_modules')})" if adapter else "full"
    return f"""---
tags: [moon, product-embedding, multimodal, e-commerce, ms-swift]
library_name: transformers
pipeline_tag: feature-extraction
---
# {repo_id}

MOON product embeddings ([arXiv 2508.11999](https://arxiv.org/abs/2508.11999)) trained with
moon-swift on ms-swift: one L2-normalised vector per product (images, title,
category path, attributes) or per query.

## Architecture
| | |
|---|---|
| backbone | {backbone} |
| pooling | {pooling} |
| FFN | {moe} |
| weights | {lora} |

## Core-product detection
Image views: `{views}` (original, crop of the detected core product, or both). Detector: {detector_text}.

## Training
Data: {datasets}. Loss: `{args.get("loss_type", "not recorded")}`{_infonce(record)}.
Epochs {args.get("num_train_epochs")},
batch {args.get("per_device_train_batch_size")} per device, learning rate {args.get("learning_rate")},
tuner `{args.get("tuner_type")}`{f", DeepSpeed ZeRO-{stage}" if stage else ""}.

## Evaluation
{_eval_table(model_dir)}
## Usage
ms-swift (`pip install moon-swift` registers model type `moon`):
```bash
swift deploy --model {repo_id} --model_type moon --task_type embedding --infer_backend transformers
```
```python
from openai import OpenAI
client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY")
vector = client.embeddings.create(model="{repo_id.split("/")[-1]}", input="navy blue cotton t-shirt").data[0].embedding
```
transformers:
```python
import moon_swift.modeling  # registers MoonConfig / MoonModel / MoonProcessor
from modelscope import snapshot_download
from transformers import AutoModel, AutoProcessor
path = snapshot_download("{repo_id}")
model, processor = AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
# the checkpoint's chat template is the one training used; product text may keep the training rows'
# <category>/<attributes> markup: the processor turns it into the guided-MoE token types
prompt = processor.apply_chat_template([{{"role": "user", "content": "Blue Skirts"}}], add_generation_prompt=True)
embedding = model(**processor(text=[prompt], return_tensors="pt")).last_hidden_state  # (1, hidden), unit norm
```
"""


def _infonce(record: dict[str, Any]) -> str:
    options = (record.get("training") or {}).get("moon_infonce")
    if not options:
        return ""
    return (f" (temperature {options['temperature']}, spatial negatives {'on' if options['spatial'] else 'off'}, "
            f"temporal queue {options['queue_size']})")  # fmt: skip


def stage_upload(model_dir: Path, staging: Path, repo_id: str) -> list[str]:
    """Link (or copy) the publishable files into ``staging`` and write the card and configuration."""
    for path in upload_files(model_dir):
        try:
            os.link(path, staging / path.name)
        except OSError:
            shutil.copy2(path, staging / path.name)
    (staging / "README.md").write_text(model_card(model_dir, repo_id), encoding="utf-8")
    (staging / "configuration.json").write_text(json.dumps(CONFIGURATION, indent=2), encoding="utf-8")
    return sorted(p.name for p in staging.iterdir())


def require_token(hub_token: str | None) -> None:
    if not (hub_token or os.environ.get(TOKEN_ENV)):
        raise MoonInputError(
            f"no ModelScope token: set {TOKEN_ENV} (preferred: swift prints its command line, so a "
            "--hub_token value would end up in logs)",
            field="hub_token",
        )


def _is_moon(args) -> bool:
    if getattr(args, "model_type", None) == "moon":
        return True
    config = _read_json(Path(args.model_dir) / "config.json") if getattr(args, "model_dir", None) else None
    return bool(config) and config.get("model_type") == "moon"


def patch_swift_export() -> None:
    """Wrap ``SwiftExport.run``: a moon ``--push_to_hub`` uploads a staged folder (idempotent).

    A patch, because swift 4.6 has no hook between "export" and "upload": swift's ``push_to_hub`` takes
    the checkpoint folder as it is. The wrapper relies on ``run(self)`` uploading
    ``args.adapters[0] or args.model_dir``; ``tests/integrations/swift/test_patches.py`` fails when that
    changes.
    """
    from swift.pipelines.export.export import SwiftExport

    original = SwiftExport.run
    if getattr(original, "moon_publish", False):
        return

    @functools.wraps(original)
    def run(self):
        args = self.args
        if not (args.push_to_hub and not args.merge_lora and _is_moon(args)):
            return original(self)
        require_token(args.hub_token)
        source = Path(args.adapters[0] if args.adapters else args.model_dir)
        with tempfile.TemporaryDirectory(prefix="moon-upload-") as staging:
            files = stage_upload(source, Path(staging), args.hub_model_id)
            logger.warning("moon: uploading %d files of %s to %s: %s", len(files), source, args.hub_model_id, files)
            saved = (list(args.adapters), args.model_dir)
            if args.adapters:
                args.adapters[0] = staging
            else:
                args.model_dir = staging
            try:
                return original(self)
            finally:
                args.adapters[:], args.model_dir = saved

    run.moon_publish = True
    SwiftExport.run = run
