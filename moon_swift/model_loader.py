"""The ms-swift loader for model type ``moon``."""

from __future__ import annotations

import json
import os

from swift.model import ModelLoader
from swift.model.models.qwen import Qwen2_5VLLoader
from transformers import AutoModel, PretrainedConfig

from .errors import MoonInputError

MOON_MODEL_TYPE = "moon"


def read_model_type(model_dir: str) -> str | None:
    """``model_type`` from ``model_dir/config.json`` (None if there is no config)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file).get("model_type")


class MoonLoader(Qwen2_5VLLoader):
    """Loads a MOON checkpoint as :class:`~moon_swift.modeling.MoonModel` through ``AutoModel``.

    Loading through ``AutoModel`` is what keeps swift from adding its last-token pooling hook:
    ``MoonModel.forward`` already returns the mean-pooled, L2-normalised embedding.
    """

    def get_config(self, model_dir: str) -> PretrainedConfig:
        import moon_swift.modeling  # noqa: F401  (registers MoonConfig with AutoConfig)

        model_type = read_model_type(model_dir)
        if model_type != MOON_MODEL_TYPE:
            hint = (
                f"run `moon-swift upcycle --base {model_dir} --out <dir>` to turn it into a MOON checkpoint"
                if model_type in ("qwen2_5_vl", "qwen2_vl")
                else "MOON is built on Qwen2.5-VL or Qwen2-VL checkpoints"
            )
            raise MoonInputError(
                f"--model_type moon needs a MOON checkpoint, but config.json says model_type={model_type!r}; {hint}",
                file=os.path.join(model_dir, "config.json"),
                field="model_type",
            )
        if self.model_info.task_type != "embedding":
            raise MoonInputError(
                f"moon is an embedding model; got --task_type {self.model_info.task_type}, use --task_type embedding",
                field="task_type",
            )
        return super().get_config(model_dir)

    def get_processor(self, model_dir: str, config: PretrainedConfig):
        # Skip Qwen2VLLoader's qwen_vl_utils set-up: MoonTemplate sizes images itself, and
        # qwen_vl_utils imports torchvision, which CPU-only torch builds often cannot load.
        return ModelLoader.get_processor(self, model_dir, config)

    def get_model(self, model_dir: str, *args, **kwargs):
        self.auto_model_cls = self.auto_model_cls or AutoModel
        return super().get_model(model_dir, *args, **kwargs)
