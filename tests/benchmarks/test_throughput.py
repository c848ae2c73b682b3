"""pytest-benchmark suite (not part of the default test run):

    python -m pytest tests/benchmarks --benchmark-only -o addopts="" -p no:cacheprovider

Side-by-side groups: packed vs prefix training epochs, dense vs chunked softmax CE, plus full-ranking
evaluation throughput and raw-dump reading. Figures depend on the machine; compare within a group.
The RecBole comparison lives in `bench perf` (RecBole runs in its own environment).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.amazon_raw import read_amazon_raw
from bench.engine.batching import iterate_batches, make_rows
from bench.engine.evaluator import EvalConfig, evaluate
from bench.nn.model import ModelContext
from bench.nn.softmax_ce import softmax_ce
from bench.plugins import get_model_class
from protocols import PROTOCOLS

USERS = 2000
MAX_LEN = 50


@pytest.fixture(scope="module", autouse=True)
def threads():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))


@pytest.fixture(scope="module")
def sasrec_and_split(scientific):
    loo = PROTOCOLS.get("leave_one_out")
    split = loo(loo.Config(max_users=USERS, max_len=MAX_LEN)).split(scientific)
    cls = get_model_class("sasrec")
    model = cls(cls.Config(), ModelContext(split.n_items, MAX_LEN, split.train.item_counts(split.n_items)))
    return model, split


def one_epoch(model, inp, tgt, batch_size):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for batch in iterate_batches(inp, tgt, batch_size, torch.Generator().manual_seed(0)):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.benchmark(group="sasrec-epoch")
@pytest.mark.parametrize("mode,batch_size", [("packed", 64), ("prefix", 256)])
def test_sasrec_epoch(benchmark, sasrec_and_split, mode, batch_size):
    model, split = sasrec_and_split
    inp, tgt = make_rows(split.train, MAX_LEN, mode)
    benchmark.extra_info["rows"] = len(inp)
    benchmark.pedantic(one_epoch, args=(model, inp, tgt, batch_size), rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="evaluation")
def test_full_ranking_validation_pass(benchmark, sasrec_and_split):
    model, split = sasrec_and_split
    result = benchmark.pedantic(evaluate, args=(model, split.valid, MAX_LEN, EvalConfig(), torch.device("cpu")),
                                rounds=5, warmup_rounds=1)
    benchmark.extra_info["users"] = len(result.ranks)
    assert len(result.ranks) == len(split.valid.targets)


@pytest.mark.benchmark(group="softmax-ce-100k-items")
@pytest.mark.parametrize("path", ["dense", "chunked"])
def test_softmax_ce_forward_backward(benchmark, path):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(512, 64, generator=g, requires_grad=True)
    table = torch.randn(100_000, 64, generator=g, requires_grad=True)
    target = torch.randint(0, 100_000, (512,), generator=g)
    limit = 2**40 if path == "dense" else 0

    def step():
        softmax_ce(h, table, target, max_logits=limit).backward()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="raw-read")
def test_read_raw_dump(benchmark, tmp_path):
    rng = np.random.default_rng(0)
    n = 100_000
    users, items = np.repeat(np.arange(n // 10), 10), rng.integers(0, 2000, n)
    with gzip.open(tmp_path / "Bench_5.json.gz", "wt") as f:
        for u, i, t in zip(users.tolist(), items.tolist(), rng.integers(0, 10**9, n).tolist()):
            f.write(json.dumps({"reviewerID": f"U{u}", "asin": f"B{i}", "unixReviewTime": t, "reviewText": "x" * 500}) + "\n")
    with gzip.open(tmp_path / "meta_Bench.json.gz", "wt") as f:
        for i in range(2000):
            f.write(json.dumps({"asin": f"B{i}", "title": f"item {i}"}) + "\n")
    ds = benchmark.pedantic(read_amazon_raw, args=(Path(tmp_path), "Bench", "b", 5), rounds=3)
    benchmark.extra_info["lines_per_round"] = n
    assert ds.meta["lines_read"]["interactions"] == n
