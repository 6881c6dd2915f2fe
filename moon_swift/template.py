"""MoonTemplate: swift's Qwen2.5-VL template, adapted to product embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image
from swift.template.template_inputs import StdTemplateInputs
from swift.template.templates.qwen import Qwen2_5VLTemplate, QwenTemplateMeta
from swift.template.utils import Context

from .errors import MoonInputError
from .images import fit_image, load_image

MOON_TEMPLATE_TYPE = "moon"


class MoonTemplate(Qwen2_5VLTemplate):
    """Qwen2.5-VL chat encoding for MOON.

    Pooling happens in :class:`~moon_swift.modeling.MoonModel` (mean over valid tokens), so the
    per-token outputs must stay aligned with the attention mask: padding-free packing, which
    concatenates rows, is therefore not supported. Inputs are checked before encoding so that a
    missing image or an empty text fails with the path and field instead of deep inside PIL/torch.
    """

    support_padding_free = False

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
            image = load_image(image, field=f"images[{index}]")
        inputs.images[index] = fit_image(image, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        return ["<|vision_start|><|image_pad|><|vision_end|>"]

    def _preprocess_inputs(self, inputs: StdTemplateInputs) -> None:
        # Decode image files here (EXIF-upright, transparency on white) so a bad file fails with
        # its path and field; swift's own loader then sees PIL images and leaves them as they are.
        for index, image in enumerate(inputs.images or []):
            if isinstance(image, str) and not image.startswith(("http://", "https://", "data:")):
                inputs.images[index] = load_image(image, field=f"images[{index}]")
        texts = [_message_text(message.get("content")) for message in inputs.messages or []]
        if not inputs.images and not any(text.replace("<image>", "").strip() for text in texts):
            raise MoonInputError("the row has neither text nor images (empty text)", field="messages")
        super()._preprocess_inputs(inputs)


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


def moon_template_meta() -> MoonTemplateMeta:
    return MoonTemplateMeta(MOON_TEMPLATE_TYPE, template_cls=MoonTemplate)
