"""``moon-swift visualize``: where a product's title, category and attribute tokens look in its images.

As in the paper's case study: for one product, the attention of each text field's tokens to the image
patch tokens of every view (original and core-product crop), averaged over heads (and the chosen
layers), drawn as heatmaps over the images the model actually saw. The product is encoded by
swift's ``moon`` template, so views, crops and image sizes are those of training and serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.images import fit_image, read_image
from ..core.markup import TOKEN_ATTRIBUTE, TOKEN_CATEGORY
from ..data.records import ProductRecord
from ..eval.encode import ProductEncoder, product_request

VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
IM_END = "<|im_end|>"


@dataclass
class AttentionMaps:
    """``maps[field][view]``: (grid_h, grid_w) attention mass of the field's tokens on that view's patches."""

    fields: dict[str, list[int]]  # field -> token positions
    maps: dict[str, list[np.ndarray]]
    views: list[Image.Image]


def field_positions(input_ids: list[int], token_types: list[int], ids: dict[str, int]) -> dict[str, list[int]]:
    """Token positions of the title (plain text after the last image, before the fields), category, attributes."""
    last_vision = max((i for i, t in enumerate(input_ids) if t == ids[VISION_END]), default=-1)
    end = next((i for i in range(last_vision + 1, len(input_ids)) if input_ids[i] == ids[IM_END]), len(input_ids))
    first_field = next((i for i in range(last_vision + 1, end) if token_types[i] != 0), end)
    fields = {"title": list(range(last_vision + 1, first_field))}
    fields["category"] = [i for i, t in enumerate(token_types) if t == TOKEN_CATEGORY]
    fields["attributes"] = [i for i, t in enumerate(token_types) if t == TOKEN_ATTRIBUTE]
    return {name: positions for name, positions in fields.items() if positions}


@torch.inference_mode()
def attention_maps(encoder: ProductEncoder, record: ProductRecord, layers: list[int] | None = None) -> AttentionMaps:
    """Run the product through the model with eager attention and collect per-field patch attention."""
    model, template = encoder.model, encoder.template
    model.set_attn_implementation("eager")  # sdpa / flash kernels do not return attention weights
    encoded = template.encode(product_request(record))
    inputs = template.data_collator([encoded])
    _, inputs = template.pre_forward_hook(model, None, inputs)
    output = model(**inputs, output_attentions=True)
    chosen = layers if layers is not None else [len(output.attentions) - 1]
    attention = torch.stack([output.attentions[i][0] for i in chosen]).float().mean(dim=(0, 1))  # (L, L)

    tokenizer = template.processor.tokenizer
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in (VISION_END, IMAGE_PAD, IM_END)}
    input_ids = inputs["input_ids"][0].tolist()
    fields = field_positions(input_ids, inputs["token_type_ids"][0].tolist(), ids)
    pads = [i for i, t in enumerate(input_ids) if t == ids[IMAGE_PAD]]
    merge = template.processor.image_processor.merge_size
    grids = [(int(h) // merge, int(w) // merge) for _, h, w in inputs["image_grid_thw"].tolist()]
    maps: dict[str, list[np.ndarray]] = {}
    for name, positions in fields.items():
        start, per_view = 0, []
        for grid_h, grid_w in grids:
            patch = pads[start : start + grid_h * grid_w]
            start += grid_h * grid_w
            per_view.append(attention[positions][:, patch].mean(dim=0).reshape(grid_h, grid_w).numpy())
        maps[name] = per_view
    return AttentionMaps(fields, maps, _seen_views(encoder, record, grids))


def _seen_views(encoder: ProductEncoder, record: ProductRecord, grids: list[tuple[int, int]]) -> list[Image.Image]:
    """The images as the model saw them: every view of every product image, sized to its patch grid."""
    template = encoder.template
    factor, min_pixels, max_pixels = template._image_budget()
    views = [view for index, image in enumerate(record.images)
             for view in template._image_views.views_of(read_image(image), field=f"images[{index}]")]  # fmt: skip
    fitted = [fit_image(view, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels) for view in views]
    return [image.resize((w * factor, h * factor)) for image, (h, w) in zip(fitted, grids, strict=True)]


def plot_attention(maps: AttentionMaps, record: ProductRecord, out: Path) -> Path:
    """One row per text field, one column per view: the view with the field's attention over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps.maps)
    columns = len(maps.views)
    fig, axes = plt.subplots(len(names), columns, figsize=(3.2 * columns, 3.0 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for column, (view, heat) in enumerate(zip(maps.views, maps.maps[name], strict=True)):
            ax = axes[row][column]
            ax.imshow(view)
            ax.imshow(heat / max(float(heat.max()), 1e-12), cmap="jet", alpha=0.45, interpolation="bilinear",
                      extent=(0, view.width, view.height, 0))  # fmt: skip
            ax.set_axis_off()
            ax.set_title(f"{name} ({len(maps.fields[name])} tokens) -> view {column + 1}", fontsize=8)
    fig.suptitle(f"{record.product_id}: {record.title}"[:90], fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
