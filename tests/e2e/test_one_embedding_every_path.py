"""One embedding on every path, for a checkpoint upcycled from a base with the real Qwen2.5-VL chat template
(default system turn ``You are a helpful assistant.``): plain transformers (AutoProcessor's chat template +
AutoModel), swift's template through its engine (what ``moon-swift eval`` / ``index`` encode with),
``swift deploy``'s ``/v1/embeddings`` and the model card's snippet agree for text, image and image + text
products, field markup included. Slow: marked ``slow``; CI runs it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FASHION_CATALOG, swift_deploy
from PIL import Image

from moon_swift.apps.tiny_model import make_tiny
from moon_swift.data import read_fashion_catalog
from moon_swift.eval.encode import ProductEncoder, image_query_request, product_request, query_request
from moon_swift.eval.service import ServiceEncoder
from moon_swift.modeling.upcycle import upcycle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upcycled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real-chat-template")
    make_tiny(root / "base", seed=3, as_base=True)
    base_template = json.loads((root / "base" / "chat_template.json").read_text())["chat_template"]
    assert "You are a helpful assistant." in base_template and "<|vision_start|><|image_pad|>" in base_template
    # experts differ (noise): category / attribute tokens change the embedding, so lost markup would show
    upcycle(root / "base", root / "moon", noise=0.05, moe_layers="all", num_experts=4, moe_top_k=2)
    return root / "moon"


@pytest.fixture(scope="module")
def requests() -> list[dict]:
    records = read_fashion_catalog(FASHION_CATALOG, limit=2)
    product = product_request(records[0])
    assert "<category>" in product["messages"][0]["content"] and "<attributes>" in product["messages"][0]["content"]
    return [query_request("navy blue cotton t-shirt"), image_query_request(records[1].images[0]), product]


def transformers_embeddings(model_dir: Path, requests: list[dict], processor=None) -> np.ndarray:
    """What the README's transformers snippet does: chat template, processor, AutoModel. No swift."""
    from transformers import AutoModel, AutoProcessor

    import moon_swift.modeling  # noqa: F401  (registers MoonConfig / MoonModel / MoonProcessor)

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = processor or AutoProcessor.from_pretrained(model_dir)
    rows = []
    for request in requests:
        pieces = request["messages"][0]["content"].split("<image>")
        content = [{"type": "text", "text": pieces[0]}] if pieces[0] else []
        for piece in pieces[1:]:
            content += [{"type": "image"}] + ([{"type": "text", "text": piece}] if piece else [])
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        images = [Image.open(path).convert("RGB") for path in request.get("images", [])]
        inputs = processor(text=[prompt], images=images or None, return_tensors="pt")
        with torch.no_grad():
            rows.append(model(**inputs).last_hidden_state[0].numpy())
    return np.stack(rows)


def card_snippet_embedding(model_dir: Path) -> np.ndarray:
    """Run the transformers snippet of the generated model card, with the hub download pointed at the folder."""
    from moon_swift.integrations.swift.hub import model_card

    card = model_card(model_dir, "acme/moon-test")
    code = re.findall(r"```python\n(.*?)```", card.split("transformers:", 1)[1], re.S)[0]
    code = code.replace('snapshot_download("acme/moon-test")', repr(str(model_dir)))
    scope: dict = {}
    exec(compile(code, "model-card", "exec"), scope)  # noqa: S102  (our own generated snippet)
    return scope["embedding"].detach().numpy()[0]


def test_every_path_embeds_like_training(upcycled, requests, tmp_path):
    chat_template = (upcycled / "chat_template.jinja").read_text()
    assert "helpful assistant" not in chat_template  # MOON's format, not the base's

    via_swift = ProductEncoder(str(upcycled)).encode(requests, progress=False)
    via_transformers = transformers_embeddings(upcycled, requests)
    np.testing.assert_allclose(via_transformers, via_swift, atol=1e-5, rtol=0)
    with swift_deploy(upcycled, tmp_path / "deploy.log") as url:
        served = ServiceEncoder(url, model="moon-tiny").encode(requests, progress=False)
    np.testing.assert_allclose(served, via_swift, atol=1e-5, rtol=0)
    card = card_snippet_embedding(upcycled)
    np.testing.assert_allclose(card, ProductEncoder(str(upcycled)).encode_queries(["Blue Skirts"], progress=False)[0],
                               atol=1e-5, rtol=0)  # fmt: skip

    # the check can fail: the base's chat template (its default system turn) embeds differently
    from transformers import AutoProcessor

    with_base_template = AutoProcessor.from_pretrained(upcycled)
    with_base_template.chat_template = json.loads((upcycled.parent / "base" / "chat_template.json").read_text())[
        "chat_template"
    ]
    assert np.abs(transformers_embeddings(upcycled, requests, with_base_template) - via_swift).max() > 1e-3


def test_a_checkpoint_trained_with_a_system_turn_embeds_with_it_on_every_path(upcycled, requests, tmp_path):
    from helpers import REPO_ROOT, run_cli, swift_executable

    from moon_swift.core.settings import load_settings

    data = tmp_path / "train.jsonl"
    row = {"messages": requests[0]["messages"], "positive_messages": [requests[2]["messages"]],
           "positive_images": [requests[2]["images"]]}  # fmt: skip
    data.write_text((json.dumps(row) + "\n") * 4)
    system = "Represent the product for retrieval."
    result = run_cli([swift_executable(), "sft", str(REPO_ROOT / "recipes" / "tiny_cpu.yaml"), "--model",
                      str(upcycled), "--dataset", str(data), "--output_dir", str(tmp_path / "out"), "--max_steps",
                      "1", "--save_steps", "1", "--per_device_train_batch_size", "2", "--system", system])  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    checkpoint = tmp_path / "out" / "checkpoint-1"
    assert load_settings(checkpoint).system == system
    via_swift = ProductEncoder(str(checkpoint)).encode(requests, progress=False)  # no --system: the checkpoint's
    np.testing.assert_allclose(transformers_embeddings(checkpoint, requests), via_swift, atol=1e-5, rtol=0)
    from transformers import AutoProcessor

    from moon_swift.modeling.chat_format import moon_chat_template

    no_system = AutoProcessor.from_pretrained(checkpoint)
    no_system.chat_template = moon_chat_template(None)
    assert np.abs(transformers_embeddings(checkpoint, requests, no_system) - via_swift).max() > 1e-4  # it is used
