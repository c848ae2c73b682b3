"""Suites on a Ray cluster: a head and one worker node started here with `ray start` on 127.0.0.1.

Every cell runs exactly once with records equal to a sequential run; a second driver on the
same suite runs nothing twice; a worker node killed mid-suite (kill -9 of its raylet) loses no
cell and leaves no duplicate or partial record. Each node gets its own scratch folder
($BENCH_RAY_SCRATCH), as separate machines would, and its executions log says which node
trained which cell. Skipped, with the reason, only where Ray is missing or `ray start` fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.engine.runner import RunEnv, run_hash
from bench.errors import BenchError
from bench.experiment.experiment import Experiment
from bench.experiment.suites import cells, load_suite

TINY = {"protocol.max_users": 200, "protocol.max_len": 20, "trainer.epochs": 1, "sasrec.layers": 1,
        "sasrec.hidden": 32}
START_TIMEOUT_S = 120


def write_suite(folder: Path, name: str, **overrides) -> Path:
    data = {"name": name, "title": name, "datasets": ["scientific"], "models": ["pop", "sasrec"], "seeds": [0, 1],
            "overrides": {**TINY, **overrides}, "quick": {"seeds": [0, 1]}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def new_home(tmp_path: Path, cache: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    (home / "cache").symlink_to(cache)  # the session's parsed data: no re-parsing per home
    return home


# ---------------------------------------------------------------- the cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    proc: subprocess.Popen
    log: Path
    scratch: Path

    def raylet_pid(self) -> int:
        """The raylet of this node: a process of its `ray start` session running the raylet binary."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
                same_session = os.getsid(int(entry.name)) == self.proc.pid
            except (OSError, ProcessLookupError):
                continue
            if same_session and cmd.endswith("/raylet"):
                return int(entry.name)
        raise AssertionError(f"no raylet in the session of `ray start` pid {self.proc.pid}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # `ray start --block` stops its node's processes on SIGTERM
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of this node's session is left
        except (ProcessLookupError, PermissionError):
            pass


def start_node(args: list[str], scratch: Path, log: Path) -> Node:
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("Ray cannot start: no `ray` command next to this Python")
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_RAY_SCRATCH": str(scratch), "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
           "RAY_AUTH_MODE": "disabled",  # a test cluster on 127.0.0.1 only
           # a dead node is noticed in ~3 s instead of ~30 s
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
           "RAY_health_check_timeout_ms": "1000"}
    with open(log, "w") as out:
        proc = subprocess.Popen([ray_cli, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                                 "--object-store-memory", str(80 * 2**20), "--disable-usage-stats", "--block"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    node = Node(proc, log, scratch)
    deadline = time.monotonic() + START_TIMEOUT_S
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            node.stop()
            pytest.skip(f"Ray cannot start (`ray start {' '.join(args[:2])}`): {log.read_text()[-600:]}")
        time.sleep(0.5)
    return node


@dataclass
class Cluster:
    address: str
    head: Node
    worker: Node


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    import tempfile

    # a short folder: Ray's unix sockets live under --temp-dir and their paths are length-limited
    root = Path(tempfile.mkdtemp(prefix="bray-"))
    port = free_port()
    head = start_node(["--head", "--port", str(port), "--temp-dir", str(root / "t"), "--include-dashboard",
                       "false", "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port())],
                      root / "scratch-head", root / "head.log")
    try:
        worker = start_node(["--address", f"127.0.0.1:{port}"], root / "scratch-worker", root / "worker.log")
    except BaseException:
        head.stop()
        raise
    yield Cluster(f"127.0.0.1:{port}", head, worker)
    worker.stop()
    head.stop()
    shutil.rmtree(root, ignore_errors=True)


def start_driver(suite: Path, home: Path, data_root: Path, cluster: Cluster, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", "suite", "run", str(suite), "--budget", "quick", "--executor", "ray",
           "--address", cluster.address, "--home", str(home), "--data-root", str(data_root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 150) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"driver still running after {timeout}s:\n{log.read_text()[-3000:]}") from None
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def executions(node: Node, home: Path) -> list[dict]:
    from bench.experiment.workers import executions as read
    from bench.experiment.workers import scratch_path

    return read(scratch_path(str(home), node.scratch))


def trained(cluster: Cluster, home: Path) -> dict[str, list[str]]:
    """key -> the nodes ('head'/'worker') that finished training it."""
    out: dict[str, list[str]] = {}
    for name, node in (("head", cluster.head), ("worker", cluster.worker)):
        for e in executions(node, home):
            if e["event"] == "finished" and e["ran"]:
                out.setdefault(e["key"], []).append(name)
    return out


def assert_clean_store(env: RunEnv, keys: set[str]) -> None:
    """One complete record per cell, no other run folder, no leftover checkpoint."""
    runs = env.store.root / "runs"
    assert {p.name for p in runs.iterdir()} == keys
    assert all(env.store.is_complete(k) for k in keys)
    assert not list(runs.rglob("*.ckpt"))


def suite_keys(path: Path, env: RunEnv) -> set[str]:
    suite = load_suite(str(path))
    return {run_hash(c.spec(suite.protocol), env) for c in cells(suite, "quick")}


def wait_for_start(cluster: Cluster, home: Path, node: str | None = None, timeout: float = 90) -> dict:
    """The first cell that started (on `node` if given) and has not finished yet."""
    deadline = time.monotonic() + timeout
    nodes = {"head": cluster.head, "worker": cluster.worker}
    while time.monotonic() < deadline:
        for name, n in nodes.items():
            if node not in (None, name):
                continue
            log = executions(n, home)
            done = {e["key"] for e in log if e["event"] == "finished"}
            running = [e for e in log if e["event"] == "started" and e["key"] not in done]
            if running:
                return {**running[0], "node": name}
        time.sleep(0.1)
    raise AssertionError(f"no cell started on {node or 'any node'} within {timeout}s")


# ---------------------------------------------------------------- tests on the cluster


def test_suite_on_ray_runs_each_cell_once_with_the_sequential_records(cluster, tmp_path, data_root, cache):
    suite_path = write_suite(tmp_path, "tiny_ray")
    sequential = RunEnv(data_root, new_home(tmp_path, cache, "seq"))
    report = Experiment.of_suite(load_suite(str(suite_path)), "quick").run(sequential)
    assert len(report.executed) == 4 and not report.failed

    home = new_home(tmp_path, cache, "ray")
    text = finish(start_driver(suite_path, home, data_root, cluster, tmp_path / "driver.log"), tmp_path / "driver.log")
    assert "executed 4, already complete 0, busy elsewhere 0, failed 0" in text
    env = RunEnv(data_root, home)
    keys = suite_keys(suite_path, env)
    assert_clean_store(env, keys)
    runs = trained(cluster, home)
    assert {k: len(v) for k, v in runs.items()} == {k: 1 for k in keys}  # each cell trained exactly once
    assert "worker" in {n for v in runs.values() for n in v}  # the second node took cells
    for key in keys:
        ray_rec, seq_rec = env.store.load(key), sequential.store.load(key)
        assert ray_rec["spec"] == seq_rec["spec"]
        assert ray_rec["metrics"] == seq_rec["metrics"]
        ray_pu, seq_pu = env.store.per_user(key), sequential.store.per_user(key)
        assert ray_pu.keys() == seq_pu.keys()
        for split in seq_pu:
            for metric, values in seq_pu[split].items():
                np.testing.assert_array_equal(ray_pu[split][metric], values)


def test_a_second_driver_runs_nothing_twice(cluster, tmp_path, data_root, cache):
    suite_path = write_suite(tmp_path, "tiny_two", **{"sasrec.hidden": 48})
    home = new_home(tmp_path, cache, "home")
    # both drivers at once on one store: whichever claims a cell first runs it, the other skips it
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    drivers = [start_driver(suite_path, home, data_root, cluster, log) for log in logs]
    texts = [finish(d, log) for d, log in zip(drivers, logs)]
    counts = [re.search(r"executed (\d+), already complete (\d+), busy elsewhere (\d+), failed 0", t) for t in texts]
    assert all(counts), texts
    executed, complete, busy = ([int(m.group(i)) for m in counts] for i in (1, 2, 3))
    assert sum(executed) == 4  # between them every cell ran, none in both
    assert sum(busy) + sum(complete) == 4  # and the other driver met each as busy or complete
    env = RunEnv(data_root, home)
    keys = suite_keys(suite_path, env)
    assert_clean_store(env, keys)
    assert {k: len(v) for k, v in trained(cluster, home).items()} == {k: 1 for k in keys}


def test_a_worker_node_killed_mid_suite_loses_nothing(cluster, tmp_path, data_root, cache):
    """Runs last: the worker node does not come back."""
    suite_path = write_suite(tmp_path, "tiny_kill", **{"trainer.epochs": 3, "protocol.max_users": 400})
    home = new_home(tmp_path, cache, "home")
    driver = start_driver(suite_path, home, data_root, cluster, tmp_path / "driver.log")
    victim = wait_for_start(cluster, home, node="worker")
    os.kill(cluster.worker.raylet_pid(), signal.SIGKILL)
    text = finish(driver, tmp_path / "driver.log")
    assert "executed 4, already complete 0, busy elsewhere 0, failed 0" in text
    env = RunEnv(data_root, home)
    keys = suite_keys(suite_path, env)
    assert_clean_store(env, keys)
    runs = trained(cluster, home)
    assert set(runs) == keys
    assert "head" in runs[victim["key"]]  # the cell lost with the node was retried on the head


# ---------------------------------------------------------------- no cluster needed


def test_longest_expected_cells_go_first():
    from bench.engine.spec import build_spec
    from bench.experiment.executors import expected_costs
    from bench.experiment.experiment import Cell

    specs = {m: build_spec("scientific", "leave_one_out", m, 0, {"trainer.epochs": 3, "protocol.max_users": 500})
             for m in ("pop", "sasrec", "duorec")}
    pending = [Cell(s, m, m) for m, s in specs.items()]
    static = expected_costs(pending, [])
    assert static["duorec"] > static["sasrec"] > static["pop"]  # per-model estimates, no records
    # a stored seed of the same spec overrides the estimate: measured seconds win
    measured = {**specs["pop"].model_dump(), "seed": 7}
    costs = expected_costs(pending, [{"spec": measured, "timings": {"total_s": 1e6}}])
    assert costs["pop"] == 1e6 and costs["duorec"] == static["duorec"]


def test_ray_options_from_the_command_line(monkeypatch):
    from bench.cli.experiments import ray_options

    assert ray_options("sequential", 1, None, 1.0, 0.0, 3) is None
    with pytest.raises(BenchError, match="--executor"):
        ray_options("dask", 1, None, 1.0, 0.0, 3)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(BenchError, match=r"pip install -e '\.\[ray\]'.*--shard"):
        ray_options("sequential", 2, None, 1.0, 0.0, 3)  # --jobs N runs on a local Ray cluster
    monkeypatch.undo()
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    opts = ray_options("sequential", 4, None, 1.0, 0.25, 3)
    assert (opts.address, opts.local_cpus, opts.gpus_per_cell) == (None, 4, 0.25)
    with pytest.raises(BenchError, match="--jobs"):
        ray_options("ray", 2, "127.0.0.1:6379", 1.0, 0.0, 3)
    with pytest.raises(BenchError, match="--gpus-per-cell"):
        ray_options("ray", 1, None, 1.0, 1.5, 3)
