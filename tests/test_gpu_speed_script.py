"""benchmarks/gpu_speed.py runs end to end on CPU in its --tiny mode (its GPU figures are taken
on a GPU machine; this checks the script itself works and reports what it says)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_speed.py"


@pytest.mark.parametrize("extra", [[], ["--fixed-shape", "--only", "sasrec", "msm4sr"]])
def test_tiny_run_reports_every_figure_with_the_device(tmp_path, extra):
    out = tmp_path / "gpu_speed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("device: cpu")
    result = json.loads(out.read_text())
    figures = {f["figure"]: f for f in result["figures"]}
    fixed = "--fixed-shape" in extra
    assert set(figures) == {"sasrec train epoch", "msm4sr pretrain epoch"} | (set() if fixed else {"evaluation"})
    assert all(f["device"] == result["device"] and result["device"].startswith("cpu") for f in figures.values())
    for name in ("sasrec train epoch", "msm4sr pretrain epoch"):
        f = figures[name]
        assert f["epochs"] == 2 and f["first_epoch_s"] > 0 and f["median_epoch_s_after_first"] > 0
        assert all(math.isfinite(x) for x in f["loss"]) and f["loss"][1] < f["loss"][0]  # it trains
        assert ("dropped_rows" in f) == fixed
    if fixed:
        return
    ev = figures["evaluation"]
    assert (ev["users"], ev["items"]) == (2000, 2000) and ev["median_s_after_first"] > 0
    assert 0.0 <= ev["Recall@20"] <= 0.05  # untrained model on random data: near chance (20 / 2000)
