import pytest

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
