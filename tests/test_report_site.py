"""`bench report` (the static site) and `bench runs`: page builders on a tiny real store."""

from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.main import app
from bench.engine.runner import RunEnv, run_hash
from bench.engine.store import ResultStore
from bench.experiment.experiment import Experiment
from bench.experiment.suites import cells, load_suite
from bench.report.site.build import _pairwise_pvalues, build_site
from bench.report.site.records import record_hash, stop_info, stopped_by_cap
from bench.report.tables import build_table

SUITE = {
    "name": "tinysite", "title": "Tiny site", "datasets": ["scientific"], "models": ["pop", "sasrec"],
    "seeds": [0, 1], "reference": "sasrec", "metrics": ["Recall@10", "NDCG@10", "Recall@20", "NDCG@20"],
    # two epochs under patience 5: every SASRec run is stopped by the epoch cap
    "overrides": {"protocol.max_users": 200, "protocol.max_len": 20, "trainer.epochs": 2, "trainer.patience": 5,
                  "sasrec.layers": 1, "sasrec.hidden": 32},
}


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory, data_root, cache):
    """A home with real records: Pop and a 2-epoch SASRec, 2 seeds, on 200 Scientific users,
    plus a 2-trial `bench tune` study."""
    from bench.experiment.tuning import tune

    root = tmp_path_factory.mktemp("report-site")
    home = root / "home"
    home.mkdir()
    (home / "cache").symlink_to(cache)
    suite_path = root / "tinysite.yaml"
    suite_path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    env = RunEnv(data_root, home)
    report = Experiment.of_suite(load_suite(str(suite_path)), "full").run(env)
    assert len(report.executed) == 4 and not report.failed
    tune("sasrec", "scientific", "leave_one_out", env, trials=2, overrides={**SUITE["overrides"], "trainer.epochs": 1})
    return {"home": home, "suite": suite_path, "env": env, "data_root": data_root}


