"""Run the same spec twice from scratch and compare hashes of everything it measured."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.engine.runner import RunEnv, execute
from bench.engine.spec import RunSpec

KNOWN_SOURCES = [
    "CPU: results are reproducible for a fixed torch thread count and CPU; a different thread count or "
    "instruction set changes floating-point reduction order",
    "CUDA: bf16 autocast and cuBLAS/cuDNN kernel choice; deterministic algorithms are requested "
    "(CUBLAS_WORKSPACE_CONFIG=:4096:8), ops without a deterministic kernel only warn",
]


def enable_deterministic_algorithms() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def metric_hash(env: RunEnv, run_hash: str) -> str:
    h = hashlib.sha256()
    for split, metrics in sorted(env.store.per_user(run_hash).items()):
        for name, values in sorted(metrics.items()):
            h.update(f"{split}/{name}".encode())
            h.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def check_determinism(spec: RunSpec, data_root: Path, reporter, home: Path | None = None) -> dict:
    """Two runs, each in a throw-away store; with `home`, both read that home's dataset and feature
    caches (built once there) instead of rebuilding them."""
    enable_deterministic_algorithms()
    hashes = []
    for attempt in (1, 2):
        with tempfile.TemporaryDirectory(prefix="bench-determinism-") as tmp_home:
            if home is not None:
                (home / "cache").mkdir(parents=True, exist_ok=True)
                (Path(tmp_home) / "cache").symlink_to(home / "cache", target_is_directory=True)
            env = RunEnv(data_root, Path(tmp_home), reporter)
            reporter.info(f"determinism check: run {attempt} of 2")
            key, _, _ = execute(spec, env, force=True)
            hashes.append(metric_hash(env, key))
    return {
        "model": spec.model, "dataset": spec.dataset, "seed": spec.seed,
        "metric_hashes": hashes, "identical": hashes[0] == hashes[1],
        "torch_threads": torch.get_num_threads(), "remaining_sources": KNOWN_SOURCES,
    }
