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
