"""Batched embeddings from a MOON checkpoint: swift's own ``TransformersEngine`` (what ``swift deploy``
serves) behind an on-disk embedding cache.

Encoding through swift's engine and its registered ``moon`` template (not a re-implementation) means
evaluation sees exactly the token sequences, image views and sizes that training and serving see.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import MoonInputError
from ..core.settings import EMBEDDING_FIELDS, base_identity, load_settings
from ..data.records import ProductRecord
from ..data.swift_rows import product_messages

DTYPES = ("float32", "bfloat16", "float16")


def query_request(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def image_query_request(image: str, text: str = "") -> dict[str, Any]:
    """A photo query, optionally with text (a multimodal query): the photo first, as in training rows."""
    return {"messages": [{"role": "user", "content": "<image>" + text}], "images": [image]}


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


def default_device_dtype(device: str | None = None, dtype: str | None = None) -> tuple[str, str]:
    """``--device`` / ``--dtype``: CUDA and bfloat16 when a GPU is there, else the CPU and float32."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MoonInputError(f"--device {device}: no CUDA device is available here", field="--device")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if dtype not in DTYPES:
        raise MoonInputError(f"--dtype must be one of {DTYPES}, got {dtype!r}", field="--dtype")
    return device, dtype


class ProductEncoder(Encoder):
    """Loads ``model_dir`` (plus LoRA ``adapters``, applied in order) in swift's ``TransformersEngine`` as model
    type ``moon`` and encodes requests in batches of ``batch_size``.

    ``cache_dir``: keep every encoded list of requests on disk, keyed by the model's and adapters' files,
    the dtype, the image budget, the embedding settings (and their box store) and the requests themselves.
    """

    def __init__(
        self,
        model_dir: str,
        *,
        adapters: Sequence[str] = (),
        batch_size: int = 16,
        device: str | None = None,
        dtype: str | None = None,
        max_pixels: int | None = None,
        cache_dir: str | Path | None = None,
    ):
        import torch
        from swift.infer_engine import TransformersEngine
        from swift.model import MODEL_MAPPING

        if "moon" not in MODEL_MAPPING:
            raise MoonInputError(
                "swift has no model type 'moon': moon-swift's start-up hook is off (MOON_SWIFT_AUTOLOAD=0)? Import "
                "moon_swift.integrations.swift.plugin first",
                field="model_type",
            )
        adapters = [str(a) for a in adapters]
        check_adapters(model_dir, adapters)
        self.device, self.dtype = default_device_dtype(device, dtype)
        self.engine = TransformersEngine(model_dir, adapters=adapters, model_type="moon", task_type="embedding",
                                         torch_dtype=getattr(torch, self.dtype), device_map=self.device,
                                         max_batch_size=batch_size)  # fmt: skip
        self.model = self.engine.model
        self.template = self.engine.template
        self.template.use_checkpoints(list(reversed(adapters)))  # the last adapter's settings first
        if max_pixels is not None:
            self.template.max_pixels = max_pixels
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        settings = self.template.embedding_settings  # resolved now: a bad setting stops before any encoding
        boxes = _stat(settings.boxes) if settings.boxes else None
        self._fingerprint = (_files_fingerprint([model_dir, *adapters]) + f"|{self.dtype}|max_pixels={max_pixels}|"
                             + json.dumps(settings.to_dict(), sort_keys=True) + f"|{boxes}")  # fmt: skip

    def encode(self, requests: Sequence[dict[str, Any]], *, desc: str = "encode", progress: bool = True) -> np.ndarray:
        """L2-normalised float32 embeddings, one row per request (``{"messages": ..., "images": ...}``)."""
        if self.cache_dir is None:
            return self._encode(requests, progress=progress)
        key = hashlib.sha256((self._fingerprint + _requests_fingerprint(requests)).encode()).hexdigest()[:32]
        path = self.cache_dir / f"{key}.npy"
        if path.is_file():
            return np.load(path)
        embeddings = self._encode(requests, progress=progress)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings)
        return embeddings

    def _encode(self, requests: Sequence[dict[str, Any]], *, progress: bool) -> np.ndarray:
        from swift.infer_engine import InferRequest

        if not requests:
            return np.zeros((0, self.model.config.text_config.hidden_size), dtype=np.float32)
        responses = self.engine.infer([InferRequest(**request) for request in requests], use_tqdm=progress)
        return np.asarray([response.data[0].embedding for response in responses], dtype=np.float32)


def check_adapters(model_dir: str, adapters: Sequence[str]) -> None:
    """Every adapter exists, was trained on this base (where it recorded its base), and the adapters agree on
    the settings that change the embedding; otherwise a message naming the setting and both values."""
    identity = base_identity(model_dir)
    seen: tuple[str, dict] | None = None
    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise MoonInputError("not a LoRA adapter checkpoint (no adapter_config.json)", file=adapter)
        settings = load_settings(adapter)
        if settings is None:
            continue
        recorded = (settings.training or {}).get("base_model", {}).get("identity")
        if recorded and identity and recorded != identity:
            raise MoonInputError(
                f"the adapter was trained on another base model: base identity {recorded} (saved in its "
                f"moon_embedding.json), the given base {model_dir} has {identity}",
                file=adapter,
                field="base_model",
            )
        fields = {name: getattr(settings, name) for name in EMBEDDING_FIELDS}
        fields["detector"] = (settings.detector or {}).get("fingerprint")  # the same detector anywhere on disk
        if seen is not None and seen[1] != fields:
            differing = [name for name in EMBEDDING_FIELDS if seen[1][name] != fields[name]]
            name = differing[0]
            raise MoonInputError(
                f"adapters disagree on {name}: {seen[1][name]!r} in {seen[0]}, {fields[name]!r} here; apply them "
                "one at a time",
                file=adapter,
                field=name,
            )
        seen = (adapter, fields)


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
