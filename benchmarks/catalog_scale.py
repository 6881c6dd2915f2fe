"""The data tools at catalog scale: wall time and peak memory at 100k and 1M products, in one run.

    python benchmarks/catalog_scale.py [--sizes 100000 1000000] [--negatives 4] [--dim 256] [--workdir DIR]

Each size runs in a fresh subprocess (its peak resident set, VmHWM, is its own) on a synthetic catalog:
image-free products whose category paths and attributes are the dev catalog's rows, cycled (so its category
tree and its 69 leaf categories' relative sizes: at 1M the largest, Tshirts, holds ~175k products),
every 3 consecutive products one group (colour variants). Stages, as `moon-swift prepare-data` runs them:

1. ``write``: the catalog as products JSONL (setup, not a prepare-data stage);
2. ``prepare``: ``load_products`` + ``prepare_data`` with ``--hard-negatives``: the held-out split, the
   same-category negatives (``category_negatives``), the swift rows and product files written;
3. ``mine hnsw``: ``mined_negatives`` of the training products from random unit embeddings with HNSW
   (``--mine-search hnsw``), and ``mine exact`` (faiss exact top-k, the default) up to 200k training
   products, with the share of the exact negatives HNSW found. Random embeddings have no cluster
   structure: the hardest case for an approximate search.

It prints seconds and microseconds per product for every stage, the peak RSS, and the ratio of time per
product between the largest and the smallest size.
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

from process_memory import status_bytes

SHARED_DATA = Path(os.environ.get("MOON_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CATALOG = SHARED_DATA / "fashion-catalog-dev"
#: exact mining is run up to this many training products (O(N^2): about an hour at 1M on 2 cores, by the formula)
EXACT_UP_TO = 200_000


def write_catalog(path: Path, products: int) -> None:
    from moon_swift.data import read_fashion_catalog

    shapes = read_fashion_catalog(CATALOG, on_bad_row="skip")
    with path.open("w", encoding="utf-8") as out:
        for i in range(products):
            shape = shapes[i % len(shapes)]
            row = {"product_id": f"syn{i:07d}", "title": f"{shape.title} {i}", "images": [], "group_id": f"g{i // 3}",
                   "category_path": shape.category_path, "attributes": shape.attributes}  # fmt: skip
            out.write(json.dumps(row) + "\n")


def measure(products: int, negatives: int, dim: int, workdir: Path) -> dict:
    """One size, in this process: seconds per stage and the peak RSS."""
    import numpy as np

    from moon_swift.data.negatives import mined_negatives
    from moon_swift.data.prepare import prepare_data
    from moon_swift.data.sources import load_products
    from moon_swift.data.swift_rows import split_records

    seconds = {}
    catalog = workdir / "catalog.jsonl"
    start = time.perf_counter()
    write_catalog(catalog, products)
    seconds["write"] = time.perf_counter() - start

    start = time.perf_counter()
    records, pairs = load_products(str(catalog), "records")
    prepare_data(records, pairs, workdir / "prepared", hard_negatives=negatives, seed=0)
    seconds["prepare"] = time.perf_counter() - start

    train, _ = split_records(records, 0.1)
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((len(train), dim), dtype=np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    mined = {}
    for search in ("hnsw", "exact"):
        if search == "exact" and len(train) > EXACT_UP_TO:
            continue
        start = time.perf_counter()
        mined[search] = mined_negatives(train, embeddings, negatives, search=search)
        seconds[f"mine {search}"] = time.perf_counter() - start
        assert len(mined[search]) == len(train) and all(len(m) == negatives for m in mined[search])
    result = {"products": products, "seconds": seconds, "peak_mib": status_bytes("VmHWM") / 2**20}
    if "exact" in mined:
        pairs = zip(mined["hnsw"], mined["exact"], strict=True)
        same = sum(len({id(r) for r in a} & {id(r) for r in b}) for a, b in pairs)
        result["hnsw_recall"] = same / (negatives * len(train))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--negatives", type=int, default=4, help="hard negatives per product")
    parser.add_argument("--dim", type=int, default=256, help="embedding size for mining")
    parser.add_argument("--workdir", help="where the catalogs and rows go (default: a temporary folder)")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.negatives, args.dim, Path(args.workdir))))
        return
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            workdir = Path(args.workdir or scratch) / f"catalog_{size}"
            workdir.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "--measure", str(size), "--negatives", str(args.negatives),
                       "--dim", str(args.dim), "--workdir", str(workdir)]  # fmt: skip
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(f"measured {size} products", file=sys.stderr)
    stages = list(dict.fromkeys(stage for r in results for stage in r["seconds"]))
    print(f"synthetic catalog (dev catalog's category tree), {args.negatives} hard negatives, mining dim {args.dim}")
    print(f"{'products':>10} " + " ".join(f"{s + ' s':>13} {'us/product':>10}" for s in stages) + f" {'peak MiB':>9}")
    for r in results:
        cells = " ".join(f"{r['seconds'][s]:13.1f} {r['seconds'][s] / r['products'] * 1e6:10.1f}" if s in r["seconds"]
                         else f"{'-':>13} {'-':>10}" for s in stages)  # fmt: skip
        print(f"{r['products']:>10} {cells} {r['peak_mib']:9.0f}")
    for r in results:
        if "hnsw_recall" in r:
            print(f"hnsw mining at {r['products']} products: {r['hnsw_recall']:.3f} of the exact negatives found")
    small, large = results[0], results[-1]
    growth = large["products"] / small["products"]
    ratios = ", ".join(f"{s} {large['seconds'][s] / small['seconds'][s] / growth:.2f}x" for s in stages
                       if s in small["seconds"] and s in large["seconds"])  # fmt: skip
    print(f"time per product, {large['products']} vs {small['products']}: {ratios}")


if __name__ == "__main__":
    main()
