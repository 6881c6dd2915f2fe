"""MoonTemplate: swift's Qwen2.5-VL template, adapted to product embeddings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch
from PIL import Image
from swift.template.template_inputs import StdTemplateInputs
from swift.template.templates.qwen import Qwen2_5VLTemplate, QwenTemplateMeta
from swift.template.utils import Context

from ..core.errors import MoonInputError
from ..core.images import fit_image, read_image
from ..core.markup import UNKNOWN_GROUP, MarkerIds, group_id_hash, take_group_ids, to_markers
from ..core.settings import EmbeddingSettings, settings_of
from .views import ImageViews, expand_image_tags

logger = logging.getLogger(__name__)

MOON_TEMPLATE_TYPE = "moon"


class MoonTemplate(Qwen2_5VLTemplate):
    """Qwen2.5-VL chat encoding for MOON.

    Pooling happens in :class:`~moon_swift.modeling.MoonModel` (mean over valid tokens), so the
    per-token outputs must stay aligned with the attention mask: padding-free packing, which
    concatenates rows, is therefore not supported. Inputs are checked before encoding so that a
    missing image or an empty text fails with the path and field instead of deep inside PIL/torch.

    What changes the embedding besides the weights (image views, crops, chat format) comes from the
    checkpoint's :class:`~moon_swift.core.settings.EmbeddingSettings`: by default those saved in
    the model directory; :meth:`use_checkpoints` names adapter directories to read first, and
    :meth:`resolve_settings` is where a subclass (swift's registered ``moon`` template) applies overrides.
    """

    support_padding_free = False
    #: directories whose saved settings apply, first found wins (adapters before the base model)
    settings_dirs: list[str] | None = None

    def use_checkpoints(self, directories: list[str]) -> None:
        """Read the embedding settings from ``directories`` (in order) instead of the model directory alone."""
        self.settings_dirs = [str(d) for d in directories]
        self.__dict__.pop("embedding_settings", None)
        self.__dict__.pop("_image_views", None)

    def _checkpoint_dirs(self) -> list[str]:
        model_dir = getattr(getattr(self, "model_info", None), "model_dir", None)
        return list(self.settings_dirs or []) + ([model_dir] if model_dir else [])

    def resolve_settings(self, saved: EmbeddingSettings, source: str | None) -> EmbeddingSettings:
        """The settings to encode with, given those saved in the checkpoint (``source``: where; None: defaults)."""
        return saved

    @cached_property
    def embedding_settings(self) -> EmbeddingSettings:
        saved, source = settings_of(self._checkpoint_dirs())
        settings = self.resolve_settings(saved, source)
        if not self.is_training and self.template_meta.default_system is None and settings.system is not None:
            self.template_meta.default_system = settings.system  # the checkpoint was trained with --system
        if settings.system != self.template_meta.default_system and not self.is_training:
            raise MoonInputError(
                f"chat format: the checkpoint embeds with system turn {settings.system!r}, this template has "
                f"{self.template_meta.default_system!r} (--system)",
                file=source,
                field="system",
            )
        return settings

    @cached_property
    def _image_views(self) -> ImageViews:
        return ImageViews(self.embedding_settings)

    def _get_max_pixels(self, inputs=None) -> None:
        # ``--max_pixels`` is applied in ``replace_tag`` (together with the 28-pixel grid), not by
        # swift's generic rescale, which needs torchvision.
        return None

    def _image_budget(self) -> tuple[int, int, int]:
        """(factor, min_pixels, max_pixels): the checkpoint's image processor, capped by ``--max_pixels``."""
        image_processor = self.processor.image_processor
        factor = image_processor.patch_size * image_processor.merge_size
        size = getattr(image_processor, "size", None) or {}
        min_pixels = size.get("shortest_edge") or getattr(image_processor, "min_pixels", None) or factor * factor * 4
        max_pixels = size.get("longest_edge") or getattr(image_processor, "max_pixels", None) or 1280 * factor * factor
        if self.max_pixels is not None:
            max_pixels = min(max_pixels, self.max_pixels)
        return factor, min(min_pixels, max_pixels), max_pixels

    def replace_tag(
        self, media_type: Literal["image", "video", "audio"], index: int, inputs: StdTemplateInputs
    ) -> list[Context]:
        if media_type != "image":
            raise MoonInputError(f"moon embeds products from images and text; got a {media_type}", field=media_type)
        factor, min_pixels, max_pixels = self._image_budget()
        image = inputs.images[index]
        if not isinstance(image, Image.Image):
            image = read_image(image, field=f"images[{index}]").image
        inputs.images[index] = fit_image(image, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        return ["<|vision_start|><|image_pad|><|vision_end|>"]

    def _encode(self, inputs: StdTemplateInputs) -> dict[str, Any]:
        """Qwen2.5-VL encoding plus ``token_type_ids``: 1 on category tokens, 2 on attribute tokens."""
        group_id = take_group_id(inputs)
        mark_product_fields(inputs)
        encoded = super()._encode(inputs)
        keep, types = self._marker_ids.split(encoded["input_ids"])
        if not all(keep):
            _drop_positions(encoded, keep)
        encoded["token_type_ids"] = types
        encoded["group_id"] = UNKNOWN_GROUP if group_id is None else group_id_hash(group_id)
        return encoded

    @cached_property
    def _marker_ids(self) -> MarkerIds:
        return MarkerIds.of(self.processor.tokenizer)

    def _data_collator(self, batch: list[dict[str, Any]], *, padding_to: int | None = None) -> dict[str, Any]:
        groups = [row.pop("group_id", UNKNOWN_GROUP) for row in batch]
        collated = super()._data_collator(batch, padding_to=padding_to)
        if any(group != UNKNOWN_GROUP for group in groups):
            collated["group_ids"] = torch.tensor(groups, dtype=torch.long)
        return collated

    def _truncate(self, input_ids, labels, encoded, truncation_strategy):
        types = encoded.get("token_type_ids")
        if types is None:
            return super()._truncate(input_ids, labels, encoded, truncation_strategy)
        kept = self._kept_positions(input_ids, truncation_strategy)
        input_ids, labels = super()._truncate(input_ids, labels, encoded, truncation_strategy)
        if len(kept) != len(input_ids):
            raise RuntimeError(
                f"swift's truncation kept {len(input_ids)} tokens but its position mask {len(kept)}: the moon template "
                "needs updating for this swift version"
            )
        encoded["token_type_ids"] = [types[position] for position in kept]
        return input_ids, labels

    def _kept_positions(self, input_ids: list[int], truncation_strategy: str) -> list[int]:
        """The positions swift's own truncation keeps: its per-token mask applied to the position numbers.

        swift cuts every per-token tensor of ``encoded`` by one mask (image placeholders protected, text cut
        from the chosen side); a probe holding positions goes through the same code, so token types follow
        exactly, repeated tokens or not.
        """
        probe = {"image_token_types": torch.arange(len(input_ids))}
        super()._truncate(list(input_ids), None, probe, truncation_strategy)
        return probe["image_token_types"].tolist()

    def _post_encode(self, model, inputs: dict[str, Any]) -> dict[str, Any]:
        # swift's training path keeps only a fixed list of keys next to inputs_embeds
        encoded = super()._post_encode(model, inputs)
        for key in ("token_type_ids", "group_ids"):
            if inputs.get(key) is not None:
                encoded[key] = inputs[key]
        return encoded

    def _embedding_encode(self, inputs) -> dict[str, Any]:
        """swift's encoding of (anchor, positive, negatives), with bad input named by its side of the row:
        swift passes no row number, so the message names the row's positive product instead."""
        if not self.is_training:  # one request: its fields need no side
            return super()._embedding_encode(inputs)
        sides = [("anchor", inputs.chosen)] + [(f"positive[{i}]", p) for i, p in enumerate(inputs.positive)]
        sides += [(f"negative[{i}]", n) for i, n in enumerate(inputs.negative)]
        for side, part in sides:
            part.moon_side = side  # read by _preprocess_inputs to name the field
        product = next(filter(None, map(_group_id_of, inputs.positive)), None)
        try:
            return super()._embedding_encode(inputs)
        except MoonInputError as error:
            row = error.row if error.row is not None else (f"with positive product {product!r}" if product else None)
            raise MoonInputError(error.reason, file=error.file, row=row, field=error.field) from error

    def _preprocess_inputs(self, inputs: StdTemplateInputs) -> None:
        # Decode every image here, once, whatever form it came in (path, HF datasets dict, base64, bytes,
        # PIL, URL), EXIF-upright with transparency on white, so a bad one fails with its field; swift's
        # own loader then sees PIL images and leaves them as they are. Each image, of a product or of a
        # photo query alike, becomes its views (original / core-product crop / both), tags repeated to match.
        self.embedding_settings  # noqa: B018  (resolved before swift reads the system turn: text rows too)
        side = getattr(inputs, "moon_side", None)
        prefix = f"{side} " if side else ""
        if inputs.images:
            views, counts = [], []
            for index, image in enumerate(inputs.images):
                field = f"{prefix}images[{index}]"
                views += self._image_views.views_of(read_image(image, field=field), field=field)
                counts.append(len(views) - sum(counts))
            if any(count != 1 for count in counts):
                expand_image_tags(inputs.messages, counts)
            inputs.images = views
        texts = [_message_text(message.get("content")) for message in inputs.messages or []]
        if not inputs.images and not any(text.replace("<image>", "").strip() for text in texts):
            raise MoonInputError("the row has neither text nor images (empty text)", field=f"{prefix}messages")
        super()._preprocess_inputs(inputs)


def take_group_id(inputs: StdTemplateInputs) -> str | None:
    """Remove ``<group_id>...</group_id>`` from the messages and return the id (None if absent)."""
    found = []
    for message in inputs.messages or []:
        content = message.get("content")
        if isinstance(content, str):
            message["content"], ids = take_group_ids(content)
            found += ids
    ids = set(found)
    if len(ids) > 1:
        raise MoonInputError(f"one row names several group ids {sorted(ids)}", field="messages")
    return ids.pop() if ids else None


def mark_product_fields(inputs: StdTemplateInputs) -> None:
    """Check the field markup of every message and turn its tags into marker tokens (in place)."""
    for index, message in enumerate(inputs.messages or []):
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = to_markers(content, field=f"messages[{index}]")


def _drop_positions(encoded: dict[str, Any], keep: list[bool]) -> None:
    """Remove the marker tokens from every per-token sequence swift has built so far."""
    mask = torch.tensor(keep)
    for key in ("input_ids", "labels", "loss_scale"):
        if encoded.get(key) is not None:
            encoded[key] = [value for value, k in zip(encoded[key], keep, strict=True) if k]
    for key in ("mm_token_type_ids", "image_token_types"):
        if isinstance(encoded.get(key), torch.Tensor):
            encoded[key] = encoded[key][..., mask]


def _group_id_of(inputs: StdTemplateInputs) -> str | None:
    for message in inputs.messages or []:
        content = message.get("content")
        if isinstance(content, str):
            _, found = take_group_ids(content)
            if found:
                return found[0]
    return None


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


@dataclass
class MoonTemplateMeta(QwenTemplateMeta):
    """Qwen chat format without the default system prompt: every token is pooled, so a fixed
    system sentence would only dilute the embedding."""

    default_system: str | None = None


def moon_template_meta(template_cls: type[MoonTemplate] = MoonTemplate) -> MoonTemplateMeta:
    return MoonTemplateMeta(MOON_TEMPLATE_TYPE, template_cls=template_cls)
