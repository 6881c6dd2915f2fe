import re

import pytest

from moon_swift.core.errors import MoonInputError


@pytest.fixture(scope="module")
def moon_template(tiny_moon_dir):
    from swift.model import get_model_processor
    from swift.template import get_template

    _, processor = get_model_processor(str(tiny_moon_dir), model_type="moon", task_type="embedding", load_model=False)
    return get_template(processor, template_type="moon")


def _decode(template, input_ids):
    return template.processor.tokenizer.decode(input_ids)


def test_product_row_expands_every_image_to_its_patch_tokens(moon_template, catalog_images):
    row = {"messages": [{"role": "user", "content": "<image><image>Women Blue Skirt"}],
           "images": [str(catalog_images[0]), str(catalog_images[1])]}  # fmt: skip
    encoded = moon_template.encode(row)
    grid = encoded["image_grid_thw"]
    assert grid.shape == (2, 3)
    expected_tokens = int(grid.prod(dim=1).sum()) // 4  # 2x2 patch merge
    assert encoded["input_ids"].count(151655) == expected_tokens
    text = _decode(moon_template, encoded["input_ids"])
    assert "helpful assistant" not in text  # no default system prompt diluting the mean
    assert text.count("<|vision_start|>") == 2 and "Women Blue Skirt" in text


def test_image_budget_follows_max_pixels(tiny_moon_dir, catalog_images):
    from swift.model import get_model_processor
    from swift.template import get_template

    _, processor = get_model_processor(str(tiny_moon_dir), model_type="moon", task_type="embedding", load_model=False)
    small = get_template(processor, template_type="moon", max_pixels=56 * 56)
    encoded = small.encode({"messages": [{"role": "user", "content": "<image>"}], "images": [str(catalog_images[0])]})
    assert encoded["image_grid_thw"].tolist() == [[1, 4, 4]]  # 56x56 pixels = 4x4 patches of 14


@pytest.mark.parametrize(
    "row, pattern",
    [
        ({"messages": [{"role": "user", "content": "<image>"}], "images": ["/no/such/photo.jpg"]},
         r"file /no/such/photo.jpg, field 'images\[0\]': image file does not exist"),
        ({"messages": [{"role": "user", "content": "   "}]}, "empty text"),
        ({"messages": [{"role": "user", "content": "<video>"}], "videos": ["clip.mp4"]}, "got a video"),
    ],
)  # fmt: skip
def test_bad_rows_fail_with_file_and_field(moon_template, row, pattern):
    with pytest.raises(MoonInputError, match=pattern):
        moon_template.encode(row)


def test_unreadable_image_names_the_file(moon_template, tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff garbage")
    row = {"messages": [{"role": "user", "content": "<image>"}], "images": [str(path)]}
    with pytest.raises(MoonInputError, match=re.escape(str(path)) + r".*cannot be read"):
        moon_template.encode(row)


def _tokens_of_type(template, encoded, kind):
    pairs = zip(encoded["input_ids"], encoded["token_type_ids"], strict=True)
    return template.processor.tokenizer.decode([token for token, t in pairs if t == kind])


def test_category_and_attribute_marks_land_on_exactly_their_tokens(moon_template, catalog_images):
    content = ("<image><image>Nike Men Blue T-Shirt\n<category>Apparel > Topwear > Tshirts</category>\n"
               "<attributes>gender: Men; baseColour: Blue</attributes>")  # fmt: skip
    row = {"messages": [{"role": "user", "content": content}], "images": [str(p) for p in catalog_images[:2]]}
    encoded = moon_template.encode(row)
    assert len(encoded["token_type_ids"]) == len(encoded["input_ids"])
    assert _tokens_of_type(moon_template, encoded, 1) == "Apparel > Topwear > Tshirts"
    assert _tokens_of_type(moon_template, encoded, 2) == "gender: Men; baseColour: Blue"
    others = _tokens_of_type(moon_template, encoded, 0)
    assert others.count("<|image_pad|>") == encoded["input_ids"].count(151655)  # every image token is "other"
    assert "<|im_start|>user\n" in others and "Nike Men Blue T-Shirt" in others
    assert "<|quad_start|>" not in moon_template.processor.tokenizer.decode(encoded["input_ids"])  # markers removed
    assert encoded["mm_token_type_ids"].shape[-1] == len(encoded["input_ids"])


def test_text_only_queries_are_all_routed(moon_template):
    encoded = moon_template.encode({"messages": [{"role": "user", "content": "blue running shoes"}]})
    assert set(encoded["token_type_ids"]) == {0}


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("<category>Apparel", "unbalanced or nested field markup"),
        ("<category>A <attributes>x</attributes></category>", "unbalanced or nested field markup"),
        ("title <|quad_start|> injected", "reserved token"),
    ],
)
def test_bad_field_markup_is_refused(moon_template, content, pattern):
    with pytest.raises(MoonInputError, match=pattern):
        moon_template.encode({"messages": [{"role": "user", "content": content}]})


