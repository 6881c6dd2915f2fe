"""Approximate nearest-neighbour search against faiss exact search, measured in one run on this machine.

    python benchmarks/ann_search.py [--sizes 100000 1000000] [--queries 10000] [--data clustered random]
                                    [--hnsw-up-to 100000] [--milvus-up-to 100000] [--threads N]

For each catalog size and data set, top-10 inner product over unit vectors (``--dim``, 256), ``--queries``
new products drawn like the catalog (not catalog rows: a query never finds itself):

- ``flat``: faiss ``IndexFlatIP``, exact, all threads: the baseline and the ground truth;
- ``hnsw``: ``IndexHNSWFlat`` (M 32, efConstruction 40), efSearch swept, up to ``--hnsw-up-to`` vectors (its
  build is the slowest: build it at larger sizes by raising the bound);
- ``ivf``: ``moon_swift.core.vector_search``'s ``IndexIVFFlat`` (nlist = 4 sqrt(N), exact coarse search),
  nprobe swept; ``ivf sq8 rf``: the same lists holding 8-bit codes, the best ``IVF_REFINE_FACTOR`` x 10
  re-ranked exactly (``IndexRefineFlat``): what ``moon-swift index`` builds for ``ivf`` and large ``auto``;
  ``ivf hnswq``: its mining variant (an HNSW graph over the centroids, a list per
  ``IVF_LIST_SIZE`` vectors on average: per-query work about constant in N while the lists stay equal), nprobe swept;
- ``milvus``: Milvus Lite (``pymilvus`` + ``milvus-lite``) IVF_FLAT, up to ``--milvus-up-to`` vectors.

Per row: build seconds, queries/s (best of ``--repeats`` searches; the spread between repeats is printed),
speed-up over flat, recall@10 against flat's top-10, and memory: resident-set growth while building (for
flat, the index's own copy of the vectors). Data sets:

- ``clustered``: products around category centroids, the dev catalog's shape (its rows' category paths and
  attributes, cycled, as ``benchmarks/catalog_scale.py``): a vector is the normalised sum of random unit
  directions for its master / sub / leaf category (weights 1, 1, 1), each attribute value (0.5 each:
  gender, colour, season, usage), its group of 3 colour variants (0.7), and its own noise (isotropic,
  norm 1): a documented synthetic mixture, not trained embeddings;
- ``random``: uniform on the sphere, no structure at all: the worst case for any approximate index.

At the end, per size and data set, the fastest setting of each method with recall@10 >= 0.95 (the goal:
>= 20x flat's queries/s at that recall).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from process_memory import status_bytes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_DATA = Path(os.environ.get("MOON_SHARED_DATA", REPO.parent / "shared" / "data"))
CATALOG = SHARED_DATA / "fashion-catalog-dev" / "products.csv"
EF_SEARCH = (16, 32, 64, 128, 256)
NPROBE = (1, 2, 4, 8, 12, 16, 20, 24, 32, 64, 128)
GOAL_RECALL, GOAL_SPEEDUP = 0.95, 20.0
COMPONENT_WEIGHTS = {"masterCategory": 1.0, "subCategory": 1.0, "articleType": 1.0, "gender": 0.5,
                     "baseColour": 0.5, "season": 0.5, "usage": 0.5}  # fmt: skip
GROUP_WEIGHT, NOISE_WEIGHT, GROUP_SIZE = 0.7, 1.0, 3


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(count: int, dim: int, seed: int, chunk: int = 3 * 2**15) -> np.ndarray:
    """``count`` products of the mixture above (rows of the dev catalog cycled; a synthetic tree without it),
    built ``chunk`` rows at a time so the only large array is the result."""
    rng = np.random.default_rng(seed)
    if CATALOG.exists():
        with CATALOG.open(encoding="utf-8") as f:
            shapes = [{c: row[c] for c in COMPONENT_WEIGHTS} for row in csv.DictReader(f)]
    else:  # stand-in: 3,000 rows, each column's value the row number modulo a few (6 masters, 30 subs, ...)
        counts = dict(zip(COMPONENT_WEIGHTS, (6, 30, 75, 5, 44, 4, 8), strict=True))
        shapes = [{c: f"{c}{i % n}" for c, n in counts.items()} for i in range(3000)]
        print(f"no dev catalog at {CATALOG}: a synthetic category tree instead", file=sys.stderr)
    per_shape = np.zeros((len(shapes), dim), dtype=np.float32)  # the category + attribute part of each row
    for column, weight in COMPONENT_WEIGHTS.items():
        values = sorted({s[column] for s in shapes})
        directions = _unit(rng.standard_normal((len(values), dim), dtype=np.float32)) * weight
        per_shape += directions[[values.index(s[column]) for s in shapes]]
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        rows = np.arange(start, min(count, start + chunk))
        group_rng = np.random.default_rng([seed, 1, start])  # groups of GROUP_SIZE: chunk starts are multiples
        groups = _unit(group_rng.standard_normal(((len(rows) + GROUP_SIZE - 1) // GROUP_SIZE, dim), dtype=np.float32))
        part = per_shape[rows % len(shapes)] + GROUP_WEIGHT * groups[(rows - start) // GROUP_SIZE]
        part += NOISE_WEIGHT * _unit(rng.standard_normal((len(rows), dim), dtype=np.float32))
        out[rows] = _unit(part)
    return out


def random_sphere(count: int, dim: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng(seed).standard_normal((count, dim), dtype=np.float32))


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def timed_search(search, queries: np.ndarray, repeats: int) -> tuple[float, float, np.ndarray]:
    """(queries/s of the fastest repeat, spread between repeats, ids)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ids = search(queries)
        times.append(time.perf_counter() - start)
    return len(queries) / min(times), max(times) / min(times) - 1, ids


