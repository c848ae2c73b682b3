"""`bench` end to end on a slice of the real data, in a subprocess as a user runs it."""

import json
import os
import subprocess
import sys

import pytest


def bench(*args, home, data_root):
    env = {**os.environ, "BENCH_DATA_ROOT": str(data_root), "BENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data_root):
    home = tmp_path_factory.mktemp("home")
    out = home / "table.md"
    args = ["run", "--models", "pop,sasrec", "--set", "protocol.max_users=300", "--set", "trainer.epochs=2",
            "--set", "trainer.batch_size=64", "--format", "md", "--out", str(out)]
    return home, out, args, bench(*args, home=home, data_root=data_root)


def test_run_prints_table_and_writes_records(first_run):
    home, out, _, proc = first_run
    assert proc.returncode == 0, proc.stderr
    assert "SASRec (CE)" in proc.stdout and "Pop" in proc.stdout
    table = out.read_text()
    assert table.startswith("| model") and "| SASRec (CE)" in table
    records = [json.loads(p.read_text()) for p in (home / "store" / "runs").glob("*/record.json")]
    assert len(records) == 2
    sasrec = next(r for r in records if r["label"] == "SASRec (CE)")
    assert sasrec["protocol"]["max_users"] == 300 and sasrec["protocol"]["protocol"] == "leave_one_out"
    assert len(sasrec["history"]["train"]) == 2 and sasrec["timings"]["train"]["s_per_epoch"] > 0
    assert {"packages", "hardware", "git_revision"} <= set(sasrec["provenance"])
    assert 0 <= sasrec["metrics"]["test"]["NDCG@10"] <= sasrec["metrics"]["test"]["Recall@10"] <= 1
    assert not list((home / "store" / "runs").glob("*/*.ckpt"))  # resume checkpoints cleaned up


def test_rerun_skips_complete_runs(first_run, data_root):
    home, _, args, _ = first_run
    again = bench(*args, home=home, data_root=data_root)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already complete") == 2 and "epoch 0" not in again.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "--models", "sasrek"], "error: unknown model 'sasrek'. Did you mean 'sasrec'?"),
    (["run", "--dataset", "nope"], "error: unknown dataset 'nope'"),
    (["run", "--protocol", "loo"], "error: unknown protocol 'loo'"),
    (["run", "--set", "sasrec.dropout=2"], "error: option sasrec.dropout: Input should be less than 1"),
])
def test_bad_input_one_line_error(args, message, tmp_path, data_root):
    proc = bench(*args, home=tmp_path, data_root=data_root)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_command_is_a_usage_error_not_a_traceback(tmp_path, data_root):
    proc = bench("suite", "status", home=tmp_path, data_root=data_root)
    assert proc.returncode == 2
    assert "No such command 'status'" in proc.stderr and "Traceback" not in proc.stderr
    proc = bench("suite", "run", "main", "--models", "nope", "--dry-run", home=tmp_path, data_root=data_root)
    assert proc.returncode == 2 and "--models nope: not in suite main" in proc.stderr


def test_a_variation_whose_name_has_a_comma_can_be_selected(tmp_path, data_root):
    proc = bench("suite", "run", "baselines", "--budget", "quick", "--models", "duorec",
                 "--variations", "cos, tau 0.1", "--dry-run", home=tmp_path, data_root=data_root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("cos, tau 0.1 / duorec") == 2 and "default / duorec" not in proc.stdout


def test_missing_data_root_is_named(tmp_path):
    proc = bench("data", "stats", "scientific", home=tmp_path, data_root=tmp_path / "absent")
    assert proc.returncode == 2
    assert "missing data file:" in proc.stderr and "absent" in proc.stderr


def test_data_list_and_keywords(tmp_path, data_root):
    listing = bench("data", "list", home=tmp_path, data_root=data_root)
    assert listing.returncode == 0, listing.stderr
    for name, users in (("scientific", "8442"), ("scientific_mm", "2928"), ("office", "4905")):
        assert name in listing.stdout and users in listing.stdout
    shown = bench("data", "keywords", "scientific_mm", "--show", "3", home=tmp_path, data_root=data_root)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("keywords:") == 3
