"""`moon-swift index`: faiss file and a Milvus Lite collection from the real command line."""

import json
from pathlib import Path

import faiss
import numpy as np
from helpers import run_cli, swift_executable, write_generic_catalog
from pymilvus import MilvusClient

from moon_swift.data.catalog_files import read_catalog
from moon_swift.eval.encode import ProductEncoder


def test_index_writes_faiss_and_milvus_lite_that_find_each_product(tiny_moon_dir, tmp_path):
    catalog, _ = write_generic_catalog(tmp_path)
    out = tmp_path / "index"
    moon_swift = str(Path(swift_executable()).with_name("moon-swift"))
    result = run_cli([moon_swift, "index", "--model", str(tiny_moon_dir), "--products", str(catalog),
                      "--format", "generic", "--out", str(out)])  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert "milvus: 4 entities in collection 'moon_products'" in result.stdout

    records = read_catalog(catalog)
    embeddings = ProductEncoder(str(tiny_moon_dir)).encode_products(records, progress=False)
    index = faiss.read_index(str(out / "catalog.faiss"))
    ids = json.loads((out / "catalog.ids.json").read_text())
    _, found = index.search(embeddings.astype(np.float32), 1)
    assert [ids[i] for i in found[:, 0]] == [r.product_id for r in records]

    client = MilvusClient(str(out / "milvus.db"))
    client.load_collection("moon_products")  # a new process loads the collection before searching
    hits = client.search("moon_products", data=[embeddings[2].tolist()], limit=1, output_fields=["product_id"])
    assert hits[0][0]["entity"]["product_id"] == records[2].product_id
