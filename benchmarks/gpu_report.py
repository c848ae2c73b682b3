"""Seconds per training epoch, evaluation users/s and peak GPU memory for SASRec and MSM4SR,
on cpu and (when present) cuda, on the real Scientific data. One prepared run for a lent GPU:

    python benchmarks/gpu_report.py [--users N] [--epochs 1] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.engine.evaluator import EvalConfig, evaluate
from bench.engine.provenance import hardware
from bench.engine.runner import RunEnv
from bench.engine.seeding import seed_everything
from bench.engine.spec import build_spec
from bench.engine.trainer import fit
from bench.nn.model import ModelContext
from bench.paths import bench_home, data_root
from bench.plugins import get_model_class


def measure(env: RunEnv, model: str, device: str, users: int | None, epochs: int) -> dict:
    overrides = {"trainer.device": device, "trainer.epochs": epochs, "trainer.patience": epochs + 1}
    if users:
        overrides["protocol.max_users"] = users
    spec = build_spec("scientific", "leave_one_out", model, 0, overrides)
    split = env.split(spec)
    cls = get_model_class(model)
    config = cls.Config(**spec.model_params)
    params = cls.needs_features(config)
    ctx = ModelContext(split.n_items, 50, split.train.item_counts(split.n_items),
                       env.features(spec.dataset, params) if params is not None else None)
    seed_everything(0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = {}
    for stage in cls.stages_for(config):
        m = cls(config, ctx).to(device)
        m.set_stage(stage)
        result = fit(m, split, stage, spec.trainer[stage], spec.evaluation, 0, 50)
        seconds = result.train_seconds[1:] or result.train_seconds  # the first epoch pays the warm-up
        out[f"{stage}_s_per_epoch"] = statistics.median(seconds)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    evaluate(m, split.valid, 50, EvalConfig(), torch.device(device))
    if device == "cuda":
        torch.cuda.synchronize()
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out["eval_users_per_s"] = len(split.valid) / (time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=None, help="first N users only (default: all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--models", default="sasrec,msm4sr")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    env = RunEnv(data_root(), bench_home())
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    report = {"hardware": hardware(), "torch_threads": torch.get_num_threads(), "users": a.users,
              "epochs": a.epochs, "results": {}}
    for model in a.models.split(","):
        for device in devices:
            report["results"][f"{model}/{device}"] = r = measure(env, model, device, a.users, a.epochs)
            print(model, device, {k: round(v, 3) for k, v in r.items()}, flush=True)
            if a.out:  # after every measurement, so a run cut short keeps what it measured
                Path(a.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
