"""Trainer callbacks: ``moon_moe`` (MoE aux-loss scaling and routing logs, ``--callbacks moon_moe``), and the
two that every moon training gets without a flag (added by :mod:`.trainer`): the embedding settings and the
``moon_infonce`` negative queue written into every checkpoint."""

from __future__ import annotations

import os
from typing import Any

from swift.callbacks.base import TrainerCallback

from ...modeling.guided_moe import GuidedMoE

MOON_MOE_CALLBACK = "moon_moe"


def guided_moe_layers(model) -> list[GuidedMoE]:
    """Every GuidedMoE inside ``model`` (through DeepSpeed / peft wrappers), in layer order."""
    return [module for module in model.modules() if isinstance(module, GuidedMoE)]


def _checkpoint_dir(args, state) -> str:
    return os.path.join(args.output_dir, f"checkpoint-{state.global_step}")


class MoonMoeCallback(TrainerCallback):
    """Keeps the MoE auxiliary loss on the same scale as the main loss, and logs routing.

    * The aux loss is injected into the backward pass inside each MoE layer (see
      :mod:`moon_swift.modeling.guided_moe`); swift divides the main loss by the gradient
      accumulation steps, so the injected gradient is scaled by the same factor here.
    * Logged with swift's own metrics (averaged over the logging interval and over ranks):
      ``moe_aux_loss`` (sum over layers, weighted) and ``moe_load_l{layer}_e{expert}``, the fraction of
      routed (token, expert) assignments each general expert received (1 / num_experts is balanced).
    """

    def on_train_begin(self, args, state, control, **kwargs):
        scale = 1.0 / max(1, args.gradient_accumulation_steps)
        for moe in guided_moe_layers(self.trainer.model):
            moe.aux_grad_scale = scale

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
        settings = self.trainer.template.embedding_settings.replace(training=training_record(self.trainer))
        settings.save(checkpoint)


def training_record(trainer) -> dict[str, Any]:
    """The run's loss (and ``moon_infonce``'s options) and the model it started from, recorded beside the
    settings: for the model card, and so that an adapter is never applied to another base."""
    from dataclasses import asdict

    from ...core.settings import base_identity

    loss = getattr(trainer, "compute_loss_func", None)
    options = getattr(loss, "options", None)
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
        self.trainer.compute_loss_func.save_queue(_checkpoint_dir(args, state))
