"""The ``moon`` template as swift builds it: the checkpoint's embedding settings, overridable by environment."""

from __future__ import annotations

from ...core.settings import EmbeddingSettings
from ...template.moon_template import MoonTemplate
from .environment import resolve_settings


class SwiftMoonTemplate(MoonTemplate):
    """:class:`MoonTemplate` whose settings the ``MOON_*`` variables may override (see :mod:`.environment`)."""

    def resolve_settings(self, saved: EmbeddingSettings, source: str | None) -> EmbeddingSettings:
        return resolve_settings(saved, source, training=self.is_training)
