import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from moon_swift.core.errors import MoonInputError
from moon_swift.modeling import MoonConfig, MoonModel, mean_pool
from moon_swift.modeling.modeling_moon import last_token_pool


def _inputs(model_dir, image_path):
    processor = AutoProcessor.from_pretrained(model_dir)
    image = Image.open(image_path).convert("RGB").resize((112, 112))
    texts = [
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Blue Skirt<|im_end|>\n",
        "<|im_start|>user\nred shirt<|im_end|>\n",  # shorter: padded, so the mask matters
    ]
    return processor(text=texts, images=[image], return_tensors="pt", padding=True)


def test_embedding_is_l2_normalised_mean_of_last_hidden_states_over_valid_tokens(tiny_moon_dir, catalog_images):
    model = AutoModel.from_pretrained(tiny_moon_dir).eval()
    assert isinstance(model, MoonModel)
    inputs = _inputs(tiny_moon_dir, catalog_images[0])
    assert (inputs["attention_mask"] == 0).any(), "the test needs a padded row"
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    hidden, mask = out.hidden_states[-1], inputs["attention_mask"]
    manual = []
    for row in range(hidden.shape[0]):  # explicit loop: the reference is independent of mean_pool
        valid = hidden[row][mask[row].bool()]
        manual.append(valid.mean(dim=0) / valid.mean(dim=0).norm())
    manual = torch.stack(manual)
    assert out.last_hidden_state.shape == (2, model.config.text_config.hidden_size)
    torch.testing.assert_close(out.last_hidden_state, manual, atol=1e-6, rtol=0)
    # and it is not what swift's default (last-token) pooling would give
    last = torch.nn.functional.normalize(last_token_pool(hidden, mask), dim=-1)
    assert (last - out.last_hidden_state).abs().max() > 1e-3


def test_padding_does_not_change_an_embedding(tiny_moon_dir, catalog_images):
    model = AutoModel.from_pretrained(tiny_moon_dir).eval()
    inputs = _inputs(tiny_moon_dir, catalog_images[0])
    processor = AutoProcessor.from_pretrained(tiny_moon_dir)
    alone = processor(text=["<|im_start|>user\nred shirt<|im_end|>\n"], return_tensors="pt")
    with torch.no_grad():
        batched = model(**inputs).last_hidden_state[1]
        single = model(**alone).last_hidden_state[0]
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_save_and_reload_give_identical_embeddings(tiny_moon_dir, catalog_images, tmp_path):
    model = AutoModel.from_pretrained(tiny_moon_dir).eval()
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path).eval()
    inputs = _inputs(tiny_moon_dir, catalog_images[1])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state, again(**inputs).last_hidden_state, atol=0, rtol=0)


def test_mean_pool_ignores_masked_positions():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, -100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 2.0]]


def test_token_types_of_the_wrong_shape_are_a_clear_error():
    model = MoonModel(MoonConfig(text_config={"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32,
                                              "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 300},
                                 moe_layers="all"))  # fmt: skip
    with pytest.raises(MoonInputError, match=r"token_type_ids has shape \(1, 3\) but the inputs have shape \(1, 4\)"):
        model(input_ids=torch.tensor([[1, 2, 3, 4]]), token_type_ids=torch.tensor([[0, 1, 0]]))


def test_a_bf16_model_returns_float32_unit_vectors_as_accurate_as_float64_pooling(tiny_moon_dir, catalog_images):
    model = AutoModel.from_pretrained(tiny_moon_dir, dtype=torch.bfloat16).eval()
    inputs = _inputs(tiny_moon_dir, catalog_images[0])
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    hidden, mask = out.hidden_states[-1], inputs["attention_mask"]
    assert hidden.dtype == torch.bfloat16
    assert out.last_hidden_state.dtype == torch.float32
    reference = torch.nn.functional.normalize(
        (hidden.double() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1
    )  # fmt: skip
    # bf16 rounding of a unit vector would be ~4e-3 off; float32 accumulation is ~1e-7 off
    assert (out.last_hidden_state.double() - reference).abs().max() < 1e-5


def test_mean_pool_over_several_chunks_equals_the_plain_masked_mean(monkeypatch):
    import moon_swift.modeling.modeling_moon as modeling

    monkeypatch.setattr(modeling, "POOL_CHUNK", 3)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 10, 4, generator=generator, dtype=torch.float64).to(torch.bfloat16)
    mask = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])
    expected = (hidden.double() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    pooled = modeling.mean_pool(hidden.requires_grad_(), mask)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled.double(), expected, atol=1e-6, rtol=0)
    pooled.sum().backward()  # the gradient reaches the bf16 states, zero on padding
    assert hidden.grad.dtype == torch.bfloat16 and hidden.grad[1, 7:].abs().max() == 0


def test_mean_pool_gradient_is_the_analytic_one(monkeypatch):
    import moon_swift.modeling.modeling_moon as modeling

    monkeypatch.setattr(modeling, "POOL_CHUNK", 2)
    hidden = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.autograd.gradcheck(lambda states: modeling.mean_pool(states, mask).double(), (hidden,))


def test_a_learned_temperature_starts_at_its_value_and_survives_save_and_load(tmp_path):
    import math

    from moon_swift.apps.tiny_model import TinySpec, make_tiny

    spec = TinySpec(extra_config={"learnable_temperature": True, "init_temperature": 0.07})
    make_tiny(tmp_path / "a", seed=0, spec=spec)
    model = AutoModel.from_pretrained(tmp_path / "a")
    assert model.temperature().item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    with torch.no_grad():
        model.temperature.logit_scale.fill_(2.5)  # as if trained
    model.save_pretrained(tmp_path / "b")
    assert AutoModel.from_pretrained(tmp_path / "b").temperature().item() == pytest.approx(2.5)


def test_mean_pool_accumulates_in_float32_under_bf16_autocast():
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 300, 64, generator=generator, dtype=torch.float64).to(torch.bfloat16)
    mask = torch.ones(2, 300)
    expected = hidden.double().mean(dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what accelerate wraps a bf16 forward in
        pooled = mean_pool(hidden, mask)
    assert pooled.dtype == torch.float32
    assert (pooled.double() - expected).abs().max() < 1e-6  # a bf16 matmul is ~1e-3 off here