class _Cells(HTMLParser):
    """Rows of the table with id `table_id`: [(td attrs, text)] per row."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.rows, self.cell = table_id, False, [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = [attrs, ""]
            self.rows[-1].append(self.cell)

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif tag == "td":
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data


def table_rows(html: str, table_id: str) -> list[list]:
    parser = _Cells(table_id)
    parser.feed(html)
    return [r for r in parser.rows if r]


def test_a_records_own_fields_give_its_run_hash(tiny_home):
    suite = load_suite(str(tiny_home["suite"]))
    env = tiny_home["env"]
    for c in cells(suite, "full"):
        key = run_hash(c.spec(suite.protocol), env)
        assert record_hash(env.store.load(key)) == key


def test_cap_flag_from_the_record():
    def record(run: int, best: int, cap: int, patience: int) -> dict:
        cfg = {"epochs": cap, "patience": patience, "valid_metric": "Recall@20"}
        return {"spec": {"model": "sasrec", "trainer": {"train": cfg}}, "best_epoch": best,
                "history": {"train": [{"epoch": i, "loss": 1.0, "Recall@20": 0.5 if i == best else 0.1}
                                      for i in range(run)]}}

    assert stopped_by_cap(record(run=10, best=9, cap=10, patience=3))  # still improving at the cap
    assert stopped_by_cap(record(run=10, best=7, cap=10, patience=3))  # 2 epochs since best < patience
    assert not stopped_by_cap(record(run=10, best=6, cap=10, patience=3))  # early stopping was due too
    assert not stopped_by_cap(record(run=6, best=2, cap=10, patience=3))  # stopped early
    info = stop_info(record(run=10, best=9, cap=10, patience=3))
    assert (info.stage, info.epochs_run, info.epochs_cap, info.best_epoch) == ("train", 10, 10, 9)
    assert stop_info({"spec": {"model": "pop"}, "best_epoch": None, "history": {}}) is None


def test_site_pages_show_the_table_marks_caption_and_runs(tiny_home, tmp_path):
    suite = load_suite(str(tiny_home["suite"]))
    out = tmp_path / "site"
    report = build_site(out, tiny_home["home"], [str(tiny_home["suite"])], ["full"])
    table = build_table(suite, tiny_home["env"].store, "full")
    records = dict(tiny_home["env"].store.records())
    assert report.suite_pages == ["suites/tinysite-full.html"] and report.run_pages == 4 and report.tuning_pages == 1
    for rel in ("index.html", "runs/index.html", "assets/plotly.min.js", "assets/site.js", "assets/site.css",
                *(f"runs/{h}.html" for h in records)):
        assert (out / rel).is_file(), rel
    index = (out / "index.html").read_text()
    assert 'href="suites/tinysite-full.html"' in index and ">4/4<" in index
    assert "https://" not in index and "http://" not in index  # nothing fetched from a network
    page = (out / "suites/tinysite-full.html").read_text()
    from html import escape

    assert escape(table.caption) in page
    rows = table_rows(page, "suite-table")
    assert len(rows) == len(table.rows) == 2
    for row, html_row in zip(table.rows, rows):
        by_metric = {attrs["data-metric"]: (attrs, text) for attrs, text in html_row if "data-metric" in attrs}
        assert list(by_metric) == suite.metrics
        for m in suite.metrics:
            attrs, text = by_metric[m]
            assert math.isclose(float(attrs["data-v"]), row.means[m], rel_tol=1e-9)
            assert ("†" in text) == ("sig" in row.marks[m])
            assert ("best" in attrs["class"].split()) == ("best" in row.marks[m])
            spread = f" ± {row.stds[m]:.4f}" if row.distinct > 1 else ""  # Pop's seeds are one run
            assert text.startswith(f"{row.means[m]:.4f}{spread}")
        for seed, h in row.seeds.items():
            assert f'href="../runs/{h}.html"' in page, (row.label, seed)
    # the cap flag: both SASRec seeds used their 2 epochs within patience 5
    sasrec = next(r for r, t in zip(rows, table.rows) if t.arm[1] == "sasrec")
    assert "epoch cap: 2/2 seeds" in sasrec[-1][1]
    assert all(stopped_by_cap(records[h]) for r in table.rows if r.arm[1] == "sasrec" for h in r.seeds.values())
    for kind in ("dot-", "heat-", "cost-"):
        assert f'id="{kind}' in page
    run = next(h for r in table.rows if r.arm[1] == "sasrec" for h in r.seeds.values())
    run_page = (out / f"runs/{run}.html").read_text()
    assert yaml.safe_load(re.search(r'<pre id="spec">(.*?)</pre>', run_page, re.S).group(1).replace("&#39;", "'")
                          .replace("&quot;", '"')) == records[run]["spec"]
    assert records[run]["provenance"]["git_revision"] in run_page and 'id="curves"' in run_page
    assert 'id="hist-NDCG_10"' in run_page and "the epoch cap" in run_page
    tuning = next((out / "tuning").iterdir()).read_text()
    assert 'id="optuna-history"' in tuning and "sasrec.hidden" in tuning
    # a rebuild from the same records changes no page but the front page's build stamp
    again = tmp_path / "again"
    build_site(again, tiny_home["home"], [str(tiny_home["suite"])], ["full"])
    changed = [p.relative_to(out).as_posix() for p in out.rglob("*.html")
               if p.read_bytes() != (again / p.relative_to(out)).read_bytes()]
    assert changed in ([], ["index.html"]) and 'class="built"' in index and 'class="built"' not in run_page


def test_heat_map_p_values_match_the_tables_comparison(tiny_home):
    """Two rows: the pairwise family is the table's family (the reference vs one row), so the
    adjusted p-values agree."""
    suite = load_suite(str(tiny_home["suite"]))
    store = tiny_home["env"].store
    table = build_table(suite, store, "full")
    for m in suite.metrics:
        matrix = _pairwise_pvalues(table.rows, store, m, "ttest", "holm")
        assert np.isnan(matrix[0, 0]) and matrix[0, 1] == matrix[1, 0]
        comp = next(c for c in table.comparisons if c["metric"] == m)
        expected = comp["p_adjusted"]["ttest"]
        assert (math.isnan(expected) and math.isnan(matrix[0, 1])) or math.isclose(matrix[0, 1], expected)


def test_site_builds_without_the_data_and_escapes_record_text(tiny_home, tmp_path, monkeypatch):
    home = tmp_path / "clone"
    shutil.copytree(tiny_home["home"] / "store", home / "store")  # records only: no cache, no data root
    monkeypatch.setenv("BENCH_DATA_ROOT", str(tmp_path / "no-data"))
    store = ResultStore(home / "store")
    key, record = next(iter(store.records()))
    hostile = json.loads(json.dumps(record))
    hostile["label"] = "</script><script>alert(1)</script>"
    hostile["spec"]["seed"] = 99
    store.save(record_hash(hostile), hostile, store.per_user(key))
    out = tmp_path / "site"
    result = CliRunner().invoke(app, ["report", str(tiny_home["suite"]), "--budget", "full", "--all-runs",
                                      "--out", str(out), "--store", str(home / "store"), "--home", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (out / "suites/tinysite-full.html").is_file()
    pages = [p.read_text() for p in out.rglob("*.html")]
    assert len(pages) == 5 + 1 + 1 + 1  # runs (4 + the hostile one), run list, suite, index
    assert not any("<script>alert(1)" in p for p in pages)
    assert any("&lt;/script&gt;&lt;script&gt;alert(1)" in p for p in pages)


def test_runs_ls_and_show(tiny_home):
    home = str(tiny_home["home"])
    runner = CliRunner()
    records = dict(tiny_home["env"].store.records())
    result = runner.invoke(app, ["runs", "ls", "--home", home])
    assert result.exit_code == 0, result.output
    assert all(h in result.output for h in records)
    result = runner.invoke(app, ["runs", "ls", "--model", "pop", "--home", home])
    assert result.exit_code == 0
    pops = [h for h, r in records.items() if r["spec"]["model"] == "pop"]
    assert all(h in result.output for h in pops) and not any(h in result.output for h in records if h not in pops)
    result = runner.invoke(app, ["runs", "ls", "--suite", str(tiny_home["suite"]), "--budget", "full", "--home", home])
    assert result.exit_code == 0 and all(h in result.output for h in records)
    result = runner.invoke(app, ["runs", "ls", "--model", "gru4rec", "--home", home])
    assert result.exit_code != 0 and "no complete run matches" in str(result.exception)
    sasrec = next(h for h, r in records.items() if r["spec"]["model"] == "sasrec")
    result = runner.invoke(app, ["runs", "show", sasrec[:8], "--home", home])
    assert result.exit_code == 0, result.output
    assert sasrec in result.output and "epoch cap" in result.output and "NDCG@10" in result.output
    assert f"{records[sasrec]['metrics']['test']['NDCG@10']:.4f}" in result.output


def test_bad_input_is_one_clear_line(tiny_home, tmp_path, monkeypatch, capsys):
    from bench.cli.main import main

    home = str(tiny_home["home"])
    for args, needle in ((["runs", "show", "zzzz"], "no run 'zzzz'"),
                         (["report", "--budget", "weekly", "--out", str(tmp_path / "s")], "--budget 'weekly'"),
                         (["report", "nosuchsuite", "--out", str(tmp_path / "s")], "nosuchsuite"),
                         (["runs", "ls", "--home", str(tmp_path / "empty")], "no results store")):
        args = args if "--home" in args else [*args, "--home", home]
        monkeypatch.setattr("sys.argv", ["bench", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_strata_need_the_data_and_draw_one_group_per_dimension(tiny_home, tmp_path):
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="--by needs the datasets"):
        build_site(tmp_path / "a", tiny_home["home"], [str(tiny_home["suite"])], ["full"], by=["popularity"])
    build_site(tmp_path / "b", tiny_home["home"], [str(tiny_home["suite"])], ["full"], by=["popularity", "length"],
               data_root=tiny_home["data_root"])
    page = (tmp_path / "b/suites/tinysite-full.html").read_text()
    for dim in ("popularity", "length"):
        assert len(re.findall(rf'id="strata-[^"]*-{dim}-', page)) == len(SUITE["metrics"])


def test_extra_test_sets_are_drawn_from_the_records(tiny_home, tmp_path):
    """Records carrying more test sets (e.g. cold-start 'test:all') get grouped bars per set."""
    home = tmp_path / "home"
    shutil.copytree(tiny_home["home"] / "store", home / "store")
    store = ResultStore(home / "store")
    for key, record in list(store.records()):
        arrays = store.per_user(key)
        arrays["test:all"] = {m: v * 0.5 for m, v in arrays["test"].items()}
        record["metrics"]["test:all"] = {m: float(v.mean()) for m, v in arrays["test:all"].items()}
        store.save(key, record, arrays)  # same spec, data and split: the same run hash
    build_site(tmp_path / "site", home, [str(tiny_home["suite"])], ["full"])
    page = (tmp_path / "site/suites/tinysite-full.html").read_text()
    assert len(re.findall(r'id="parts-', page)) == len(SUITE["metrics"]) and "test:all" in page
