"""swift's embedding trainer, plus what every moon training needs without a flag.

Registered through swift's ``TrainerFactory`` for ``--task_type embedding``. For a MOON model it adds
the callbacks that write the embedding settings (and ``moon_infonce``'s queue) into every checkpoint; for
a MoE one it also logs routing, gives the injected aux-loss gradient the main loss's factor at every step
and refuses fp16. For any other model it is swift's ``EmbeddingTrainer`` unchanged.
"""

from __future__ import annotations

import torch
from swift.trainers import EmbeddingTrainer

from ...losses.momentum_encoder import trained_identity
from ...losses.moon_infonce import MOON_INFONCE, MoonInfoNCELoss
from ...modeling import MoonModel
from .cached_steps import CachedSteps
from .callbacks import (
    EmbeddingSettingsCallback,
    MoonMoeCallback,
    QueueCheckpointCallback,
    guided_moe_layers,
    main_loss_factor,
    refuse_fp16,
)
from .drift_probe import DriftProbe
from .lora import train_moon_modules_in_full
from .momentum import MomentumCallback, MomentumKeys, embed_without_grad, refuse_unsupported_momentum


def is_moon_model(model) -> bool:
    """True for a MoonModel, also inside peft / DeepSpeed wrappers."""
    return any(isinstance(module, MoonModel) for module in model.modules())


class MatryoshkaDims:
    """``moon_infonce`` called with swift's ``--mrl_dims`` (the queue and options are read from the trainer's
    ``embedding_loss``)."""

    def __init__(self, loss: MoonInfoNCELoss, dims: dict[int, float]):
        self.loss, self.dims = loss, dims

    def __call__(self, outputs, labels, **kwargs):
        return self.loss(outputs, labels, mrl_dims=self.dims, **kwargs)


class MoonEmbeddingTrainer(EmbeddingTrainer):
    #: the loss object swift built for ``--loss_type`` (``compute_loss_func`` may be a wrapper around it)
    embedding_loss = None
    #: the model's GuidedMoE layers (empty for a dense model)
    moe_layers: tuple = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.mrl_dims and isinstance(self.embedding_loss, MoonInfoNCELoss):
            # swift's Matryoshka wrapper passes only the sliced vectors: group ids, the learned temperature and
            # the queue would be lost. moon_infonce takes every dimension in one call instead.
            self.compute_loss_func = MatryoshkaDims(self.embedding_loss, dict(self.args.mrl_dims))
        if is_moon_model(self.model):
            train_moon_modules_in_full(self.model)  # routers, learned temperature: under LoRA too
            self.add_callback(EmbeddingSettingsCallback(self.args, self))
        self.moe_layers = tuple(guided_moe_layers(self.model))
        self.cached_steps = CachedSteps.for_trainer(self)  # MOON_GRAD_CACHE_ROWS; refuses --padding_free here
        if self.moe_layers:
            refuse_fp16(self.args)
            if not any(isinstance(callback, MoonMoeCallback) for callback in self.callback_handler.callbacks):
                self.add_callback(MoonMoeCallback(self.args, self))  # unless --callbacks moon_moe added it
        if callable(getattr(self.embedding_loss, "save_queue", None)):
            self.add_callback(QueueCheckpointCallback(self.args, self))
        self._setup_temporal_negatives()

    def _setup_temporal_negatives(self) -> None:
        """moon_infonce's momentum encoder and drift probe (a moon model with ``--loss_type moon_infonce``)."""
        self.momentum_keys, self.drift_probe = None, None
        loss = self.embedding_loss
        if not isinstance(loss, MoonInfoNCELoss):
            return
        refuse_unsupported_momentum(self.args, loss.options)
        loss.model_identity = trained_identity(self.model)
        if loss.options.uses_momentum:
            self.momentum_keys = MomentumKeys(self.args, loss.options.momentum)
            self.add_callback(MomentumCallback(self.args, self, self.momentum_keys))
        self.drift_probe = DriftProbe(self.args.logging_steps if self.args.logging_steps >= 1 else 10)

    def _before_training_loss(self, model, inputs) -> None:
        """What ``moon_infonce`` needs beside the batch's own forward: the momentum encoder's embeddings of the
        batch (before that forward, so the MoE routing logs stay the trained forward's) and the drift probe."""
        loss = self.embedding_loss
        embed = self.cached_steps.embed_without_grad if self.cached_steps is not None else embed_without_grad
        if self.drift_probe is not None:
            self.drift_probe.observe(model, inputs, self.state.global_step, self.custom_metrics["train"], embed=embed)
        if self.momentum_keys is not None and loss.wants_momentum_keys(self.state.global_step):
            loss.momentum_keys = self.momentum_keys.keys(self.model, model, inputs, embed=embed)

    def create_loss_and_eval_metric(self, args):
        if args.loss_type == MOON_INFONCE and args.eval_metric == "paired":
            # swift picks its pair-regression metric for every embedding loss but infonce; moon_infonce's rows
            # (anchor, positive, negatives) are infonce's layout, and the paired metric fails on them
            args.eval_metric = "infonce"
        created = super().create_loss_and_eval_metric(args)
        self.embedding_loss = created.get("compute_loss_func")
        return created

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """swift's, after giving the MoE layers' injected aux-loss gradient the factor the main loss gets
        (gradient accumulation, see :func:`main_loss_factor`); set before the forward that injects it."""
        scale = main_loss_factor(self, num_items_in_batch)
        for moe in self.moe_layers:
            moe.aux_grad_scale = scale
        if model.training:
            self._before_training_loss(model, inputs)
        if self.cached_steps is not None and model.training and torch.is_grad_enabled():
            return self.cached_steps.compute_loss(super().compute_loss, model, inputs, return_outputs=return_outputs,
                                                  num_items_in_batch=num_items_in_batch)  # fmt: skip
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def train(self, *args, **kwargs):
        """transformers' ``train``, after checking the files of the checkpoint it resumes from (swift passes
        ``--resume_from_checkpoint`` as the first argument): a truncated one stops here, naming the file."""
        from transformers.trainer_utils import get_last_checkpoint

        from .checkpoint_files import check_checkpoint

        resume = kwargs["resume_from_checkpoint"] if "resume_from_checkpoint" in kwargs else (args[0] if args else None)
        if resume is True:  # transformers: the newest checkpoint of output_dir
            resume = get_last_checkpoint(self.args.output_dir)
        if resume:
            check_checkpoint(resume, world_size=self.args.world_size)
        return super().train(*args, **kwargs)
