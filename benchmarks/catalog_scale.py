"""The data tools at catalog scale: wall time and peak memory at 100k and 1M products, in one run.

    python benchmarks/catalog_scale.py [--sizes 100000 1000000] [--searches exact ivf hnsw]
                                       [--embeddings random clustered] [--negatives 4] [--dim 256] [--workdir DIR]

Each size runs in a fresh subprocess (its peak resident set, VmHWM, is its own) on a synthetic catalog:
image-free products whose category paths and attributes are the dev catalog's rows, cycled (so its category
tree and its 69 leaf categories' relative sizes: at 1M the largest, Tshirts, holds ~175k products),
every 3 consecutive products one group (colour variants). Stages, as `moon-swift prepare-data` runs them:

1. ``write``: the catalog as products JSONL (setup, not a prepare-data stage);
2. ``prepare``: ``load_products`` + ``prepare_data`` with ``--hard-negatives``: the held-out split, the
   same-category negatives (``category_negatives``), the swift rows and product files written;
3. ``mine SEARCH EMBEDDINGS``: ``mined_negatives`` of the training products with each ``--mine-search``
   choice: ``ivf`` at every size, ``exact`` (O(N^2)) up to ``--exact-up-to`` and ``hnsw`` up to
   ``--hnsw-up-to`` training products. Embeddings: ``random`` (unit vectors, no structure: the hardest case
   for an approximate search) and ``clustered`` (``benchmarks/ann_search.py``'s mixture of category,
   attribute, group and noise directions, each product's row of it).

Per search and embeddings, on 2,000 sampled training products whose exact negatives are computed apart (faiss
exact top-k of those rows against all, so they are known at 1M too): the share of the exact negatives found, and
how hard the negatives found are, as their mean inner product with the product beside the exact negatives'.
Where many products are nearly equally similar (a dense cluster), an approximate search can miss the exact ones
yet find others as hard; the second figure tells the two apart.
For ``ivf``, faiss's own counter (``indexIVF_stats``) gives the codes scanned per query (the coarse quantizer's
walk is mining's own, in its index build: ``moon_swift.core.vector_search.SelfSearchIVF``).
It prints seconds and microseconds per product for every stage, the peak RSS after ``prepare`` and at the
end, and the ratio of time per product between the largest and the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from process_memory import status_bytes

SHARED_DATA = Path(os.environ.get("MOON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CATALOG = SHARED_DATA / "fashion-catalog-dev"
#: products whose exact negatives the approximate searches are scored against
SAMPLE = 2_000


def write_catalog(path: Path, products: int) -> None:
    from moon_swift.data import read_fashion_catalog

    shapes = read_fashion_catalog(CATALOG, on_bad_row="skip")
    with path.open("w", encoding="utf-8") as out:
        for i in range(products):
            shape = shapes[i % len(shapes)]
            row = {"product_id": f"syn{i:07d}", "title": f"{shape.title} {i}", "images": [], "group_id": f"g{i // 3}",
                   "category_path": shape.category_path, "attributes": shape.attributes}  # fmt: skip
            out.write(json.dumps(row) + "\n")


def measure(products: int, args) -> dict:
    """One size, in this process: seconds per stage, the share of exact negatives found, the peak RSS."""
    import faiss
    from ann_search import clustered

    from moon_swift.data.negatives import mined_negatives
    from moon_swift.data.prepare import prepare_data
    from moon_swift.data.sources import load_products
    from moon_swift.data.swift_rows import split_records

    workdir, negatives = Path(args.workdir), args.negatives
    seconds = {}
    catalog = workdir / "catalog.jsonl"
    start = time.perf_counter()
    write_catalog(catalog, products)
    seconds["write"] = time.perf_counter() - start

    start = time.perf_counter()
    records, pairs = load_products(str(catalog), "records")
    prepare_data(records, pairs, workdir / "prepared", hard_negatives=negatives, seed=0)
    seconds["prepare"] = time.perf_counter() - start
    result = {
        "products": products,
        "seconds": seconds,
        "found": {},
        "similarity": {},
        "ivf": {},
        "prepare_peak_mib": status_bytes("VmHWM") / 2**20,
    }

    train, _ = split_records(records, 0.1)  # in catalog order: product numbers ascending
    del records, pairs
    numbers = np.array([int(r.product_id[3:]) for r in train])  # a training product's row: searchsorted
    sample = np.random.default_rng(1).choice(len(train), min(SAMPLE, len(train)), replace=False)
    limits = {"exact": args.exact_up_to, "hnsw": args.hnsw_up_to}
    for kind in args.embeddings:
        if kind == "random":
            vectors = np.random.default_rng(0).standard_normal((len(train), args.dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        else:
            vectors = clustered(products, args.dim, seed=0)
            for at in range(0, len(numbers), 65_536):  # training rows to the front, in place (rows ascend)
                chunk = numbers[at : at + 65_536]
                vectors[at : at + len(chunk)] = vectors[chunk]
            vectors = vectors[: len(numbers)]
        truth = exact_negatives(train, vectors, sample, negatives)
        for search in args.searches:
            if len(train) > limits.get(search, len(train)):
                continue
            stats = faiss.cvar.indexIVF_stats
            stats.reset()
            start = time.perf_counter()
            mined = mined_negatives(train, vectors, negatives, search=search)
            seconds[f"mine {search} {kind}"] = time.perf_counter() - start
            if search == "ivf":
                result["ivf"][kind] = stats.ndis / stats.nq
            assert len(mined) == len(train) and all(len(m) == negatives for m in mined)
            found = [np.searchsorted(numbers, [int(r.product_id[3:]) for r in mined[row]]) for row in sample]
            hits = sum(len(set(rows.tolist()) & set(exact.tolist())) for rows, exact in zip(found, truth, strict=True))
            result["found"][f"{search} {kind}"] = hits / (negatives * len(sample))
            result["similarity"][f"{search} {kind}"] = mean_similarity(vectors, sample, found)
            del mined
        result["similarity"][f"exact {kind}"] = mean_similarity(vectors, sample, truth)
        del vectors
    result["peak_mib"] = status_bytes("VmHWM") / 2**20
    return result


def exact_negatives(train, vectors, sample, negatives: int) -> list[np.ndarray]:
    """The exact mined negatives (rows) of the ``sample`` rows: faiss exact top-k against all, other groups only."""
    import faiss

    hits = faiss.knn(vectors[sample], vectors, negatives + 64, metric=faiss.METRIC_INNER_PRODUCT)[1]
    return [np.array([h for h in row_hits if train[h].group_id != train[row].group_id][:negatives])
            for row, row_hits in zip(sample, hits, strict=True)]  # fmt: skip


def mean_similarity(vectors: np.ndarray, sample: np.ndarray, negatives: list[np.ndarray]) -> float:
    """The mean inner product of the ``sample`` rows with their ``negatives`` (rows): how hard they are."""
    return float(
        np.mean(np.concatenate([vectors[rows] @ vectors[row] for row, rows in zip(sample, negatives, strict=True)]))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--searches", nargs="+", choices=["exact", "ivf", "hnsw"], default=["exact", "ivf", "hnsw"])
    parser.add_argument("--embeddings", nargs="+", choices=["random", "clustered"], default=["random", "clustered"])
    parser.add_argument("--exact-up-to", type=int, default=200_000, help="mine exactly up to this many products "
                        "(O(N^2): about an hour at 1M on 2 cores, by the formula)")  # fmt: skip
    parser.add_argument("--hnsw-up-to", type=int, default=200_000, help="mine with HNSW up to this many products "
                        "(1,551 s at 1M random in the last run)")  # fmt: skip
    parser.add_argument("--negatives", type=int, default=4, help="hard negatives per product")
    parser.add_argument("--dim", type=int, default=256, help="embedding size for mining")
    parser.add_argument("--workdir", help="where the catalogs and rows go (default: a temporary folder)")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args)))
        return
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            workdir = Path(args.workdir or scratch) / f"catalog_{size}"
            workdir.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "--measure", str(size), "--negatives", str(args.negatives),
                       "--dim", str(args.dim), "--workdir", str(workdir), "--searches", *args.searches,
                       "--embeddings", *args.embeddings, "--exact-up-to", str(args.exact_up_to),
                       "--hnsw-up-to", str(args.hnsw_up_to)]  # fmt: skip
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(f"measured {size} products", file=sys.stderr)
    stages = list(dict.fromkeys(stage for r in results for stage in r["seconds"]))
    print(f"synthetic catalog (dev catalog's category tree), {args.negatives} hard negatives, mining dim {args.dim}")
    print(f"{'stage':<24} " + " ".join(f"{str(r['products']) + ' s':>12} {'us/product':>10}" for r in results))
    for stage in stages:
        cells = " ".join(f"{r['seconds'][stage]:12.1f} {r['seconds'][stage] / r['products'] * 1e6:10.1f}"
                         if stage in r["seconds"] else f"{'-':>12} {'-':>10}" for r in results)  # fmt: skip
        print(f"{stage:<24} {cells}")
    print(f"{'peak MiB after prepare':<24} " + " ".join(f"{r['prepare_peak_mib']:12.0f} {'':>10}" for r in results))
    print(f"{'peak MiB':<24} " + " ".join(f"{r['peak_mib']:12.0f} {'':>10}" for r in results))
    for r in results:
        for name, share in r["found"].items():
            exact = r["similarity"][f"exact {name.split()[1]}"]
            print(f"mine {name} at {r['products']} products: {share:.3f} of the exact negatives found, mean "
                  f"similarity {r['similarity'][name]:.4f} (the exact ones' {exact:.4f}; "
                  f"{min(SAMPLE, r['products'])} sampled products)")  # fmt: skip
    for r in results:
        for kind, codes in r["ivf"].items():
            print(f"mine ivf {kind} at {r['products']} products: {codes:.0f} codes scanned per query")
    small, large = results[0], results[-1]
    growth = large["products"] / small["products"]
    ratios = ", ".join(f"{s} {large['seconds'][s] / small['seconds'][s] / growth:.2f}x" for s in stages
                       if s in small["seconds"] and s in large["seconds"])  # fmt: skip
    print(f"time per product, {large['products']} vs {small['products']}: {ratios}")


if __name__ == "__main__":
    main()
