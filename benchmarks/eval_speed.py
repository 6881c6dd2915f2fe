"""Evaluation speed, measured in one run on this machine.

    python benchmarks/eval_speed.py [--products 96] [--vectors 1000000] [--dim 256] [--queries 1000]

1. Catalog encoding, products/s: ``moon-swift eval``'s encoder (a cache layer over swift's
   ``TransformersEngine``), cold and with a warm embedding cache, against the engine's own ``infer``
   on the same tiny MOON model and batch size.
2. Search, queries/s over ``--vectors`` x ``--dim`` unit vectors, top-10 inner product: faiss exact
   (``IndexFlatIP``) against a numpy brute force (matmul + argpartition), each in its own process
   for its peak memory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def encoding(args) -> None:
    import torch
    from swift.infer_engine import InferRequest, TransformersEngine

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import FASHION_CATALOG

    import moon_swift.integrations.swift.plugin  # noqa: F401  (model type moon, whatever the start-up hook)
    from moon_swift.apps.tiny_model import make_tiny
    from moon_swift.data import read_fashion_catalog
    from moon_swift.eval.encode import ProductEncoder, product_request

    model_dir = Path(tempfile.mkdtemp()) / "tiny"
    make_tiny(model_dir, seed=0)
    records = read_fashion_catalog(FASHION_CATALOG, limit=args.products)
    requests = [product_request(r) for r in records]
    ours = ProductEncoder(str(model_dir), batch_size=args.batch_size, device="cpu", dtype="float32")
    cache = Path(tempfile.mkdtemp())
    cached = ProductEncoder(str(model_dir), batch_size=args.batch_size, device="cpu", dtype="float32",
                            cache_dir=cache)  # fmt: skip
    cached.encode(requests, progress=False)  # fills the cache
    engine = TransformersEngine(str(model_dir), model_type="moon", task_type="embedding",
                                torch_dtype=torch.float32, max_batch_size=args.batch_size)  # fmt: skip

    def run_ours():
        ours.encode(requests, progress=False)

    def run_cached():
        cached.encode(requests, progress=False)

    def run_engine():
        engine.infer([InferRequest(**r) for r in requests], use_tqdm=False)

    times = {run_ours: [], run_engine: [], run_cached: []}
    for _ in range(args.repeats + 1):  # alternate, first round is warm-up (file cache, allocator)
        for run in times:
            start = time.perf_counter()
            run()
            times[run].append(time.perf_counter() - start)
    t_ours, t_engine, t_cached = (statistics.median(t[1:]) for t in times.values())
    print(f"encoding {len(requests)} products, batch {args.batch_size}, tiny MOON:")
    print(f"  moon-swift encoder (cold)  {len(requests) / t_ours:10.1f} products/s")
    print(f"  swift TransformersEngine   {len(requests) / t_engine:10.1f} products/s")
    print(f"  moon-swift encoder (warm)  {len(requests) / t_cached:10.1f} products/s")
    print(f"  ratio cold / engine        {t_engine / t_ours:10.2f}")
    print(f"  ratio warm cache / engine  {t_engine / t_cached:10.1f}")


def search(kind: str, args, results) -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.vectors, args.dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[rng.choice(args.vectors, args.queries, replace=False)]
    if kind == "faiss":
        import faiss

        index = faiss.IndexFlatIP(args.dim)
        index.add(base)
        start = time.perf_counter()
        _, ids = index.search(queries, 10)
    else:
        start = time.perf_counter()
        ids = []
        for chunk in range(0, len(queries), 100):
            scores = queries[chunk : chunk + 100] @ base.T
            top = np.argpartition(-scores, 10, axis=1)[:, :10]
            ids.append(np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1))
        ids = np.concatenate(ids)
    elapsed = time.perf_counter() - start
    results[kind] = (len(queries) / elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    encoding(args)
    context = mp.get_context("spawn")
    results = context.Manager().dict()
    for kind in ("numpy", "faiss"):
        process = context.Process(target=search, args=(kind, args, results))
        process.start()
        process.join()
    print(f"search: {args.queries} queries, top-10 inner product over {args.vectors:,} x {args.dim}:")
    for kind in ("numpy", "faiss"):
        qps, rss = results[kind]
        print(f"  {kind:<6} {qps:10.1f} queries/s   peak RSS {rss:8.0f} MB")
    print(f"  ratio (faiss / numpy) {results['faiss'][0] / results['numpy'][0]:.2f}")


if __name__ == "__main__":
    main()
