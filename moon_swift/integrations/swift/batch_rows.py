"""Row chunks of swift's collated embedding batch, for steps that run the model on a few rows at a time.

swift's embedding collator (``Template._embedding_data_collator``) lays every sample out as rows (anchor,
positive, negatives) of one padded batch. For Qwen2.5-VL / Qwen2-VL (the ``moon`` template and swift's own)
that batch holds:

- per-row tensors, rows first: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``mm_token_type_ids``,
  ``text_position_ids``, ``group_ids`` (``inputs_embeds`` where a template sends it);
- ``position_ids``: M-RoPE's ``(3, rows, length)`` (rows second), or ``(rows, length)`` for text models;
- the images of all rows concatenated: ``image_grid_thw`` one line per image, ``pixel_values`` ``t*h*w``
  patches per image, in row order. Which images are a row's is counted from its tokens: each image is
  ``t*h*w / merge_size**2`` image-pad tokens of its row;
- ``labels``: per *sample* (1 for the positive, 0 per negative), not per row: the loss needs all of them,
  so they are not part of any chunk.

Anything else (videos, padding-free / packed batches, keys of other templates) is refused by name: a key
sliced wrongly would silently train on mismatched inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...core.errors import MoonInputError

#: tensors whose first dimension is the row
ROW_KEYS = frozenset(
    {"input_ids", "inputs_embeds", "attention_mask", "token_type_ids", "mm_token_type_ids", "text_position_ids",
     "group_ids"}
)  # fmt: skip
#: the per-row tensors with one value per token (columns: dimension 1)
TOKEN_KEYS = frozenset(
    {"input_ids", "inputs_embeds", "attention_mask", "token_type_ids", "mm_token_type_ids", "text_position_ids"}
)
#: per-sample values the loss reads whole
SAMPLE_KEYS = frozenset({"labels"})
#: keys that have a reason to be refused
REFUSED = {
    "pixel_values_videos": "videos are not supported by cached steps",
    "video_grid_thw": "videos are not supported by cached steps",
    "second_per_grid_ts": "videos are not supported by cached steps",
    "cu_seq_lens_q": "a padding-free (packed) batch has no rows to split",
    "cu_seq_lens_k": "a padding-free (packed) batch has no rows to split",
    "max_length_q": "a padding-free (packed) batch has no rows to split",
    "max_length_k": "a padding-free (packed) batch has no rows to split",
}


def count_rows(inputs: Mapping[str, Any]) -> int:
    """The number of rows of a collated embedding batch."""
    for key in ("input_ids", "inputs_embeds"):
        value = inputs.get(key)
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise MoonInputError("the batch has neither input_ids nor inputs_embeds: no rows to split", field="input_ids")


def images_per_row(inputs: Mapping[str, Any], image_token_id: int | None, merge_size: int) -> list[int]:
    """How many of ``image_grid_thw``'s images (in order) belong to each row, from the rows' image-pad tokens."""
    rows = count_rows(inputs)
    grid = inputs.get("image_grid_thw")
    if grid is None:
        return [0] * rows
    input_ids = inputs.get("input_ids")
    if not isinstance(input_ids, torch.Tensor) or image_token_id is None:
        raise MoonInputError(
            "the batch has images but no input_ids, or the model's config no image_token_id: the images' rows "
            "cannot be told",
            field="image_grid_thw",
        )
    tokens = (input_ids == image_token_id).sum(dim=1).tolist()
    per_image = (grid.prod(dim=-1) // (merge_size**2)).tolist()
    counts, image = [], 0
    for row, wanted in enumerate(tokens):
        start = image
        while wanted > 0 and image < len(per_image):
            wanted -= per_image[image]
            image += 1
        if wanted != 0:
            raise MoonInputError(
                f"row {row} has {tokens[row]} image tokens, which do not add up to whole images of image_grid_thw "
                f"(tokens per image: {per_image}); the batch cannot be split into rows",
                field="image_grid_thw",
            )
        counts.append(image - start)
    if image != len(per_image):
        raise MoonInputError(
            f"image_grid_thw has {len(per_image)} images but the rows' tokens account for {image}",
            field="image_grid_thw",
        )
    return counts


def split_rows(
    inputs: Mapping[str, Any],
    sizes: Sequence[int],
    *,
    image_token_id: int | None,
    merge_size: int = 2,
    trim_padding: bool = False,
) -> list[dict[str, Any]]:
    """``inputs`` cut into consecutive chunks of ``sizes`` rows each (``labels`` left out: see the module).

    Non-tensor values (flags such as ``output_hidden_states``) go to every chunk. ``trim_padding``: a chunk
    keeps only the columns where one of its rows has a token (``attention_mask``): a chunk of short rows
    (text queries) does not run at the length of the batch's longest row.
    """
    rows = count_rows(inputs)
    if sum(sizes) != rows or any(size < 0 for size in sizes):
        raise ValueError(f"chunk sizes {list(sizes)} do not add up to the batch's {rows} rows")
    for key, value in inputs.items():
        if key in REFUSED and value is not None:
            raise MoonInputError(f"{REFUSED[key]} (the batch has {key!r})", field=key)
    images = images_per_row(inputs, image_token_id, merge_size)
    grid = inputs.get("image_grid_thw")
    patches = grid.prod(dim=-1).tolist() if grid is not None else []
    pixels = inputs.get("pixel_values")
    if pixels is not None and pixels.shape[0] != sum(patches):
        raise MoonInputError(
            f"pixel_values has {pixels.shape[0]} patches but image_grid_thw accounts for {sum(patches)}",
            field="pixel_values",
        )
    chunks: list[dict[str, Any]] = []
    row = image = patch = 0
    for size in sizes:
        n_images = sum(images[row : row + size])
        n_patches = sum(patches[image : image + n_images])
        chunk: dict[str, Any] = {}
        for key, value in inputs.items():
            if key in SAMPLE_KEYS or value is None:
                continue
            if key in ROW_KEYS:
                chunk[key] = value[row : row + size]
            elif key == "position_ids":
                chunk[key] = value[:, row : row + size] if value.dim() == 3 else value[row : row + size]
            elif key == "image_grid_thw":
                if n_images:
                    chunk[key] = value[image : image + n_images]
            elif key == "pixel_values":
                if n_images:
                    chunk[key] = value[patch : patch + n_patches]
            elif isinstance(value, (bool, int, float, str)):
                chunk[key] = value
            else:
                raise MoonInputError(
                    f"cached steps cannot split the batch's {key!r} into rows (a {type(value).__name__}); only "
                    f"{sorted(ROW_KEYS | {'position_ids', 'pixel_values', 'image_grid_thw'})} and the labels",
                    field=key,
                )
        chunks.append(_trimmed(chunk) if trim_padding else chunk)
        row, image, patch = row + size, image + n_images, patch + n_patches
    return chunks


def _trimmed(chunk: dict[str, Any]) -> dict[str, Any]:
    """The chunk without the columns that are padding in all its rows (explicit positions keep every row's
    positions, so the model computes the same for each valid token)."""
    mask = chunk.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] == 0:
        return chunk
    columns = mask.bool().any(dim=0).nonzero().reshape(-1)
    if len(columns) == 0:
        return chunk
    first, last = int(columns[0]), int(columns[-1]) + 1
    if first == 0 and last == mask.shape[1]:
        return chunk
    trimmed = dict(chunk)
    for key in TOKEN_KEYS & chunk.keys():
        trimmed[key] = chunk[key][:, first:last]
    if isinstance(chunk.get("position_ids"), torch.Tensor):
        trimmed["position_ids"] = chunk["position_ids"][..., first:last]
    return trimmed
