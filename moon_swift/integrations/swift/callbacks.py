"""Trainer callbacks and MoE training support.

Every moon training gets these without a flag (added by :mod:`.trainer`): ``moon_moe`` for a MoE model
(routing logs; ``--callbacks moon_moe`` is still accepted and adds nothing more), the embedding settings
and ``moon_infonce``'s negative queue written into every checkpoint. :func:`main_loss_factor` and
:func:`refuse_fp16` are what the trainer uses to keep the MoE auxiliary loss on the main loss's scale."""

from __future__ import annotations

import json
import os
from typing import Any

from swift.callbacks.base import TrainerCallback

from ...core.errors import MoonInputError
from ...modeling.chat_format import write_chat_template
from ...modeling.guided_moe import GuidedMoE

MOON_MOE_CALLBACK = "moon_moe"


def guided_moe_layers(model) -> list[GuidedMoE]:
    """Every GuidedMoE inside ``model`` (through DeepSpeed / peft wrappers), in layer order."""
    return [module for module in model.modules() if isinstance(module, GuidedMoE)]


def _checkpoint_dir(args, state) -> str:
    return os.path.join(args.output_dir, f"checkpoint-{state.global_step}")


def main_loss_factor(trainer, num_items_in_batch) -> float:
    """The factor the trainer applies to ``compute_loss_func``'s loss before backward (swift 4.6,
    transformers 5.x); the MoE layers inject their aux loss's gradient with the same factor.

    swift's ``Trainer.compute_loss`` divides by the (current) gradient accumulation steps when
    ``num_items_in_batch`` is given and the model accepts loss kwargs (``MoonModel.forward`` takes
    ``**kwargs``; embedding labels are counted, so this is the path taken). Otherwise transformers'
    ``training_step`` divides, unless it holds the loss already scaled (``loss_is_scaled_for_ga``, by
    default whenever a ``compute_loss_func`` is set). DeepSpeed does not scale again (``scale_wrt_gas=
    False``), nor does accelerate (swift sets its ``num_steps`` to 1). Averaging over ranks is not part
    of it: the losses account for the world size themselves. tests/e2e/test_gradient_equivalence.py
    checks the result against a run without accumulation.
    """
    steps = getattr(trainer, "current_gradient_accumulation_steps", None) or trainer.args.gradient_accumulation_steps
    steps = max(1, int(steps))
    if num_items_in_batch is not None and trainer.model_accepts_loss_kwargs:
        return 1.0 / steps  # swift's compute_loss; training_step then holds it scaled
    scaled = getattr(trainer, "loss_is_scaled_for_ga", None)
    if scaled is None:
        scaled = trainer.compute_loss_func is not None
    return 1.0 if scaled else 1.0 / steps


def deepspeed_config(args) -> dict:
    config = getattr(getattr(args, "hf_deepspeed_config", None), "config", None) or getattr(args, "deepspeed", None)
    if isinstance(config, str) and os.path.isfile(config):
        with open(config, encoding="utf-8") as file:
            config = json.load(file)
    return config if isinstance(config, dict) else {}


def refuse_fp16(args) -> None:
    """fp16 mixed precision scales the loss before backward (and unscales the gradients after); the
    gradient the MoE layers inject does not see that scale, so it would be off by the loss scale."""
    enabled = (deepspeed_config(args).get("fp16") or {}).get("enabled")
    if getattr(args, "fp16", False) or enabled is True or str(enabled).lower() == "true":
        raise MoonInputError(
            "a MoE moon model cannot train in fp16: the MoE auxiliary loss's gradient is injected in backward "
            "and does not see fp16 loss scaling. Train in bf16 (--bf16 true, or --torch_dtype bfloat16) or "
            "fp32 (--fp16 false --bf16 false), and leave fp16 disabled in the DeepSpeed config",
            field="fp16",
        )


class MoonMoeCallback(TrainerCallback):
    """Logs MoE routing with swift's own metrics (averaged over the logging interval and over ranks):
    ``moe_aux_loss`` (sum over layers, weighted) and ``moe_load_l{layer}_e{expert}``, the fraction of
    routed (token, expert) assignments each general expert received (1 / num_experts is balanced). Both
    are those of the global batch (see :meth:`GuidedMoE._aux_loss`).

    Added by the trainer for every MoE moon model; ``--callbacks moon_moe`` adds the same one (a second
    is not added). The aux loss's scale is set by the trainer at every step (:func:`main_loss_factor`).
    """

    def on_step_end(self, args, state, control, **kwargs):
        metrics = self.trainer.custom_metrics["train"]
        layers = guided_moe_layers(self.trainer.model)
        aux = [float(moe.last_aux_loss) for moe in layers if moe.last_aux_loss is not None]
        if aux:
            metrics["moe_aux_loss"].update(sum(aux))
        for moe in layers:
            if moe.last_load is not None:
                for expert, fraction in enumerate(moe.last_load.tolist()):
                    metrics[f"moe_load_l{moe.layer_index}_e{expert}"].update(fraction)


class EmbeddingSettingsCallback(TrainerCallback):
    """Writes ``moon_embedding.json`` into every checkpoint: the settings the template encoded with
    (image views, detector and box policy, missing-box policy, markup, chat format), plus the loss of
    the run, so that eval, deploy and export embed exactly as training did."""

    def on_save(self, args, state, control, **kwargs):
        checkpoint = _checkpoint_dir(args, state)
        if not (state.is_world_process_zero and os.path.isdir(checkpoint)):
            return
        template = self.trainer.template
        settings = template.embedding_settings.replace(
            system=template.template_meta.default_system, training=training_record(self.trainer)
        )  # the chat format this run encoded with (--system), whatever the checkpoint it started from said
        settings.save(checkpoint)
        write_chat_template(checkpoint, settings.system)  # transformers' chat template: the same system turn


def training_record(trainer) -> dict[str, Any]:
    """The run's loss (and ``moon_infonce``'s options) and the model it started from, recorded beside the
    settings: for the model card, and so that an adapter is never applied to another base."""
    from dataclasses import asdict

    from ...core.settings import base_identity

    options = getattr(getattr(trainer, "embedding_loss", None), "options", None)
    base = getattr(trainer.template.model_info, "model_dir", None)
    record: dict[str, Any] = {
        "loss_type": getattr(trainer.args, "loss_type", None),
        "base_model": {"path": base, "identity": base_identity(base) if base else None},
    }
    if options is not None:
        record["moon_infonce"] = asdict(options)
    return record


class QueueCheckpointCallback(TrainerCallback):
    """Saves ``moon_infonce``'s negative queue into every checkpoint (one file per rank); the loss reads it
    back on ``--resume_from_checkpoint``."""

    def on_save(self, args, state, control, **kwargs):
        self.trainer.embedding_loss.save_queue(_checkpoint_dir(args, state))
