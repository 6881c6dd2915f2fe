"""MoonProcessor: the Qwen2.5-VL processor for products (images + text), without a video processor."""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin


class MoonProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor minus the video processor.

    Products are images and text. Qwen2.5-VL's video processor needs torchvision, which is often
    absent next to CPU or custom torch builds; dropping it lets the same checkpoint load anywhere.
    Token ids and image handling are exactly Qwen2.5-VL's.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
