"""Batched embeddings from a MOON checkpoint through swift's own loader and ``moon`` template.

Going through swift's template (not a re-implementation) guarantees that evaluation sees exactly
the token sequences and image sizes training saw.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..data.records import ProductRecord
from ..data.swift_rows import product_messages


def query_request(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def image_query_request(image: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "<image>"}], "images": [image]}


def product_request(record: ProductRecord, **parts: bool) -> dict[str, Any]:
    """``parts``: ``with_title`` / ``with_fields`` (category and attributes), both on by default."""
    return {"messages": product_messages(record, **parts), "images": list(record.images)}


class Encoder:
    """Requests (``{"messages": ..., "images": ...}``) in, one L2-normalised embedding row per request out."""

    def encode(self, requests: Sequence[dict[str, Any]], *, desc: str = "encode", progress: bool = True) -> np.ndarray:
        raise NotImplementedError

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        return self.encode([query_request(text) for text in texts], **kwargs)

    def encode_products(
        self, records: Sequence[ProductRecord], *, with_title: bool = True, with_fields: bool = True, **kwargs: Any
    ) -> np.ndarray:
        requests = [product_request(r, with_title=with_title, with_fields=with_fields) for r in records]
        return self.encode(requests, **kwargs)


class ProductEncoder(Encoder):
    """Loads ``model_dir`` (plus optional LoRA ``adapters``) as swift model type ``moon``."""

    def __init__(
        self,
        model_dir: str,
        *,
        adapters: Sequence[str] = (),
        batch_size: int = 16,
        torch_dtype: torch.dtype = torch.float32,
        device_map: str = "cpu",
        max_pixels: int | None = None,
        cache_dir: str | Path | None = None,
    ):
        """``cache_dir``: keep every encoded batch of requests on disk, keyed by the model's files,
        the adapters, the image budget and the requests (image files by size and mtime)."""
        from swift.model import get_model_processor
        from swift.template import get_template

        import moon_swift.register as moon_register

        moon_register.register_all()
        model, processor = get_model_processor(
            model_dir, model_type="moon", task_type="embedding", torch_dtype=torch_dtype, device_map=device_map
        )
        if adapters:
            from swift.tuners import Swift

            model = Swift.from_pretrained(model, adapters[0])
        self.model = model.eval()
        self.template = get_template(processor, template_type="moon", max_pixels=max_pixels)
        self.template.model = self.model
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        views = self.template._image_views.settings  # crops change the embedding: part of the cache key
        boxes = _stat(views.boxes) if views.boxes else None
        self._fingerprint = _files_fingerprint([model_dir, *adapters]) + f"|max_pixels={max_pixels}|{views}|{boxes}"

    def encode(self, requests: Sequence[dict[str, Any]], *, desc: str = "encode", progress: bool = True) -> np.ndarray:
        """L2-normalised embeddings, one row per request (``{"messages": ..., "images": ...}``)."""
        if self.cache_dir is None:
            return self._encode(requests, desc=desc, progress=progress)
        key = hashlib.sha256((self._fingerprint + _requests_fingerprint(requests)).encode()).hexdigest()[:32]
        path = self.cache_dir / f"{key}.npy"
        if path.is_file():
            return np.load(path)
        embeddings = self._encode(requests, desc=desc, progress=progress)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings)
        return embeddings

    @torch.inference_mode()
    def _encode(self, requests: Sequence[dict[str, Any]], *, desc: str, progress: bool) -> np.ndarray:
        """Template encoding (image decoding, tokenizing) runs in threads, one batch ahead of the model."""
        chunks = []
        batches = [requests[start : start + self.batch_size] for start in range(0, len(requests), self.batch_size)]
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            pending = [pool.submit(self.template.encode, request) for request in batches[0]] if batches else []
            for index in tqdm(range(len(batches)), desc=desc, disable=not progress, unit="batch"):
                encoded = [future.result() for future in pending]
                if index + 1 < len(batches):
                    pending = [pool.submit(self.template.encode, request) for request in batches[index + 1]]
                inputs = self.template.data_collator(encoded)
                _, inputs = self.template.pre_forward_hook(self.model, None, inputs)
                chunks.append(self.model(**inputs).last_hidden_state.float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self.model.config.text_config.hidden_size), dtype=np.float32)
        return np.concatenate(chunks)


def _stat(path: str) -> str:
    try:
        info = os.stat(path)
        return f"{path}:{info.st_size}:{info.st_mtime_ns}"
    except OSError:
        return f"{path}:missing"


def _files_fingerprint(directories: Sequence[str]) -> str:
    parts = []
    for directory in directories:
        root = Path(directory)
        files = (
            sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".json", ".bin")) if root.is_dir() else []
        )
        parts += [str(root.resolve())] + [_stat(str(p)) for p in files]
    return "|".join(parts)


def _requests_fingerprint(requests: Sequence[dict[str, Any]]) -> str:
    images = sorted({i for r in requests for i in r.get("images", []) if isinstance(i, str)})
    return json.dumps(list(requests), sort_keys=True, ensure_ascii=False) + "|".join(_stat(i) for i in images)
