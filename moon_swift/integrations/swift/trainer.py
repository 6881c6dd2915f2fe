"""swift's embedding trainer, plus what every moon training needs without a flag.

Registered through swift's ``TrainerFactory`` for ``--task_type embedding``. For a MOON model it adds
the callbacks that write the embedding settings (and ``moon_infonce``'s queue) into every checkpoint;
for any other model it is swift's ``EmbeddingTrainer`` unchanged.
"""

from __future__ import annotations

from swift.trainers import EmbeddingTrainer

from ...modeling import MoonModel
from .callbacks import EmbeddingSettingsCallback, QueueCheckpointCallback


def is_moon_model(model) -> bool:
    """True for a MoonModel, also inside peft / DeepSpeed wrappers."""
    return any(isinstance(module, MoonModel) for module in model.modules())


class MoonEmbeddingTrainer(EmbeddingTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if is_moon_model(self.model):
            self.add_callback(EmbeddingSettingsCallback(self.args, self))
        if callable(getattr(self.compute_loss_func, "save_queue", None)):
            self.add_callback(QueueCheckpointCallback(self.args, self))