def built(make):
    """(index, build seconds, resident-set growth in MiB) of ``make()``."""
    before, start = status_bytes("VmRSS"), time.perf_counter()
    index = make()
    return index, time.perf_counter() - start, (status_bytes("VmRSS") - before) / 2**20


def milvus_rows(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, repeats: int) -> list[dict]:
    """Milvus Lite IVF_FLAT (nlist 4 sqrt(N)), nprobe swept, or one row saying why it cannot run."""
    try:
        from pymilvus import DataType, MilvusClient
    except ImportError as error:
        return [{"method": "milvus", "note": f"not run: {error}"}]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        try:
            client = MilvusClient(str(Path(scratch) / "bench.db"))
            nlist = int(4 * np.sqrt(len(base)))

            def make():
                schema = MilvusClient.create_schema(auto_id=False)
                schema.add_field("id", DataType.INT64, is_primary=True)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=base.shape[1])
                client.create_collection("bench", schema=schema)
                for start in range(0, len(base), 10_000):
                    chunk = base[start : start + 10_000]
                    client.insert("bench", [{"id": start + i, "vector": v} for i, v in enumerate(chunk)])
                client.flush("bench")
                params = client.prepare_index_params()
                params.add_index(field_name="vector", index_type="IVF_FLAT", metric_type="IP", params={"nlist": nlist})
                client.create_index("bench", params)
                client.load_collection("bench")
                return client

            _, seconds, memory = built(make)
            kind = client.describe_index("bench", "vector").get("index_type", "?")
            for nprobe in NPROBE:

                def search(q, nprobe=nprobe):
                    hits = []
                    for start in range(0, len(q), 1000):
                        found = client.search(
                            "bench",
                            data=list(q[start : start + 1000]),
                            limit=10,
                            search_params={"metric_type": "IP", "params": {"nprobe": nprobe}},
                        )
                        hits += [[hit["id"] for hit in row] for row in found]
                    return np.array(hits)

                qps, spread, ids = timed_search(search, queries, repeats)
                rows.append(
                    {
                        "method": "milvus",
                        "params": f"{kind} nlist {nlist} nprobe {nprobe}",
                        "build": seconds,
                        "qps": qps,
                        "spread": spread,
                        "recall": recall_at_10(ids, truth),
                        "memory": memory,
                    }
                )
        except Exception as error:  # noqa: BLE001  (whatever Milvus Lite refuses is the finding)
            rows.append({"method": "milvus", "note": f"not run: {type(error).__name__}: {str(error)[:200]}"})
    return rows


