"""The worker side of distributed execution: one cell (or one tuning worker) run on a cluster node.

Nothing here imports Ray: these are plain functions that bench/experiment/executors.py wraps as Ray tasks.
A worker never writes the driver's store. It runs in a node-local scratch home
($BENCH_RAY_SCRATCH, else <tmp>/bench-ray-<uid>, one folder per driver home) that holds the
run's resume checkpoints and shared pre-training stages, so a task retried on the same node
resumes and one retried elsewhere restarts; the finished record and per-user arrays go back to
the driver, which alone writes its store. The item cache is the driver's when that path exists
on the node (one machine, or a shared filesystem), else the scratch home's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from bench.errors import BenchError

EXECUTIONS_LOG = "executions.jsonl"  # per scratch home: which node started/finished which cell


def scratch_path(driver_home: str, base: str | Path | None = None) -> Path:
    """Where this node's scratch home for the given driver home is (nothing created)."""
    base = base or os.environ.get("BENCH_RAY_SCRATCH") or Path(tempfile.gettempdir()) / f"bench-ray-{os.getuid()}"
    return Path(base) / hashlib.sha256(driver_home.encode()).hexdigest()[:12]


def scratch_home(driver_home: str) -> Path:
    """This node's scratch home for the given driver home (created, with its cache linked)."""
    home = scratch_path(driver_home)
    home.mkdir(parents=True, exist_ok=True)
    cache, shared = home / "cache", Path(driver_home) / "cache"
    if not cache.exists() and not cache.is_symlink():
        try:
            if shared.is_dir():  # same machine or a shared filesystem: reuse parsed data and features
                cache.symlink_to(shared.resolve(), target_is_directory=True)
            else:
                cache.mkdir()
        except FileExistsError:  # another worker on this node made it first
            pass
    return home


def node_data_root(wanted: str) -> Path:
    """The driver's data root if this node has it, else this node's $BENCH_DATA_ROOT."""
    for candidate in (wanted, os.environ.get("BENCH_DATA_ROOT")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise BenchError(f"node {socket.gethostname()}: data root {wanted} not found; every node needs the datasets "
                     "at that path (or $BENCH_DATA_ROOT set for the Ray workers)")


def log_execution(home: Path, key: str, event: str, **extra) -> None:
    """Append one line to the scratch home's executions log (audit: where and how often a cell ran)."""
    line = json.dumps({"key": key, "event": event, "host": socket.gethostname(), "pid": os.getpid(),
                       "t": round(time.time(), 3), **extra})
    with open(home / EXECUTIONS_LOG, "a") as f:
        f.write(line + "\n")


def executions(home: Path) -> list[dict]:
    path = home / EXECUTIONS_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


_ENVS: dict = {}  # (data root, scratch home) -> RunEnv: a worker process keeps its loaded datasets and splits


def _env(data_root: Path, home: Path, reporter):
    from bench.engine.runner import RunEnv

    env = _ENVS.get((data_root, home))
    if env is None:
        env = _ENVS[(data_root, home)] = RunEnv(data_root, home)
    env.reporter = reporter
    return env


def _threads(n: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def run_cell(payload: dict) -> dict:
    """Run one cell in this node's scratch home; return its record and per-user arrays.

    payload: spec (RunSpec.model_dump()), key (the driver's run hash), data_root, home (the
    driver's), force, threads.
    """
    from bench.engine.runner import execute, run_hash
    from bench.engine.spec import RunSpec
    from bench.progress import Reporter

    _threads(payload.get("threads", 1))
    home = scratch_home(payload["home"])
    spec = RunSpec(**payload["spec"])
    with Reporter(interactive=False, log_every_s=60.0) as reporter:
        env = _env(node_data_root(payload["data_root"]), home, reporter)
        key = run_hash(spec, env)
        if key != payload["key"]:
            raise BenchError(f"node {socket.gethostname()}: run hash {key} differs from the driver's {payload['key']} "
                             "(different data or code on this node)")
        log_execution(home, key, "started")
        # wait=True: a copy of this task still running here (e.g. an orphan of a lost node
        # connection) finishes first and its record is taken, never trained twice in one home
        key, record, ran = execute(spec, env, force=payload.get("force", False), wait=True)
        per_user = env.store.per_user(key)
        log_execution(home, key, "finished", ran=ran)
    # the driver's store is the record; the scratch copy would only go stale
    shutil.rmtree(env.store.run_dir(key), ignore_errors=True)
    return {"key": key, "record": record, "per_user": per_user, "ran": ran, "host": socket.gethostname()}


def run_tune_worker(payload: dict) -> dict:
    """One Optuna worker against the shared study (storage URL fixed by the driver)."""
    from bench.engine.runner import RunEnv
    from bench.experiment.tuning import tune
    from bench.progress import Reporter

    _threads(payload.get("threads", 1))
    home = scratch_home(payload["home"])
    args = dict(payload["tune"])
    with Reporter(interactive=False, log_every_s=60.0) as reporter:
        env = RunEnv(node_data_root(payload["data_root"]), home, reporter)
        summary = tune(env=env, out=home / "tuning" / f"worker-{args['worker']}.best.json", **args)
    return {"worker": args["worker"], "host": socket.gethostname(), "best_value": summary.get("best_value")}