def test_token_types_follow_truncation(tiny_moon_dir):
    from swift.model import get_model_processor
    from swift.template import get_template

    _, processor = get_model_processor(str(tiny_moon_dir), model_type="moon", task_type="embedding", load_model=False)
    template = get_template(processor, template_type="moon", max_length=30, truncation_strategy="left")
    encoded = template.encode({"messages": [{"role": "user", "content": "x" * 40 + "<category>Shoes</category>"}]})
    assert len(encoded["input_ids"]) == len(encoded["token_type_ids"]) == 30
    assert _tokens_of_type(template, encoded, 1) == "Shoes"


def test_group_id_markup_is_removed_and_batched_as_ids(moon_template, catalog_images):
    from moon_swift.core.markup import group_id_hash

    rows = [{"messages": [{"role": "user", "content": f"<group_id>SKU-{i}</group_id><image>"}],
             "images": [str(catalog_images[i])]} for i in range(2)]  # fmt: skip
    rows.append({"messages": [{"role": "user", "content": "a query without id"}]})
    encoded = [moon_template.encode(row) for row in rows]
    assert "group_id" not in moon_template.processor.tokenizer.decode(encoded[0]["input_ids"])
    batch = moon_template.data_collator(encoded)
    assert batch["group_ids"].tolist() == [group_id_hash("SKU-0"), group_id_hash("SKU-1"), -1]
    assert batch["token_type_ids"].shape == batch["input_ids"].shape


def test_a_row_with_two_group_ids_is_refused(moon_template):
    with pytest.raises(MoonInputError, match="several group ids"):
        moon_template.encode(
            {"messages": [{"role": "user", "content": "<group_id>a</group_id><group_id>b</group_id>x"}]}
        )


def _training_template(tiny_moon_dir, model_dir=None):
    from swift.model import get_model_processor
    from swift.template import get_template

    _, processor = get_model_processor(str(model_dir or tiny_moon_dir), model_type="moon", task_type="embedding",
                                       load_model=False)  # fmt: skip
    template = get_template(processor, template_type="moon")
    template.set_mode("train")
    return template


def _photo_row(query_image, product_image, text=""):
    """A photo query row as swift's dataset loader hands it over: the anchor's images as HF image dicts."""
    return {"messages": [{"role": "user", "content": "<image>" + text}], "images": [query_image],
            "positive_messages": [[{"role": "user", "content": "<group_id>P1</group_id><image>Blue Tee"}]],
            "positive_images": [[product_image]]}  # fmt: skip


def test_photo_query_rows_encode_as_swift_hands_them_over(tiny_moon_dir, catalog_images):
    template = _training_template(tiny_moon_dir)
    for query in ({"bytes": None, "path": str(catalog_images[0])},
                  {"bytes": catalog_images[0].read_bytes(), "path": None}, str(catalog_images[0])):  # fmt: skip
        for text in ("", "blue tee"):  # a photo query, and a multimodal one
            encoded = template.encode(_photo_row(query, str(catalog_images[1]), text))
            assert encoded["anchor_input_ids"].count(151652) == 1 and encoded["positive_input_ids"].count(151652) == 1
            assert ("blue tee" in template.processor.tokenizer.decode(encoded["anchor_input_ids"])) == bool(text)


def test_a_malformed_anchor_image_names_its_side_and_the_rows_product(tiny_moon_dir, catalog_images):
    template = _training_template(tiny_moon_dir)
    with pytest.raises(MoonInputError) as error:
        template.encode(_photo_row({"bytes": None, "path": None}, str(catalog_images[1])))
    assert "row with positive product 'P1'" in str(error.value) and "field 'anchor images[0]'" in str(error.value)
    with pytest.raises(MoonInputError, match=r"positive\[0\] images\[0\]"):
        template.encode(_photo_row(str(catalog_images[0]), "/no/such/product.jpg"))