def measure(size: int, data: str, args) -> list[dict]:
    from moon_swift.core.vector_search import HNSW_M, IVF_REFINE_FACTOR, build_index, ivf_lists, set_search_depth

    make_data = clustered if data == "clustered" else random_sphere
    vectors = make_data(size + args.queries, args.dim, seed=size)
    base, queries = vectors[:size], np.ascontiguousarray(vectors[size:])
    del vectors
    rows = []
    flat, seconds, memory = built(lambda: build_index(base, "flat"))

    def exact(q, index=flat):
        return index.search(q, 10)[1]

    qps, spread, truth = timed_search(exact, queries, args.repeats)
    rows.append({"method": "flat", "params": "exact", "build": seconds, "qps": qps, "spread": spread, "recall": 1.0,
                 "memory": memory})  # fmt: skip
    del flat, exact

    def sweep(method, index, seconds, memory, settings, describe):
        for setting in settings:
            describe_now = describe(setting)
            qps, spread, ids = timed_search(lambda q: index.search(q, 10)[1], queries, args.repeats)
            rows.append({"method": method, "params": describe_now, "build": seconds, "qps": qps, "spread": spread,
                         "recall": recall_at_10(ids, truth), "memory": memory})  # fmt: skip
            print(f"  {size} {data} {method} {describe_now}: {rows[-1]['recall']:.3f}", file=sys.stderr, flush=True)

    refined = {"storage": "sq8", "refine_factor": IVF_REFINE_FACTOR}
    for method, coarse, storage in (("ivf", "flat", {}), ("ivf sq8 rf", "flat", refined), ("ivf hnswq", "hnsw", {})):
        nlist = ivf_lists(size, coarse)
        index, seconds, memory = built(lambda c=coarse, s=storage: build_index(base, "ivf", coarse=c, **s))

        def ivf_depth(nprobe, index=index, nlist=nlist):
            set_search_depth(index, nprobe=nprobe)
            return f"nlist {nlist} nprobe {nprobe}"

        sweep(method, index, seconds, memory, NPROBE, ivf_depth)
        del index
    if size <= args.hnsw_up_to:
        index, seconds, memory = built(lambda: build_index(base, "hnsw"))

        def hnsw_depth(ef, index=index):
            set_search_depth(index, ef_search=ef)
            return f"M {HNSW_M} efSearch {ef}"

        sweep("hnsw", index, seconds, memory, EF_SEARCH, hnsw_depth)
        del index
    else:
        rows.append({"method": "hnsw", "note": f"not built: {size} > --hnsw-up-to {args.hnsw_up_to}"})
    if size <= args.milvus_up_to:
        rows += milvus_rows(base, queries, truth, args.repeats)
    else:
        rows.append({"method": "milvus", "note": f"not run: {size} > --milvus-up-to {args.milvus_up_to}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--data", nargs="+", choices=["clustered", "random"], default=["clustered", "random"])
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="searches per setting (the fastest is reported)")
    parser.add_argument("--hnsw-up-to", type=int, default=100_000, help="build HNSW graphs up to this many vectors")
    parser.add_argument("--milvus-up-to", type=int, default=100_000, help="run Milvus Lite up to this many vectors")
    parser.add_argument("--threads", type=int, help="faiss threads (default: all cores)")
    args = parser.parse_args()
    for name in ("sizes", "queries", "dim", "repeats", "threads"):
        values = getattr(args, name)
        if values is not None and min(values if isinstance(values, list) else [values]) < 1:
            parser.error(f"--{name} must be positive")
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(f"top-10 inner product, {args.queries} queries, dim {args.dim}, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads")  # fmt: skip
    header = (f"{'size':>9} {'data':<9} {'method':<10} {'parameters':<30} {'build s':>8} {'queries/s':>10} "
              f"{'spread':>6} {'x flat':>7} {'recall@10':>9} {'MiB':>6}")  # fmt: skip
    best = []
    for size in args.sizes:
        for data in args.data:
            rows = measure(size, data, args)
            flat_qps = rows[0]["qps"]
            print(header)
            for r in rows:
                if "note" in r:
                    print(f"{size:>9} {data:<9} {r['method']:<10} {r['note']}")
                    continue
                r["speedup"] = r["qps"] / flat_qps
                print(f"{size:>9} {data:<9} {r['method']:<10} {r['params']:<30} {r['build']:8.1f} {r['qps']:10.0f} "
                      f"{r['spread']:6.0%} {r['speedup']:7.1f} {r['recall']:9.3f} {r['memory']:6.0f}")  # fmt: skip
            for method in dict.fromkeys(r["method"] for r in rows if "note" not in r and r["method"] != "flat"):
                ok = [r for r in rows if r["method"] == method and "note" not in r and r["recall"] >= GOAL_RECALL]
                top = max(ok, key=lambda r: r["qps"]) if ok else None
                best.append(f"{size:>9} {data:<9} {method:<10} " + (
                    f"{top['params']:<30} {top['speedup']:6.1f}x flat at recall@10 {top['recall']:.3f}: goal "
                    + ("met" if top["speedup"] >= GOAL_SPEEDUP else "not met") if top
                    else f"never reaches recall@10 {GOAL_RECALL}"))  # fmt: skip
            sys.stdout.flush()
    print(f"\nfastest setting per method with recall@10 >= {GOAL_RECALL} (goal: >= {GOAL_SPEEDUP:.0f}x flat):")
    print("\n".join(best))


if __name__ == "__main__":
    main()
