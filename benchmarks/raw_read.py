"""Streaming read of a raw Amazon 2018 dump at full-category size: time and peak memory.

    python benchmarks/raw_read.py --lines 2000000 --dir /tmp/raw_bench

Writes (once) a generated `Bench_5.json.gz` of --lines review lines in the 2018 format (heavy-tailed
users and items, ~1 KB per line like real reviews) and its `meta_Bench.json.gz`, then reads it with
`bench.data.amazon_raw.read_amazon_raw` in a fresh process and prints lines/s and peak RSS.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def generate(folder: Path, lines: int, seed: int = 0) -> None:
    reviews = folder / "Bench_5.json.gz"
    if reviews.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # like a 5-core dump: users with 5+ reviews (mean ~9), heavy-tailed item popularity, and
    # (almost) no repeated user-item pair
    per_user = 5 + rng.geometric(0.25, lines // 8)
    users = np.repeat(np.arange(len(per_user)), per_user)[:lines]
    n_items = max(lines // 20, 10)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=len(users), p=popularity / popularity.sum())
    times = rng.integers(1_300_000_000, 1_550_000_000, len(users))
    text = "x" * 900  # a review's text and summary: real lines are about 1 KB
    tmp = reviews.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
        for u, i, t in zip(users.tolist(), items.tolist(), times.tolist()):
            f.write(json.dumps({"overall": 5.0, "reviewerID": f"U{u:09d}", "asin": f"B{i:09d}",
                                "unixReviewTime": t, "reviewText": text, "summary": "ok"}) + "\n")
    tmp.rename(reviews)
    with gzip.open(folder / "meta_Bench.json.gz", "wt", encoding="utf-8") as f:
        for i in range(n_items):
            f.write(json.dumps({"asin": f"B{i:09d}", "title": f"item {i}", "brand": "b", "category": ["c"]}) + "\n")


def read_once(folder: Path) -> None:
    from bench.data.amazon_raw import read_amazon_raw

    started = time.perf_counter()
    ds = read_amazon_raw(folder, "Bench", "bench", k_core_min=5)
    seconds = time.perf_counter() - started
    lines = ds.meta["lines_read"]["interactions"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = (folder / "Bench_5.json.gz").stat().st_size / 2**20
    print(f"{lines:,} lines ({size:.0f} MiB gz) -> {ds.n_users:,} users, {ds.n_items:,} items, "
          f"{ds.n_interactions:,} interactions after 5-core: {seconds:.1f} s "
          f"({lines / seconds:,.0f} lines/s), peak RSS {peak:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/raw_bench"))
    ap.add_argument("--read-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = args.dir / str(args.lines)
    if args.read_only:
        read_once(folder)
        return
    generate(folder, args.lines)
    # a fresh process, so the peak RSS is the reader's alone
    subprocess.run([sys.executable, __file__, "--lines", str(args.lines), "--dir", str(args.dir), "--read-only"],
                   check=True)


if __name__ == "__main__":
    main()
