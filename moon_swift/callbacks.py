"""swift callback ``moon_moe``: MoE aux-loss scaling and logging, and a record of moon's training
settings in every checkpoint (``--callbacks moon_moe``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

from swift.callbacks.base import TrainerCallback

from .modeling.guided_moe import GuidedMoE

MOON_MOE_CALLBACK = "moon_moe"


def guided_moe_layers(model) -> list[GuidedMoE]:
    """Every GuidedMoE inside ``model`` (through DeepSpeed / peft wrappers), in layer order."""
    return [module for module in model.modules() if isinstance(module, GuidedMoE)]


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

    def on_save(self, args, state, control, **kwargs):
        """``moon_training.json`` beside the weights: what swift's ``args.json`` cannot know (the image
        views and detector, ``moon_infonce`` options), for the model card ``swift export`` writes."""
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(checkpoint):
            with open(os.path.join(checkpoint, TRAINING_RECORD), "w", encoding="utf-8") as file:
                json.dump(training_record(), file, indent=2)


TRAINING_RECORD = "moon_training.json"


def training_record() -> dict[str, Any]:
    """moon's environment-driven settings of this process (image views, detector, moon_infonce)."""
    from .image_views import ViewSettings
    from .loss import MoonInfoNCEOptions

    views = ViewSettings.from_env()
    detector = None
    if views.boxes:
        with open(views.boxes, encoding="utf-8") as file:
            first = file.readline()
        detector = json.loads(first).get("detector") if first.strip() else None
    return {"image_views": views.views, "boxes": views.boxes, "detector": detector,
            "moon_infonce": asdict(MoonInfoNCEOptions.from_env())}  # fmt: skip


# Registered here too: the start-up hook may have fired while this module was half-imported.
from .register import register_callbacks  # noqa: E402

register_callbacks()
