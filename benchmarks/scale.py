"""Scale check: full-ranking evaluation and a few training steps of SASRec (CE) on a generated
dataset of N users x N items (default 100k x 100k), reporting users/s and peak memory.

    python benchmarks/scale.py [--users 100000] [--items 100000] [--steps 20]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

import bench.nn.softmax_ce
from bench.data.dataset import from_sequences
from bench.engine.batching import iterate_batches, make_rows
from bench.engine.evaluator import EvalConfig, evaluate
from bench.nn.model import ModelContext
from bench.plugins import get_model_class
from protocols import PROTOCOLS


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=20, help="training steps timed")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dense-ce", action="store_true", help="hold all logits at once (the pre-chunking loss)")
    a = ap.parse_args()
    if a.dense_ce:
        bench.nn.softmax_ce.MAX_DENSE_LOGITS = 2**62
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 21, a.users)
    popularity = rng.zipf(1.2, a.items * 4) % a.items + 1  # skewed item draws
    flat = popularity[rng.integers(0, len(popularity), lengths.sum())]
    seqs = np.split(flat, np.cumsum(lengths)[:-1])
    ds = from_sequences("synthetic", [str(i) for i in range(a.items)], [str(u) for u in range(a.users)], seqs)
    loo = PROTOCOLS.get("leave_one_out")
    t = time.perf_counter()
    split = loo(loo.Config()).split(ds)
    inp, tgt = make_rows(split.train, 50, "packed")
    print(f"dataset {a.users} users x {a.items} items, {ds.n_interactions} interactions; "
          f"split + rows {time.perf_counter() - t:.1f}s; peak RSS {rss_mib():.0f} MiB")
    cls = get_model_class("sasrec")
    model = cls(cls.Config(), ModelContext(ds.n_items, 50, split.train.item_counts(ds.n_items)))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    t, done = time.perf_counter(), 0
    for batch in iterate_batches(inp, tgt, a.batch, torch.Generator().manual_seed(0)):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if done == a.steps:
            break
    step_s = (time.perf_counter() - t) / done
    print(f"training: {step_s:.3f} s/step of {a.batch} rows -> {step_s * len(inp) / a.batch / 60:.1f} min/epoch "
          f"({len(inp)} rows); peak RSS {rss_mib():.0f} MiB")
    cfg = EvalConfig()
    t = time.perf_counter()
    res = evaluate(model, split.valid, 50, cfg, torch.device("cpu"))
    s = time.perf_counter() - t
    print(f"full-ranking evaluation of {len(split.valid)} users over {ds.n_items} items: {s:.1f}s "
          f"({len(split.valid) / s:.0f} users/s, chunks of {cfg.max_scores_in_memory // (ds.n_items + 1)} users); "
          f"peak RSS {rss_mib():.0f} MiB; mean rank {res.ranks.mean():.0f}")


if __name__ == "__main__":
    main()
