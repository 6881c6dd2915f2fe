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


PLANTED = """
import pathlib
pathlib.Path(__file__).with_name("REMOTE_CODE_RAN").write_text("{name}")
raise RuntimeError("remote code of {name} ran")
"""


def test_a_checkpoint_shipping_its_own_code_loads_natively_and_runs_none_of_it(tiny_moon_dir, tmp_path):
    """A moon folder from the hub whose config.json maps the Auto classes to files it carries."""
    import json
    import logging
    import shutil

    from swift.infer_engine import InferRequest, TransformersEngine

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_moon_dir, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_moon.MoonConfig", "AutoModel": "modeling_moon.MoonModel",
                          "AutoProcessor": "processing_moon.MoonProcessor"}  # fmt: skip
    (checkpoint / "config.json").write_text(json.dumps(config))
    for name in ("configuration_moon", "modeling_moon", "processing_moon"):
        (checkpoint / f"{name}.py").write_text(PLANTED.format(name=name))

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    swift_logger = logging.getLogger("swift")
    swift_logger.addHandler(handler)
    try:
        engine = TransformersEngine(str(checkpoint), model_type="moon", task_type="embedding")
        vector = engine.infer([InferRequest(messages=[{"role": "user", "content": "blue skirt"}])])[0]
    finally:
        swift_logger.removeHandler(handler)
    assert len(vector.data[0].embedding) == config["text_config"]["hidden_size"]
    assert not (checkpoint / "REMOTE_CODE_RAN").exists()
    assert records, "swift's log was not captured"
    assert not [line for line in records if "trust_remote_code=True" in line]
