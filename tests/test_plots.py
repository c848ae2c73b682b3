"""Figures drawn from the committed records alone: the ablation-style difference dots (sign and
CI of row minus reference) and the sensitivity axis scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.engine.store import ResultStore
from bench.experiment.suites import load_suite
from bench.report.plots import axis_scale, difference_points, differences
from bench.report.tables import build_table

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("values, scale", [
    ([5, 10, 15, 20, 25], "linear"),
    ([0.1, 0.3, 0.5, 0.7], "linear"),
    ([0.03, 0.05, 0.07, 0.1, 0.2], "log"),
    ([1, 2, 4, 8, 16], "log"),
    ([0.0, 0.001, 0.01, 0.1, 1.0], "symlog"),
    ([0.5, 1.0], "linear"),
])
def test_axis_scale_follows_the_grid(values, scale):
    assert axis_scale(values) == scale


def test_difference_dots_are_row_minus_reference_with_its_ci(tmp_path):
    suite, store = load_suite("fidelity"), ResultStore(RESULTS / "store")
    table = build_table(suite, store, "cpu")
    (reference, dots), = difference_points(table.comparisons).values()
    assert reference == "default"
    means = {(r.label, m): r.means[m] for r in table.rows for m in r.means}
    # the preset row has other test users (data.dedup): no paired comparison, so no dot
    assert {d["row"] for d in dots} == {"bucketed pre-training batches"}
    for d in dots:
        assert d["diff"] == pytest.approx(means[(d["row"], d["metric"])] - means[("default", d["metric"])])
        assert d["low"] < d["diff"] < d["high"]
        assert d["significant"] == (d["low"] > 0 or d["high"] < 0) or d["significant"] is False
    files = differences(suite, store, "cpu", tmp_path)
    assert sorted(p.suffix for p in files) == [".pdf", ".png"] and all(p.stat().st_size > 5000 for p in files)
