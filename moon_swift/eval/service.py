"""Embeddings from a served MOON model (``swift deploy``'s OpenAI-style ``/v1/embeddings``).

``swift eval`` deploys the checkpoint and hands evalscope only a URL, so its benchmark encodes
through the service. Images travel inline (base64), so the server need not share the client's disk.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from tqdm import tqdm

from ..core.images import URL_PREFIXES, read_image
from .encode import Encoder


def inline_image(image: Any) -> str:
    """An image as the server can take it whatever its disk: a URL as it is, anything else (a path, bytes, an
    HF ``{"bytes", "path"}`` dict, a PIL image, base64) as base64 of its encoded bytes."""
    if isinstance(image, str) and image.startswith(URL_PREFIXES):
        return image
    loaded = read_image(image, field="images")
    if loaded.data is None:  # an in-memory PIL image: send it as PNG
        buffer = io.BytesIO()
        loaded.image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")
    return base64.b64encode(loaded.data).decode("ascii")


def embedding_request(request: dict[str, Any]) -> tuple[str, list[str]]:
    """(text, inline images) of one single-turn request, as ``/v1/embeddings`` takes them."""
    (message,) = request["messages"]
    return message["content"], [inline_image(image) for image in request.get("images", [])]


class ServiceEncoder(Encoder):
    """Posts each request to ``{base_url}/embeddings``; ``workers`` requests are in flight at once."""

    def __init__(self, base_url: str, *, model: str, api_key: str = "EMPTY", workers: int = 8, timeout: float = 300):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=2)
        self.model = model
        self.workers = workers

    def _embed(self, request: dict[str, Any]) -> list[float]:
        text, images = embedding_request(request)
        response = self.client.embeddings.create(model=self.model, input=text, extra_body={"images": images})
        return response.data[0].embedding

    def encode(self, requests: Sequence[dict[str, Any]], *, desc: str = "encode", progress: bool = True) -> np.ndarray:
        with ThreadPoolExecutor(self.workers) as pool:
            rows = list(tqdm(pool.map(self._embed, requests), total=len(requests), desc=desc, disable=not progress))
        return np.asarray(rows, dtype=np.float32).reshape(len(requests), -1)
