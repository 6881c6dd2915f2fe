"""The chat format MOON embeds with, as a Jinja chat template for transformers' ``apply_chat_template``.

swift's ``moon`` template is Qwen's chat format without Qwen's default system turn (every token is pooled, so
a fixed sentence would only dilute the mean). The Qwen2-VL / Qwen2.5-VL checkpoints' own chat template inserts
``You are a helpful assistant.`` when no system turn is given; a MOON checkpoint carries this template instead,
so that ``processor.apply_chat_template`` builds exactly the text swift's template encodes. A checkpoint
trained with ``--system`` gets that system turn as its default.
"""

from __future__ import annotations

import json
from pathlib import Path

_TEMPLATE = (
    "{% set default_system = DEFAULT_SYSTEM %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' and default_system is not none %}"
    "<|im_start|>system\n{{ default_system }}<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def moon_chat_template(system: str | None = None) -> str:
    """The chat template of a MOON checkpoint whose swift template has default system ``system`` (None: none)."""
    return _TEMPLATE.replace("DEFAULT_SYSTEM", "none" if system is None else json.dumps(system, ensure_ascii=False))


CHAT_TEMPLATE_FILE = "chat_template.jinja"


def write_chat_template(model_dir: str | Path, system: str | None) -> Path:
    """Write the chat template of ``system`` into a checkpoint folder (where transformers' processors read it)."""
    path = Path(model_dir) / CHAT_TEMPLATE_FILE
    path.write_text(moon_chat_template(system), encoding="utf-8")
    return path
