"""Committed tables re-render from the committed records alone (results/store: records and
per-user metrics, no weights), with no training and no raw data."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from bench.cli.main import app

RESULTS = Path(__file__).resolve().parents[1] / "results"
HEADER = re.compile(r"\A<!--.*?-->\n", re.S)


def tables_with_records() -> list[Path]:
    """Markdown tables whose every listed run has its record committed under results/store."""
    out = []
    for side in sorted(RESULTS.glob("*.md.cells.json")):
        cells = json.loads(side.read_text())["cells"]
        runs = [h for c in cells for h in c["runs"].values() if h]
        if runs and all((RESULTS / "store" / "runs" / h / "record.json").exists() for h in runs):
            out.append(RESULTS / side.name.removesuffix(".cells.json"))
    return out


def test_committed_tables_re_render_byte_for_byte_without_data(tmp_path, monkeypatch):
    monkeypatch.chdir(RESULTS.parent)  # suites read tuned parameters (params_from) from results/tuned/
    tables = tables_with_records()
    assert tables, "no committed table has its records under results/store"
    home = tmp_path / "home"
    shutil.copytree(RESULTS / "store", home / "store")  # a fresh copy: nothing else, no cache
    for table in tables:
        side = json.loads(Path(f"{table}.cells.json").read_text())
        out = tmp_path / table.name
        result = CliRunner().invoke(app, ["table", side["suite"], "--budget", side["budget"], "--format", "md",
                                          "--out", str(out), "--home", str(home),
                                          "--data-root", str(tmp_path / "no-data")])
        assert result.exit_code == 0, result.output
        assert HEADER.sub("", out.read_text()) == HEADER.sub("", table.read_text()), table.name


def test_tables_and_figures_need_no_data_root_at_all(tmp_path, monkeypatch):
    """With $BENCH_DATA_ROOT pointing nowhere and no --data-root, nothing hashes or loads a dataset."""
    import bench.engine.runner as runner

    def no_data(*_a, **_k):
        raise AssertionError("a report command touched the raw data")

    monkeypatch.setattr(runner, "run_hash", no_data)
    monkeypatch.setattr(runner.RunEnv, "dataset", no_data)
    monkeypatch.setenv("BENCH_DATA_ROOT", "/nonexistent")
    home = tmp_path / "home"
    shutil.copytree(RESULTS / "store", home / "store")
    table = tables_with_records()[0]
    side = json.loads(Path(f"{table}.cells.json").read_text())
    out = tmp_path / table.name
    result = CliRunner().invoke(app, ["table", side["suite"], "--budget", side["budget"], "--format", "md",
                                      "--out", str(out), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert HEADER.sub("", out.read_text()) == HEADER.sub("", table.read_text()), table.name
    result = CliRunner().invoke(app, ["plot", side["suite"], "--budget", side["budget"], "--kind", "curves",
                                      "--home", str(home), "--out-dir", str(tmp_path / "figs")])
    assert result.exit_code == 0, result.output
    assert any(p.suffix == ".png" for p in (tmp_path / "figs").iterdir())


def test_recbole_comparison_tables_re_render_from_their_header_command(tmp_path, monkeypatch):
    """Each results/*-recbole-*.md is what the command in its header prints, from the committed
    RecBole records and our committed runs (benchmarks/recbole_table.py, no data, no training)."""
    tables = sorted(RESULTS.glob("*-recbole-*.md"))
    assert tables
    monkeypatch.setenv("BENCH_DATA_ROOT", str(tmp_path / "no-data"))
    for table in tables:
        command = re.search(r"^command: (.*)$", table.read_text(), re.M).group(1)
        args = shlex.split(command)
        assert args[:2] == ["python", "benchmarks/recbole_table.py"], command
        out = tmp_path / table.name
        args[args.index("--out") + 1] = str(out)
        subprocess.run([sys.executable, *args[1:]], cwd=RESULTS.parent, check=True, capture_output=True)
        assert HEADER.sub("", out.read_text()) == HEADER.sub("", table.read_text()), table.name
