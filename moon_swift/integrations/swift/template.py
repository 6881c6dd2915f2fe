"""The ``moon`` template as swift builds it: the checkpoint's embedding settings, overridable by environment."""

from __future__ import annotations

import logging

from ...core.settings import EmbeddingSettings
from ...template.moon_template import MoonTemplate
from .environment import resolve_settings

logger = logging.getLogger("moon_swift")


class SwiftMoonTemplate(MoonTemplate):
    """:class:`MoonTemplate` whose settings the ``MOON_*`` variables may override (see :mod:`.environment`)."""

    def resolve_settings(self, saved: EmbeddingSettings, source: str | None) -> EmbeddingSettings:
        model = getattr(self, "model", None)
        if not self.is_training and not self.settings_dirs and getattr(model, "peft_config", None):
            logger.warning(
                "moon: adapters are applied, but swift gives the template only the base model's directory: the "
                "embedding settings come from %s. If an adapter was trained with other settings (image views, "
                "crops), merge it first (`swift export --merge_lora true` keeps its moon_embedding.json) or use "
                "`moon-swift eval --adapter`",
                source or "the defaults",
            )
        return resolve_settings(saved, source, training=self.is_training)