def test_with_crops_a_photo_query_is_its_original_and_its_crop_like_a_product(tiny_moon_dir, catalog_images, tmp_path):
    import json
    import shutil

    from moon_swift.core.settings import EmbeddingSettings
    from moon_swift.detection.store import BoxStore

    store = tmp_path / "boxes.jsonl"
    with store.open("w") as file:
        for image in catalog_images[:2]:
            file.write(json.dumps({"sha256": BoxStore().hash_of(image), "image": str(image), "width": 224,
                                   "height": 224, "boxes": [[20.0, 40.0, 120.0, 200.0]], "scores": [0.9],
                                   "fallback": False, "reason": "test"}) + "\n")  # fmt: skip
    model = tmp_path / "model"
    shutil.copytree(tiny_moon_dir, model)
    EmbeddingSettings(image_views="both", boxes=str(store)).save(model)
    template = _training_template(tiny_moon_dir, model)
    encoded = template.encode(_photo_row({"bytes": catalog_images[0].read_bytes(), "path": None},
                                         str(catalog_images[1]), "blue tee"))  # fmt: skip
    assert encoded["anchor_input_ids"].count(151652) == 2  # [original, crop] of the query photo
    assert encoded["positive_input_ids"].count(151652) == 2  # as for the product's image


def test_each_image_of_a_row_is_decoded_once(tiny_moon_dir, catalog_images, monkeypatch):
    from moon_swift.core import images

    calls = []
    decode = images._decode
    monkeypatch.setattr(images, "_decode", lambda data, **kw: calls.append(kw["origin"]) or decode(data, **kw))
    template = _training_template(tiny_moon_dir)
    row = _photo_row(str(catalog_images[0]), str(catalog_images[1]))
    row["positive_images"] = [[str(catalog_images[1]), str(catalog_images[2])]]
    row["positive_messages"][0][0]["content"] = "<group_id>P1</group_id><image><image>Blue Tee"
    template.encode(row)
    assert sorted(calls) == sorted(str(p) for p in catalog_images[:3])


@pytest.mark.parametrize("side", ["left", "right"])
def test_token_types_follow_truncation_exactly_with_images_and_repeated_words(tiny_moon_dir, catalog_images, side):
    from swift.model import get_model_processor
    from swift.template import get_template

    _, processor = get_model_processor(str(tiny_moon_dir), model_type="moon", task_type="embedding", load_model=False)
    row = {"messages": [{"role": "user", "content": "<image>red red <category>red red</category> red "
                                                     "<attributes>red: red</attributes> red red<image>"}],
           "images": [str(catalog_images[0]), str(catalog_images[1])]}  # fmt: skip
    full = get_template(processor, template_type="moon").encode(row)
    image_tokens = full["input_ids"].count(151655)
    text_types = [t for t, token in zip(full["token_type_ids"], full["input_ids"], strict=True) if token != 151655]
    typed = [i for i, t in enumerate(text_types) if t != 0]
    # the cut falls inside a span of repeated words: 2 tokens into the category span / before the attributes' end
    text_kept = len(text_types) - typed[0] - 2 if side == "left" else typed[-1] - 2
    cut = get_template(processor, template_type="moon", max_length=image_tokens + text_kept,
                       truncation_strategy=side).encode(row)  # fmt: skip
    text_positions = [i for i, token in enumerate(full["input_ids"]) if token != 151655]
    kept_text = text_positions[-text_kept:] if side == "left" else text_positions[:text_kept]
    kept = sorted(kept_text + [i for i, token in enumerate(full["input_ids"]) if token == 151655])
    assert cut["input_ids"] == [full["input_ids"][i] for i in kept]
    assert cut["token_type_ids"] == [full["token_type_ids"][i] for i in kept]
    assert len(set(cut["token_type_ids"])) > 1  # the kept text holds typed and untyped "red"s


def test_the_checkpoints_system_turn_applies_from_the_first_request_text_only_too(tiny_moon_dir, tmp_path):
    import shutil

    from swift.model import get_model_processor
    from swift.template import get_template

    from moon_swift.core.settings import EmbeddingSettings

    model = tmp_path / "model"
    shutil.copytree(tiny_moon_dir, model)
    EmbeddingSettings(system="Represent the product.").save(model)
    _, processor = get_model_processor(str(model), model_type="moon", task_type="embedding", load_model=False)
    template = get_template(processor, template_type="moon")
    encoded = template.encode({"messages": [{"role": "user", "content": "blue skirt"}]})  # no image: no views read
    assert _decode(template, encoded["input_ids"]).startswith("<|im_start|>system\nRepresent the product.<|im_end|>")
