import pytest

from moon_swift.apps.tiny_model import make_tiny
from moon_swift.core.errors import MoonInputError


def test_a_dense_qwen_checkpoint_is_refused_with_the_upcycle_hint(tmp_path):
    from swift.model import get_model_processor

    make_tiny(tmp_path, seed=0, as_base=True)
    with pytest.raises(MoonInputError, match=r"model_type='qwen2_5_vl'.*moon-swift upcycle"):
        get_model_processor(str(tmp_path), model_type="moon", task_type="embedding")


def test_moon_is_an_embedding_model(tiny_moon_dir):
    from swift.model import get_model_processor

    with pytest.raises(MoonInputError, match="use --task_type embedding"):
        get_model_processor(str(tiny_moon_dir), model_type="moon", task_type="causal_lm")


def test_swift_loads_moon_through_automodel_with_mean_pooling(tiny_moon_dir):
    from swift.model import get_model_processor

    from moon_swift.modeling import MoonModel

    model, _ = get_model_processor(str(tiny_moon_dir), task_type="embedding")  # model_type found from config
    assert isinstance(model, MoonModel)
    assert model.model_meta.model_type == "moon"
    # swift's last-token pooling hook is only added for non-AutoModel loads: none may be on the model
    assert not model._forward_hooks
