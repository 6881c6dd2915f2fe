import numpy as np
import torch

from moon_swift.data.records import ProductRecord
from moon_swift.eval.encode import ProductEncoder, product_request, query_request


def test_encoder_matches_swift_inference_engine(tiny_moon_dir, catalog_images):
    from swift.infer_engine import InferRequest, TransformersEngine

    records = [ProductRecord(str(i), f"title {i}", [str(p)]) for i, p in enumerate(catalog_images[:3])]
    requests = [product_request(r) for r in records] + [query_request("Blue Skirts"), query_request("red tee")]
    encoder = ProductEncoder(str(tiny_moon_dir), batch_size=2)
    ours = encoder.encode(requests, progress=False)

    engine = TransformersEngine(str(tiny_moon_dir), model_type="moon", task_type="embedding", torch_dtype=torch.float32)
    responses = engine.infer([InferRequest(**r) for r in requests])
    theirs = np.array([r.data[0].embedding for r in responses], dtype=np.float32)
    assert ours.shape == theirs.shape == (5, 64)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_embedding_cache_is_reused_and_invalidated_by_new_weights(tiny_moon_dir, catalog_images, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_moon_dir, model)
    requests = [query_request("Blue Skirts"), product_request(ProductRecord("1", "t", [str(catalog_images[0])]))]
    first = ProductEncoder(str(model), cache_dir=tmp_path / "cache").encode(requests, progress=False)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = ProductEncoder(str(model), cache_dir=tmp_path / "cache").encode(requests, progress=False)
    np.testing.assert_array_equal(first, again)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # served from the cache
    (model / "model.safetensors").touch()  # the weights "changed": a new entry is computed
    ProductEncoder(str(model), cache_dir=tmp_path / "cache").encode(requests, progress=False)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def _adapter(path, settings=None):
    path.mkdir()
    (path / "adapter_config.json").write_text("{}")
    if settings is not None:
        settings.save(path)
    return str(path)


def test_adapters_for_another_base_or_disagreeing_on_settings_are_refused(tiny_moon_dir, tmp_path):
    import pytest

    from moon_swift.core.errors import MoonInputError
    from moon_swift.core.settings import EmbeddingSettings, base_identity
    from moon_swift.eval.encode import check_adapters

    ours = {"base_model": {"path": str(tiny_moon_dir), "identity": base_identity(tiny_moon_dir)}}
    crop = _adapter(tmp_path / "crop", EmbeddingSettings(image_views="crop", boxes="b.jsonl", training=ours))
    same = _adapter(tmp_path / "same", EmbeddingSettings(image_views="crop", boxes="elsewhere.jsonl", training=ours))
    check_adapters(str(tiny_moon_dir), [crop, same])  # agree on what changes the embedding: applied in order
    plain = _adapter(tmp_path / "plain", EmbeddingSettings(training=ours))
    with pytest.raises(MoonInputError, match="adapters disagree on image_views: 'crop' in .*crop, 'original' here"):
        check_adapters(str(tiny_moon_dir), [crop, plain])
    other = _adapter(tmp_path / "other", EmbeddingSettings(training={"base_model": {"identity": "0" * 16}}))
    with pytest.raises(MoonInputError, match="trained on another base model: base identity 0{16}") as error:
        check_adapters(str(tiny_moon_dir), [other])
    assert base_identity(tiny_moon_dir) in str(error.value)
    with pytest.raises(MoonInputError, match="not a LoRA adapter checkpoint"):
        check_adapters(str(tiny_moon_dir), [str(tmp_path)])


def test_device_and_dtype_default_to_the_cpu_in_float32_here_and_refuse_a_missing_gpu():
    import pytest
    import torch

    from moon_swift.core.errors import MoonInputError
    from moon_swift.eval.encode import default_device_dtype

    if torch.cuda.is_available():
        assert default_device_dtype() == ("cuda", "bfloat16")
    else:
        assert default_device_dtype() == ("cpu", "float32")
        with pytest.raises(MoonInputError, match="--device cuda: no CUDA device"):
            default_device_dtype("cuda")
    with pytest.raises(MoonInputError, match="--dtype must be one of"):
        default_device_dtype("cpu", "int8")
