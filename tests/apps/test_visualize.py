import numpy as np
from helpers import FASHION_CATALOG

from moon_swift.apps.visualize import IM_END, IMAGE_PAD, VISION_END, attention_maps, field_positions, plot_attention
from moon_swift.data import read_fashion_catalog
from moon_swift.eval.encode import ProductEncoder

IDS = {VISION_END: 9, IMAGE_PAD: 8, IM_END: 7}


def test_fields_are_the_text_after_the_last_image_split_by_token_type():
    input_ids = [1, 8, 8, 9, 5, 5, 5, 6, 6, 6, 7, 2]
    types = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 0, 0]
    assert field_positions(input_ids, types, IDS) == {"title": [4, 5], "category": [6, 7], "attributes": [8, 9]}


def test_maps_cover_every_view_and_come_from_real_softmax_attention(tiny_moon_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MOON_BOXES", raising=False)
    monkeypatch.delenv("MOON_IMAGE_VIEWS", raising=False)
    (record,) = read_fashion_catalog(FASHION_CATALOG, limit=1)
    maps = attention_maps(ProductEncoder(str(tiny_moon_dir)), record, layers=[0, 1])
    assert set(maps.maps) == {"title", "category", "attributes"} and len(maps.views) == len(record.images)
    for per_view in maps.maps.values():
        (heat,) = per_view
        assert heat.shape[0] * 14 * 2 == maps.views[0].height and heat.shape[1] * 14 * 2 == maps.views[0].width
        assert (heat >= 0).all() and 0 < heat.sum() < 1  # image patches get part of each softmax row
    path = plot_attention(maps, record, tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not np.allclose(maps.maps["title"][0], maps.maps["category"][0])
