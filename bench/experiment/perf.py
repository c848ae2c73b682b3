"""`bench perf`: SASRec (CE) epoch time, full-ranking evaluation time and peak memory, ours
beside RecBole 1.2.1 on the identical split and model config, each in its own process.

RecBole runs from its own virtual environment (never a dependency of this package) through
benchmarks/recbole_sasrec.py on the split exported by bench/data/export_recbole.py.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def measure_ours(dataset: str, data_root: Path, home: Path, mode: str, batch_size: int, epochs: int) -> dict:
    """Train SASRec for `epochs` epochs (each followed by a full validation pass)."""
    import torch

    from bench import defaults
    from bench.engine.evaluator import EvalConfig
    from bench.engine.runner import RunEnv
    from bench.engine.seeding import seed_everything
    from bench.engine.spec import build_spec
    from bench.engine.trainer import TrainerConfig, fit
    from bench.nn.model import ModelContext
    from bench.plugins import get_model_class

    env = RunEnv(data_root, home)
    spec = build_spec(dataset, defaults.PROTOCOL, "sasrec", 0, {})
    split = env.split(spec)
    seed_everything(0)
    cls = get_model_class("sasrec")
    model = cls(cls.Config(), ModelContext(split.n_items, 50, split.train.item_counts(split.n_items)))
    cfg = TrainerConfig(epochs=epochs, patience=epochs + 1, batch_size=batch_size, sample_mode=mode)
    result = fit(model, split, "train", cfg, EvalConfig(), 0, 50)
    return {
        "train_epoch_s": result.train_seconds,
        "valid_eval_s": result.eval_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }


def check_recbole_python(python: str) -> str:
    """RecBole's version from `python`, checked before anything is timed: the file exists, is
    executable and imports recbole; otherwise one BenchError line."""
    from bench.errors import BenchError

    path = Path(python).expanduser()
    if not path.is_file():
        raise BenchError(f"--recbole-python {python}: no such file (give the python of a venv with recbole==1.2.1)")
    if not os.access(path, os.X_OK):
        raise BenchError(f"--recbole-python {python}: not executable")
    try:
        proc = subprocess.run([str(path), "-c", "import recbole; print(recbole.__version__)"],
                              capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"--recbole-python {python}: cannot run it ({exc})") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"--recbole-python {python}: cannot import recbole ({last}); "
                         f"install it there: {python} -m pip install recbole==1.2.1")
    return proc.stdout.strip()


def run_ours_subprocess(args: dict, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "bench.experiment.perf", json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_recbole_subprocess(python: str, export_dir: Path, batch_size: int, epochs: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recbole.json"
        cmd = [python, str(REPO / "benchmarks" / "recbole_sasrec.py"), "--data", str(export_dir), "--seed", "0",
               "--epochs", str(epochs), "--patience", str(epochs + 1), "--train-batch-size", str(batch_size),
               "--eval-batch-size", "2048", "--threads", str(threads), "--out", str(out)]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.read_text())
    return {
        "train_epoch_s": [e["train_seconds"] for e in r["per_epoch"]],
        "valid_eval_s": [e["valid_seconds"] for e in r["per_epoch"] if "valid_seconds" in e],
        "peak_rss_mib": r["peak_rss_mib"],
        "torch_threads": threads,
    }


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


if __name__ == "__main__":  # worker: python -m bench.experiment.perf '<json args>'
    a = json.loads(sys.argv[1])
    print(json.dumps(measure_ours(a["dataset"], Path(a["data_root"]), Path(a["home"]), a["mode"],
                                  a["batch_size"], a["epochs"])))
