"""The ms-swift loader for model type ``moon``."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator

from swift.model import ModelLoader
from swift.model.models.qwen import Qwen2_5VLLoader
from transformers import AutoModel, PretrainedConfig

from ...core.errors import MoonInputError

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
    ``MoonModel.forward`` already returns the mean-pooled, L2-normalised embedding. moon is registered
    with transformers natively, so nothing a checkpoint folder ships (``configuration_*.py``,
    ``modeling_*.py``) is ever run: swift's loaders default to ``trust_remote_code=True``.
    """

    default_trust_remote_code = False

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

    def get_model(self, model_dir: str, config: PretrainedConfig, *args, **kwargs):
        self.auto_model_cls = self.auto_model_cls or AutoModel
        _init_deepspeed_comm_for_zero3()
        atexit.register(_destroy_process_group)
        if config.moe_layers:
            from ...modeling.guided_moe import GuidedMoE

            # ZeRO-3 gathers a leaf module's parameters at once: experts that get no tokens on one
            # rank must not leave the other ranks waiting for their parameters.
            self.leaf_modules = [GuidedMoE]
        return super().get_model(model_dir, config, *args, **kwargs)


def _init_deepspeed_comm_for_zero3() -> None:
    """Let ``deepspeed.zero.Init`` see the real world size when training on CPU.

    With ``--use_cpu`` transformers starts torch.distributed (gloo) through accelerate but not
    DeepSpeed's communication layer, so ZeRO-3's partitioning at load time would assume one
    process. On GPUs transformers has already done this and the call is a no-op.
    """
    import torch.distributed as dist
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled() and dist.is_available() and dist.is_initialized():
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend())


def _destroy_process_group() -> None:
    """Tear the process group down before interpreter shutdown.

    swift leaves it alive at exit; with gloo on CPU a rank then sometimes aborts while its
    communication threads are destroyed ("terminate called without an active exception"), failing
    a run that finished and saved. Registered once per loaded model; a no-op without a group.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_REMOTE_CODE_WARNING = "with trust_remote_code=True"


def _is_moon_dir(model_dir: str) -> bool:
    try:
        return read_model_type(model_dir) == MOON_MODEL_TYPE
    except (OSError, ValueError):  # not ours to judge: swift reports it
        return False


class _NativeAutoConfig:
    """``AutoConfig`` as swift's model-info step calls it, with remote code refused."""

    @staticmethod
    def from_pretrained(model_dir: str, **kwargs):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_dir, **{**kwargs, "trust_remote_code": False})


class _DropRemoteCodeWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _REMOTE_CODE_WARNING not in record.getMessage()


@contextlib.contextmanager
def _without_remote_code(model_meta) -> Iterator[None]:
    native, warning = _NativeAutoConfig, _DropRemoteCodeWarning()
    model_meta.AutoConfig, original = native, model_meta.AutoConfig
    model_meta.logger.addFilter(warning)
    try:
        yield
    finally:
        model_meta.AutoConfig = original
        model_meta.logger.removeFilter(warning)


def refuse_remote_code_for_moon() -> None:
    """Wrap swift's ``_get_model_info`` so that a moon checkpoint's config is read without remote code.

    A patch, because swift 4.6 reads every checkpoint's config with ``trust_remote_code=True`` (and warns
    so) before any model loader is asked: a moon folder from the hub whose ``config.json`` has an
    ``auto_map`` would run its ``configuration_*.py`` there. Other model types are left as swift reads
    them. ``tests/integrations/swift/test_patches.py`` fails when the wrapped function changes.
    """
    from swift.model import model_meta

    original = model_meta._get_model_info
    if getattr(original, "moon_native", False):
        return

    @functools.wraps(original)
    def _get_model_info(model_dir, model_type, quantization_config):
        if not _is_moon_dir(model_dir):
            return original(model_dir, model_type, quantization_config)
        with _without_remote_code(model_meta):
            return original(model_dir, model_type, quantization_config)

    _get_model_info.moon_native = True
    model_meta._get_model_info = _get_model_info
