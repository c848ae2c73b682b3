"""Shared fixtures: the real data root and small real slices of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bench.data.catalog import load_dataset
from protocols import PROTOCOLS

REPO = Path(__file__).resolve().parent.parent

# Small models on small slices: one thread avoids OpenMP oversubscription when other processes
# share the cores (two threads on a loaded 2-core machine ran steps ~60x slower).
torch.set_num_threads(int(os.environ.get("BENCH_TEST_THREADS", "1")))


@pytest.fixture(scope="module")
def two_threads():
    """The sentence encoder's tests run on two threads; put the count back after them, since
    later tests compare numbers bit for bit on one (multi-threaded reductions need not repeat)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("BENCH_DATA_ROOT", REPO.parent / "shared" / "data")).resolve()
    assert root.is_dir(), f"data root {root} not found: set BENCH_DATA_ROOT"
    return root


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="session")
def scientific(data_root, cache):
    return load_dataset("scientific", data_root, cache)


@pytest.fixture(scope="session")
def small_split(scientific):
    """Leave-one-out over the first 400 users of the real Scientific data."""
    loo = PROTOCOLS.get("leave_one_out")
    return loo(loo.Config(max_users=400, max_len=20)).split(scientific)
