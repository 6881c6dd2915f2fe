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
