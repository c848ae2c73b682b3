"""Run one suite selection in N local worker processes, shard k/N each, all writing to one store.

What a multi-core GPU machine needs: small sequential models leave a GPU mostly idle, so several
processes share it (each one torch thread unless OMP_NUM_THREADS says otherwise). Each worker is
the ordinary `bench suite run ... --shard k/N` command, logging to <home>/logs/; a cell another
process holds is skipped by its lock, so workers never train the same cell twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 30.0


def worker_commands(args: list[str], n: int) -> list[list[str]]:
    """`bench <args> --shard k/N` for k = 1..n (args must not hold --shard or --jobs)."""
    return [[sys.executable, "-m", "bench", *args, "--shard", f"{k}/{n}"] for k in range(1, n + 1)]


def run_workers(args: list[str], n: int, home: Path, reporter, poll_s: float = POLL_S) -> list[int]:
    """Start the n workers, report progress until all exit, and return their exit codes."""
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    procs = []
    for k, cmd in enumerate(worker_commands(args, n), 1):
        log = open(log_dir / f"{stamp}-worker-{k}-of-{n}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    reporter.info(f"{n} workers started; logs: {log_dir}/{stamp}-worker-*-of-{n}.log")
    started = time.perf_counter()
    try:
        while alive := [p for p, _ in procs if p.poll() is None]:
            try:
                alive[0].wait(timeout=poll_s)  # returns as soon as that worker ends
            except subprocess.TimeoutExpired:
                reporter.info(f"{time.perf_counter() - started:.0f}s: {len(alive)}/{n} workers running")
    except KeyboardInterrupt:
        for p, _ in procs:
            p.terminate()  # their runs stay incomplete and resume from checkpoints next time
        raise
    finally:
        for _, log in procs:
            log.close()
    return [p.returncode for p, _ in procs]
