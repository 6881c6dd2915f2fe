import pytest

from moon_swift.core.errors import MoonInputError
from moon_swift.modeling import MoonConfig


def test_moon_config_is_a_qwen2_5_vl_config_with_moon_options():
    config = MoonConfig()
    assert config.model_type == "moon"
    assert config.image_token_id == 151655
    assert (config.pooling, config.normalize, config.base_model_type) == ("mean", True, "qwen2_5_vl")


def test_moon_config_round_trips_through_dict():
    config = MoonConfig(pooling="last", normalize=False)
    again = MoonConfig(**config.to_dict())
    assert (again.pooling, again.normalize) == ("last", False)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"pooling": "max"}, "pooling='max'"), ({"base_model_type": "llava"}, "base_model_type='llava'")],
)
def test_moon_config_rejects_unknown_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MoonConfig(**kwargs)


@pytest.mark.parametrize(
    "spec, layers",
    [(None, []), ([], []), ("all", [0, 1, 2, 3]), ("every:2", [1, 3]), ([-1, 0], [0, 3]), ("1,2", [1, 2])],
)
def test_moe_layer_specs(spec, layers):
    config = MoonConfig(text_config={"num_hidden_layers": 4}, moe_layers=spec)
    assert config.moe_layers == layers and config.is_moe == bool(layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"moe_layers": [4]}, r"moe_layers \[4\] out of range: the decoder has 4 layers"),
        ({"moe_layers": "every:0"}, "use a list of indices, 'all' or 'every:K'"),
        ({"moe_layers": "all", "num_experts": 2, "moe_top_k": 3}, "moe_top_k=3 must be between 1 and num_experts=2"),
    ],
)
def test_bad_moe_settings_fail_at_config_time(kwargs, message):
    with pytest.raises(MoonInputError, match=message):
        MoonConfig(text_config={"num_hidden_layers": 4}, **kwargs)
