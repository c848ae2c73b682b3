"""Tuning: tiny real studies through the runner's data path, resume, the test-split lock,
pruning on per-epoch validation values, and two workers sharing a PostgreSQL study."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from bench.engine.runner import RunEnv
from bench.errors import BenchError
from bench.experiment.suites import load_best
from bench.experiment.tuning import make_storage, search_space, tune, with_installed_driver

REPO = Path(__file__).resolve().parent.parent
TINY = {"protocol.max_users": 200, "protocol.max_len": 20, "trainer.epochs": 2, "sasrec.layers": 1}


@pytest.fixture
def env(tmp_path, data_root, cache):
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(cache)  # share the session's dataset cache
    return RunEnv(data_root, home)


def study_of(env, name):
    return optuna.load_study(study_name=name, storage=make_storage(None, env.home))


def test_tiny_study_selects_on_validation_and_writes_best(env):
    summary = tune("sasrec", "scientific", "leave_one_out", env, trials=2, overrides=TINY, study_name="s1")
    study = study_of(env, "s1")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert study.user_attrs["budget"] == {"trials": 2, "timeout_s": None}
    best = load_best(Path(summary["written_to"]))
    assert best["best_value"] == max(t.value for t in study.trials)
    assert set(best["params"]) == set(search_space("sasrec"))
    assert best["overrides"]["trainer.epochs"] == 2 and best["metric"] == "Recall@20"
    # each trial's value is its best per-epoch validation value, reported epoch by epoch
    for t in study.trials:
        assert set(t.intermediate_values) == {0, 1}
        assert t.value == pytest.approx(max(t.intermediate_values.values()), abs=1e-4)
    # nothing was evaluated on test, so no run record exists in the store
    assert not list(env.store.records())
    # same budget again: nothing more to do; a different budget for the same study is refused
    tune("sasrec", "scientific", "leave_one_out", env, trials=2, overrides=TINY, study_name="s1")
    assert len(study_of(env, "s1").trials) == 2
    with pytest.raises(BenchError, match="budget"):
        tune("sasrec", "scientific", "leave_one_out", env, trials=5, overrides=TINY, study_name="s1")


def test_interrupted_study_resumes(env, monkeypatch):
    import bench.experiment.tuning as tuning

    real = tuning.validation_objective
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the machine went away mid-study
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "validation_objective", flaky)
    with pytest.raises(KeyboardInterrupt):
        tune("sasrec", "scientific", "leave_one_out", env, trials=3, overrides=TINY, study_name="r")
    states = [t.state for t in study_of(env, "r").trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1
    summary = tune("sasrec", "scientific", "leave_one_out", env, trials=3, overrides=TINY, study_name="r")
    study = study_of(env, "r")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    assert summary["trials"]["complete"] == 3
    # the resumed sampler did not replay the first trial's suggestion
    params = [tuple(sorted(t.params.items())) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert len(set(params)) == 3


def test_reading_test_split_inside_tuning_raises(env, monkeypatch):
    import bench.engine.runner as trainer  # tuning trains through the runner's stage loop

    real_fit = trainer.fit
    seen = []

    def peeking_fit(model, split, *args, **kwargs):
        with pytest.raises(BenchError, match="test split is locked"):
            split.test  # noqa: B018
        seen.append(split.test_unlocked)
        return real_fit(model, split, *args, **kwargs)

    monkeypatch.setattr(trainer, "fit", peeking_fit)
    tune("sasrec", "scientific", "leave_one_out", env, trials=1, overrides=TINY, study_name="lock")
    assert seen == [False]

    def unlocking_fit(model, split, *args, **kwargs):
        split.unlock_test()
        return real_fit(model, split, *args, **kwargs)

    monkeypatch.setattr(trainer, "fit", unlocking_fit)
    with pytest.raises(BenchError, match="unlocked during tuning"):
        tune("sasrec", "scientific", "leave_one_out", env, trials=2, overrides=TINY, study_name="lock2")


class PruneSecond(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return trial.number == 1


def test_pruner_stops_a_trial_after_its_first_epoch(env):
    tune("sasrec", "scientific", "leave_one_out", env, trials=2, overrides={**TINY, "trainer.epochs": 3},
         study_name="p", pruner=PruneSecond())
    t0, t1 = study_of(env, "p").trials
    assert t0.state == optuna.trial.TrialState.COMPLETE and set(t0.intermediate_values) == {0, 1, 2}
    assert t1.state == optuna.trial.TrialState.PRUNED and set(t1.intermediate_values) == {0}


def test_cli_tune_prints_best_params(env, tmp_path):
    from typer.testing import CliRunner

    from bench.cli.main import app

    out = tmp_path / "best.json"
    args = ["tune", "--model", "gru4rec", "--trials", "1", "--home", str(env.home), "--data-root",
            str(env.data_root), "--out", str(out), "--study-name", "cli"]
    for k, v in {**TINY, "gru4rec.layers": 1}.items():
        if not k.startswith("sasrec"):
            args += ["--set", f"{k}={v}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best params:" in result.output and "gru4rec.dropout" in result.output
    assert json.loads(out.read_text())["model"] == "gru4rec"


def test_driver_normalisation():
    assert with_installed_driver("sqlite:///x.db") == "sqlite:///x.db"
    assert with_installed_driver("postgresql://u@h:1/d").startswith("postgresql+psycopg")


# ---------------------------------------------------------------- PostgreSQL, two workers


def _pg_binaries() -> bool:
    return bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"))


@pytest.fixture(scope="module")
def pg_dsn():
    if os.environ.get("BENCH_TEST_PG_DSN"):
        yield os.environ["BENCH_TEST_PG_DSN"]
        return
    if not _pg_binaries() and not os.environ.get("CI"):
        pytest.skip("PostgreSQL binaries missing (apt-get install postgresql; in CI the script installs them)")
    started = subprocess.run(["bash", str(REPO / ".ci" / "start_postgres.sh")], capture_output=True, text=True,
                             timeout=900)
    assert started.returncode == 0, started.stderr
    env = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
               if line.startswith("export "))
    yield env["BENCH_TEST_PG_DSN"]
    subprocess.run(["bash", str(REPO / ".ci" / "start_postgres.sh"), "stop", env["BENCH_TEST_PG_DIR"]],
                   capture_output=True, timeout=120)


def test_two_workers_share_one_postgres_study(pg_dsn, tmp_path, data_root, cache):
    optuna.storages.RDBStorage(with_installed_driver(pg_dsn))  # create the schema once, before the workers
    name = f"pg-{tmp_path.name}"
    procs = []
    for worker in (0, 1):
        home = tmp_path / f"machine{worker}"
        home.mkdir()
        (home / "cache").symlink_to(cache)
        cmd = [sys.executable, "-m", "bench", "tune", "--model", "sasrec", "--trials", "4", "--storage", pg_dsn,
               "--study-name", name, "--worker", str(worker), "--home", str(home), "--data-root", str(data_root)]
        for k, v in {**TINY, "trainer.epochs": 1}.items():
            cmd += ["--set", f"{k}={v}"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    study = optuna.load_study(study_name=name, storage=make_storage(pg_dsn, tmp_path))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert 4 <= len(complete) <= 5  # a worker may start one trial just before the other finishes the 4th
    assert {t.user_attrs["worker"] for t in complete} == {0, 1}
    assert len({tuple(sorted(t.params.items())) for t in complete}) == len(complete)
    assert all("best params:" in out for out in outputs)


def test_sampler_is_seeded(tmp_path, data_root, cache):
    params = []
    for i in range(2):
        home = tmp_path / f"h{i}"
        home.mkdir()
        (home / "cache").symlink_to(cache)
        e = RunEnv(data_root, home)
        tune("gru4rec", "scientific", "leave_one_out", e, trials=1, study_name="seeded",
             overrides={"protocol.max_users": 200, "protocol.max_len": 20, "trainer.epochs": 1})
        params.append(study_of(e, "seeded").trials[0].params)
    assert params[0] == params[1]


def test_study_name_ignores_where_trials_compute():
    from bench.experiment.tuning import default_study_name

    base = {"trainer.epochs": 3}
    name = default_study_name("sasrec", "scientific", "leave_one_out", base)
    elsewhere = {**base, "eval.batch_users": 512, "trainer.device": "cuda", "trainer.pretrain.capture": "compile"}
    assert default_study_name("sasrec", "scientific", "leave_one_out", elsewhere) == name
    assert default_study_name("sasrec", "scientific", "leave_one_out", {**base, "trainer.lr": 0.01}) != name


def test_suite_tune_fills_the_tuned_rows_and_the_table_says_what_was_selected(env, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from bench.cli.main import app
    from bench.experiment.suites import cells
    from bench.report.tables import build_table

    monkeypatch.chdir(tmp_path)  # params_from is relative to the working directory
    suite_file = tmp_path / "dt.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "dt", "title": "Default vs tuned", "datasets": ["scientific"], "models": ["pop", "sasrec"],
        "seeds": [0, 1], "overrides": TINY, "variations": {"default": {}, "tuned": {}},
        "params_from": {"tuned": "tuned/{model}-{dataset}-{budget}.best.json"},
        "reference": {"model": "sasrec", "variation": "tuned"},
    }))
    home = ["--home", str(env.home), "--data-root", str(env.data_root)]
    result = CliRunner().invoke(app, ["suite", "tune", str(suite_file), "--trials", "2", *home])
    assert result.exit_code == 0, result.output
    assert "nothing to tune" in result.output and "pop" in result.output
    written = tmp_path / "tuned" / "sasrec-scientific-full.best.json"
    best = load_best(written)
    assert not (tmp_path / "tuned" / "pop-scientific-full.best.json").exists()
    # the study trained every trial under the cells' own settings, at the suite's first seed
    assert best["seed"] == 0 and best["overrides"]["protocol.max_users"] == 200
    assert best["budget"] == {"trials": 2, "timeout_s": None} and set(best["space"]) == set(search_space("sasrec"))
    assert not list(env.store.records())  # validation only: no test-evaluated record

    from bench.experiment.suites import load_suite

    suite = load_suite(str(suite_file))
    by = {(c.variation, c.model): c for c in cells(suite) if c.seed == 0}
    tuned, default = by[("tuned", "sasrec")], by[("default", "sasrec")]
    assert tuned.tuned_from == str(Path("tuned/sasrec-scientific-full.best.json")) and default.tuned_from is None
    assert tuned.spec(suite.protocol).model_params["dropout"] == best["params"]["sasrec.dropout"]
    assert default.spec(suite.protocol).model_params["dropout"] == 0.2  # the default row keeps the defaults
    # the same budget again resumes: nothing more to run
    again = CliRunner().invoke(app, ["suite", "tune", str(suite_file), "--trials", "2", *home])
    assert again.exit_code == 0 and len(study_of(env, best["study"]).trials) == 2

    caption = build_table(suite, env.store, "full").caption
    assert "equal budget" in caption and "Selected: SASRec (CE) [tuned] (scientific): sasrec.dropout=" in caption
    assert "2 complete" in caption and "Default (untuned) hyper-parameters:" in caption


def test_suite_trials_train_as_their_tuned_cell_would(env, tmp_path, monkeypatch):
    """DuoRec's need depends on its similarity: each trial gets the patience a tuned cell with its
    parameters gets under the budget, and the summary's overrides are the best trial's."""
    import yaml

    from bench.experiment import tuning
    from bench.experiment.suites import load_suite

    seen = []

    def fake_objective(spec, _env, _on_epoch):
        similarity = spec.model_params["similarity"]
        seen.append((similarity, spec.trainer["train"].patience))
        return {"value": 0.2 if similarity == "cos" else 0.1, "best_epoch": 0, "metric": "Recall@20"}

    monkeypatch.setattr(tuning, "validation_objective", fake_objective)
    monkeypatch.chdir(tmp_path)
    suite_file = tmp_path / "duo.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "duo", "title": "DuoRec", "datasets": ["scientific"], "models": ["duorec"], "seeds": [0],
        "variations": {"tuned": {}}, "params_from": {"tuned": "tuned/{model}-{dataset}-{budget}.best.json"},
        "cpu": {"training": {"*": {"epochs_cap": 50, "patience_cap": 5}}},
    }))
    (summary,), _ = tuning.tune_suite(load_suite(str(suite_file)), "cpu", env, trials=8)
    assert {s for s, _ in seen} == {"dot", "cos"}
    assert all(patience == (20 if s == "dot" else 5) for s, patience in seen), seen
    assert summary["params"]["duorec.similarity"] == "cos"
    assert summary["overrides"]["trainer.train.patience"] == 5


def test_params_from_names_only_variations_the_suite_has(tmp_path):
    import yaml

    from bench.experiment.suites import load_suite

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "title": "t", "datasets": ["scientific"], "models": ["sasrec"],
                                    "variations": {"default": {}}, "params_from": {"tuned": "x.json"}}))
    with pytest.raises(BenchError, match="params_from names variations"):
        load_suite(str(path))


def test_msm4sr_searches_its_authors_fine_tuning_grid():
    space = search_space("msm4sr")
    assert set(space) == {"trainer.finetune.batch_size", "trainer.finetune.lr", "trainer.finetune.weight_decay"}
    assert all(k in search_space("sasrec") for k in ("sasrec.dropout", "sasrec.hidden"))
    # a table states the rule: MSM4SR's pre-training is not tuned (its trials share one)
    from bench.report.captions import _earlier_stages_fixed

    assert "pretrain is not tuned" in _earlier_stages_fixed("msm4sr", space)
    assert _earlier_stages_fixed("msm4sr", {**space, "msm4sr.tau": ("float", 0.05, 0.2)}) == ""
    assert _earlier_stages_fixed("sasrec", search_space("sasrec")) == ""
