"""MoonProcessor: the Qwen2.5-VL processor for products (images + text): field markup to token types, no video."""

from __future__ import annotations

from typing import Any

from transformers import BatchFeature, Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin

from ..core.errors import MoonInputError
from ..core.markup import TOKEN_OTHER, MarkerIds, take_group_ids, to_markers

#: per-token outputs that lose the marker positions and are padded
_PER_TOKEN = ("input_ids", "attention_mask", "mm_token_type_ids")


class MoonProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor minus the video processor, plus MOON's field markup.

    Products are images and text. Qwen2.5-VL's video processor needs torchvision, which is often
    absent next to CPU or custom torch builds; dropping it lets the same checkpoint load anywhere.
    Text may carry the product-field markup the data tools write (``<category>...</category>``,
    ``<attributes>...</attributes>``, ``<group_id>...</group_id>``): it is removed and turned into
    ``token_type_ids`` for the guided-MoE experts exactly as swift's ``moon`` template does it (one
    implementation, :class:`~moon_swift.core.markup.MarkerIds`), so ``AutoProcessor`` + ``AutoModel`` embed as
    training did. Token ids and image handling are otherwise exactly Qwen2.5-VL's.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
        self._markers = MarkerIds.of(tokenizer)

    def __call__(self, images=None, text=None, videos=None, **kwargs: Any) -> BatchFeature:
        if text is None:
            return super().__call__(images=images, text=text, videos=videos, **kwargs)
        padding = kwargs.pop("padding", False)
        max_length = kwargs.pop("max_length", None)
        if kwargs.get("truncation") not in (None, False, "do_not_truncate") or (
            max_length is not None and padding != "max_length"
        ):
            raise MoonInputError(
                "MoonProcessor does not truncate (marker tokens would count, and image tokens must stay whole): "
                "pass shorter text, or encode through swift's moon template, which truncates with --max_length",
                field="truncation",
            )
        texts = [text] if isinstance(text, str) else list(text)
        marked = [to_markers(take_group_ids(t)[0], field=f"text[{i}]") for i, t in enumerate(texts)]
        return_tensors = kwargs.pop("return_tensors", None)
        padding_side = kwargs.pop("padding_side", None) or self.tokenizer.padding_side
        kwargs.pop("truncation", None)
        out = super().__call__(
            images=images, text=marked, videos=videos, padding=False, truncation=False, return_tensors=None, **kwargs
        )
        rows: dict[str, list[list[int]]] = {key: [] for key in _PER_TOKEN if key in out}
        rows["token_type_ids"] = []
        for index, ids in enumerate(out["input_ids"]):
            keep, types = self._markers.split(ids)
            for key in rows:
                if key != "token_type_ids":
                    rows[key].append([value for value, k in zip(out[key][index], keep, strict=True) if k])
            rows["token_type_ids"].append(types)
        if padding not in (False, None, "do_not_pad"):
            self._pad(rows, max_length, left=padding_side == "left")
        data = {key: value for key, value in out.items() if key not in rows}
        return BatchFeature(data={**rows, **data}, tensor_type=return_tensors)

    def _pad(self, rows: dict[str, list[list[int]]], length: int | None, *, left: bool) -> None:
        """Pad every per-token row to ``length`` (default: the longest), on the left or the right."""
        longest = max(len(row) for row in rows["input_ids"])
        length = max(length or 0, longest)
        fill = {"input_ids": self.tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": TOKEN_OTHER}
        for key, values in rows.items():
            for index, row in enumerate(values):
                pad = [fill.get(key, 0)] * (length - len(row))
                values[index] = pad + row if left else row + pad
