"""One Experiment behind `bench run`, `bench suite run` and `bench tune --seeds`: complete cells are
not run again, a busy cell is skipped or waited for, a failure is recorded or raised, shards split
the cells. The runner is replaced by a fake store here (no data, no training); the real runs are
in test_suites.py, test_core_cli.py and test_ray_executor.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import bench.engine.runner as runner
from bench.engine.store import RunBusy
from bench.errors import BenchError
from bench.experiment.experiment import Experiment


class FakeStore:
    """Runs by key: `done` holds records; `busy` keys raise RunBusy unless waited for; `broken` fail."""

    def __init__(self, done=(), busy=(), broken=()):
        self.done = {k: {"key": k, "old": True} for k in done}
        self.busy, self.broken, self.calls = set(busy), dict(broken), []

    def execute(self, spec, env, force=False, wait=False):
        key = spec.key
        self.calls.append((key, wait))
        if key in self.broken:
            raise self.broken[key]
        if not force and key in self.done:
            return key, self.done[key], False
        if key in self.busy and not wait:
            raise RunBusy(key)
        if key in self.busy:  # the other process finished it while we waited
            self.done[key] = {"key": key, "elsewhere": True}
            return key, self.done[key], False
        self.done[key] = {"key": key, "old": False}
        return key, self.done[key], True


@pytest.fixture
def fake(monkeypatch):
    def install(**kwargs):
        store = FakeStore(**kwargs)
        monkeypatch.setattr(runner, "execute", store.execute)
        monkeypatch.setattr(runner, "run_hash", lambda spec, env: spec.key)
        return store
    return install


def specs(*keys):
    return [SimpleNamespace(key=k, model="pop", dataset="scientific", seed=i) for i, k in enumerate(keys)]


class Messages:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)


def env():
    return SimpleNamespace(reporter=Messages())


def test_complete_cells_are_taken_not_run_and_records_keep_cell_order(fake):
    store = fake(done=["b"])
    e = env()
    report = Experiment.of_specs(specs("a", "b", "c")).run(e)
    assert report.executed == ["a", "c"] and report.complete == ["b"] and not report.failed
    assert [r["key"] for r in report.ordered_records()] == ["a", "b", "c"]
    assert sum("already complete" in m for m in e.reporter.lines) == 1  # bench run says it per run
    quiet = Experiment.of_specs(specs("a", "b"), announce_complete=False).run(env())
    assert quiet.complete == ["a", "b"] and store.calls[-1] == ("b", False)
    forced = Experiment.of_specs(specs("b")).run(env(), force=True)
    assert forced.executed == ["b"]


def test_busy_cells_are_skipped_or_waited_for(fake):
    fake(busy=["b"])
    skipped = Experiment.of_specs(specs("a", "b")).run(env())
    assert skipped.busy == ["b"] and skipped.executed == ["a"] and "b" not in skipped.records
    store = fake(busy=["b"])
    e = env()
    waited = Experiment.of_specs(specs("b", "a")).run(e, busy="wait")
    assert store.calls == [("b", False), ("a", False), ("b", True)]  # the others first, then the wait
    assert waited.busy == [] and waited.complete == ["b"] and waited.records["b"]["elsewhere"]
    assert [r["key"] for r in waited.ordered_records()] == ["b", "a"]
    assert any("will wait for it" in m for m in e.reporter.lines)


def test_a_failure_is_recorded_or_raised(fake):
    fake(broken={"b": RuntimeError("boom"), "c": BenchError("bad cell")})
    e = env()
    report = Experiment.of_specs(specs("a", "b", "c", "d"), tag="[quick budget] ").run(e)
    assert report.executed == ["a", "d"]
    assert [k for k, _ in report.failed] == ["b", "c"]
    assert report.failed[0][1] == "[quick budget] pop / scientific / seed 1: RuntimeError: boom"
    # a bug shows where it happened; bad input is its one line
    assert sum(m.startswith("Traceback") for m in e.reporter.lines) == 1
    assert "[quick budget] pop / scientific / seed 2: FAILED: bad cell" in e.reporter.lines
    fake(broken={"b": RuntimeError("boom")})
    with pytest.raises(RuntimeError, match="boom"):  # bench run: the first failure, as it is
        Experiment.of_specs(specs("a", "b", "c")).run(env(), fail_fast=True)


def test_shards_partition_the_cells_and_executors_are_checked(fake):
    fake()
    exp = Experiment.of_specs(specs(*"abcdefg"))
    parts = [exp.shard(k, 3) for k in (1, 2, 3)]
    assert [[c.spec.key for c in p.cells] for p in parts] == [["a", "d", "g"], ["b", "e"], ["c", "f"]]
    ran = [k for p in parts for k in p.run(env()).executed]
    assert sorted(ran) == list("abcdefg")
    with pytest.raises(TypeError, match="executor 'ray'"):  # a name is the CLI's (ray_options): here an object
        exp.run(env(), executor="ray")


def test_tune_seeds_runs_the_selected_configuration_as_an_experiment(tmp_path, data_root, cache):
    import json

    from typer.testing import CliRunner

    from bench.cli.main import app

    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(cache)
    args = ["tune", "--model", "gru4rec", "--trials", "1", "--seeds", "2", "--seed", "3", "--home", str(home),
            "--data-root", str(data_root), "--study-name", "seeds"]
    for k, v in {"protocol.max_users": 200, "protocol.max_len": 20, "trainer.epochs": 1, "gru4rec.layers": 1}.items():
        args += ["--set", f"{k}={v}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "selected configuration, 2 seeds (test)" in result.output
    records = [json.loads(p.read_text()) for p in (home / "store" / "runs").glob("*/record.json")]
    assert sorted(r["spec"]["seed"] for r in records) == [3, 4]  # --seed, --seed + 1: test evaluated
    best = json.loads((home / "tuning" / "seeds.best.json").read_text())
    assert all(r["spec"]["model_params"][k.split(".", 1)[1]] == v for r in records
               for k, v in best["params"].items() if k.startswith("gru4rec."))
    again = CliRunner().invoke(app, args)  # the study's budget is spent; the seed runs are complete
    assert again.exit_code == 0 and len(list((home / "store" / "runs").glob("*/record.json"))) == 2
