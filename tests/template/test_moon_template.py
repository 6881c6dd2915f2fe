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
