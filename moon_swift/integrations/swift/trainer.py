"""swift's embedding trainer, plus what every moon training needs without a flag.

Registered through swift's ``TrainerFactory`` for ``--task_type embedding``. For a MOON model it adds
the callbacks that write the embedding settings (and ``moon_infonce``'s queue) into every checkpoint; for
a MoE one it also logs routing, gives the injected aux-loss gradient the main loss's factor at every step
and refuses fp16. For any other model it is swift's ``EmbeddingTrainer`` unchanged.
"""

from __future__ import annotations

from swift.trainers import EmbeddingTrainer

from ...losses.moon_infonce import MOON_INFONCE, MoonInfoNCELoss
from ...modeling import MoonModel
from .callbacks import (
    EmbeddingSettingsCallback,
    MoonMoeCallback,
    QueueCheckpointCallback,
    guided_moe_layers,
    main_loss_factor,
    refuse_fp16,
)
from .lora import train_moon_modules_in_full


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
        if self.moe_layers:
            refuse_fp16(self.args)
            if not any(isinstance(callback, MoonMoeCallback) for callback in self.callback_handler.callbacks):
                self.add_callback(MoonMoeCallback(self.args, self))  # unless --callbacks moon_moe added it
        if callable(getattr(self.embedding_loss, "save_queue", None)):
            self.add_callback(QueueCheckpointCallback(self.args, self))

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
