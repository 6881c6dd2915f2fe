"""What a dataloader worker pays for crop boxes: the parsed box store against its memory-mapped index.

    python benchmarks/box_lookup.py [--images 1000000] [--lookups 100000]

Writes a box store of ``--images`` lines shaped like ``moon-swift detect``'s (one real line's fields, new
hashes), builds its index once (what ``detect`` does at its end), then, each in a fresh process: opening the
store as ``BoxStore`` (parse every line into a dict) or as ``BoxIndex`` (map the index), the resident memory
that adds, and random lookups per second. Every worker of every rank pays the open cost; the index's mapped
pages are shared between them through the page cache, so its resident figure is an upper bound per process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: a line of a real store (moon-swift demo on the dev data), without its hash
SAMPLE_LINE = {
    "image": "catalog/images/0000001_image.jpg",
    "width": 180,
    "height": 320,
    "boxes": [[58.79297142028808, 128.50646209716797, 166.360982131958, 252.89579010009766]],
    "scores": [0.7611081004142761],
    "fallback": False,
    "reason": "top 1 of 3 qualifying by score*area*centrality",
    "candidates": 20,
    "dropped": {"below score threshold": 17, "beyond max crops": 2},
    "detector": {
        "config": "rtmdet_product_tiny.py",
        "checkpoint": "product_detector.pth",
        "fingerprint": "d3c6af5c58535359",
    },
    "policy": {
        "score_threshold": 0.3,
        "max_crops": 1,
        "rank_by": "score*area*centrality",
        "weights": [1.0, 0.5, 0.5],
        "margin": 0.05,
        "min_size_px": 8.0,
        "min_area_fraction": 0.01,
        "fallback_full_image": True,
    },
}

CHILD = r"""
import json, random, sys, time
sys.path.insert(0, sys.argv[4])
from process_memory import status_bytes
kind, store, lookups = sys.argv[1], sys.argv[2], int(sys.argv[3])
from moon_swift.detection.store import BoxStore
from moon_swift.detection.box_index import BoxIndex
before = status_bytes("VmRSS")  # after the imports: the store's own cost
start = time.perf_counter()
opened = BoxStore(store) if kind == "BoxStore" else BoxIndex(store)
opened_s = time.perf_counter() - start
hashes = [l.strip() for l in open(store + ".hashes")]
random.Random(0).shuffle(hashes)
hashes = hashes[:lookups]
start = time.perf_counter()
found = sum(opened.lookup_sha256(h) is not None for h in hashes)
lookup_s = time.perf_counter() - start
assert found == len(hashes), (found, len(hashes))
print(json.dumps({"open_s": opened_s, "rss_mib": (status_bytes("VmRSS") - before) / 2**20,
                  "lookups_per_s": len(hashes) / lookup_s}))
"""


def write_store(path: Path, images: int) -> None:
    with path.open("w") as store, Path(f"{path}.hashes").open("w") as hashes:
        for i in range(images):
            sha = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
            store.write(json.dumps({"sha256": sha, **SAMPLE_LINE}) + "\n")
            hashes.write(sha + "\n")


def run_child(kind: str, store: Path, lookups: int) -> dict:
    # the child imports process_memory.py from this folder
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(store), str(lookups), here], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=100_000)
    args = parser.parse_args()
    from moon_swift.detection.box_index import write_box_index

    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "boxes.jsonl"
        write_store(store, args.images)
        start = time.perf_counter()
        write_box_index(store)
        build_s = time.perf_counter() - start
        lookups = min(args.lookups, args.images)
        parsed, mapped = run_child("BoxStore", store, lookups), run_child("BoxIndex", store, lookups)
        print(f"{args.images} images, store {store.stat().st_size / 2**20:.0f} MiB; index built once in "
              f"{build_s:.1f} s (moon-swift detect does it at its end); {lookups} random lookups")  # fmt: skip
        print(f"{'per process':24s} {'open s':>8s} {'+RSS MiB':>9s} {'lookups/s':>10s}")
        for name, row in (("BoxStore (parse all)", parsed), ("BoxIndex (memory-map)", mapped)):
            print(f"{name:24s} {row['open_s']:8.2f} {row['rss_mib']:9.0f} {row['lookups_per_s']:10.0f}")
        print(f"index / store: open {mapped['open_s'] / parsed['open_s']:.3f}x, "
              f"memory {mapped['rss_mib'] / parsed['rss_mib']:.3f}x, "
              f"lookups/s {mapped['lookups_per_s'] / parsed['lookups_per_s']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
