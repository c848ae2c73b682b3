"""The Python API: the README's notebook example run verbatim on its slice (200 users, 1 epoch),
then checks of what it returns against the store and the data; `import bench` stays light."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys

import numpy as np
import pytest

from bench.errors import BenchError
from tests.conftest import REPO


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def example(tmp_path_factory, data_root):
    home = tmp_path_factory.mktemp("api-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_HOME", str(home))
    mp.setenv("BENCH_DATA_ROOT", str(data_root))
    code = readme_example()
    assert '"protocol.max_users": 200' in code and '"trainer.epochs": 1' in code  # the slice it runs on
    scope: dict = {}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    finally:
        mp.undo()
    return scope, out.getvalue(), home


def test_readme_example_runs_and_prints(example):
    scope, printed, _ = example
    assert "| Pop " in printed and "| SASRec (CE) " in printed and "Recall@20" in printed
    res = scope["res"]
    df = res.frame()
    assert len(df) == 4 and sorted(df["seed"]) == [0, 0, 1, 1]
    assert set(df["model"]) == {"Pop", "SASRec (CE)"} and df["Recall@20"].between(0, 1).all()
    assert len(scope["runs"]) == 2 and {r["spec"]["model"] for r in scope["runs"].records} == {"sasrec"}


def test_per_user_is_keyed_by_user_ids_and_matches_the_record(example, data_root):
    from bench.data.catalog import load_dataset
    from bench.paths import cache_dir

    scope, _, home = example
    res, per_user = scope["res"], scope["per_user"]
    ds = load_dataset("scientific", data_root, cache_dir(home))
    pop0 = per_user[(per_user["model"] == "Pop") & (per_user["seed"] == 0)]
    assert len(pop0) == 200 and set(pop0.index) == set(ds.user_ids[:200])  # max_users keeps the first N
    record = next(r for r in res.records if r["label"] == "Pop" and r["spec"]["seed"] == 0)
    assert pop0["NDCG@20"].mean() == pytest.approx(record["metrics"]["test"]["NDCG@20"])
    # Pop ranks by training counts: the user whose target is the most frequent item hits at 1
    train_counts = np.bincount(np.concatenate([ds.sequence(u)[:-2] for u in range(200)]), minlength=ds.n_items + 1)
    train_counts[0] = -1
    top = int(train_counts.argmax())
    hits = [ds.user_ids[u] for u in range(200) if ds.sequence(u)[-1] == top]
    assert hits and (pop0.loc[hits, "Hit@5"] == 1).all()


def test_compare_and_errors(example):
    scope, _, _ = example
    res = scope["res"]
    cmp = res.compare("pop", metrics=["NDCG@20"])
    assert len(cmp) == 1 and cmp.loc[0, "model"] == "SASRec (CE)" and cmp.loc[0, "reference"] == "Pop"
    by_model = res.frame().groupby("model")["NDCG@20"].mean()
    assert cmp.loc[0, "diff"] == pytest.approx(by_model["SASRec (CE)"] - by_model["Pop"], abs=1e-9)
    assert 0 <= cmp.loc[0, "p_ttest_holm"] <= 1 and cmp.loc[0, "ci_low"] <= cmp.loc[0, "diff"] <= cmp.loc[0, "ci_high"]
    with pytest.raises(BenchError, match="not exactly one model"):
        res.compare("gru4rec")
    with pytest.raises(BenchError, match="split 'test:all'"):
        res.frame("test:all")


def test_import_bench_stays_light():
    code = "import sys, bench; print(sorted(m for m in ('torch', 'pandas', 'numpy', 'typer') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]" and callable(__import__("bench").run)
