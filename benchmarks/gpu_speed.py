"""Device speed of the three figures issue 23 sets for one GPU: a SASRec training epoch on
Scientific, an MSM4SR pre-training epoch (Scientific with item features), and full-ranking
evaluation of 100,000 users x 100,000 items. Prints the device name with every figure.

    python benchmarks/gpu_speed.py --out benchmarks/results/gpu_speed_<gpu>.json    # on a GPU
    python benchmarks/gpu_speed.py --capture cudagraphs --fixed-shape               # captured steps
    python benchmarks/gpu_speed.py --tiny                                           # CPU smoke run

Training runs through bench.engine.trainer.fit (device-resident rows, no host read inside an
epoch); per-epoch train seconds come from its history, the first epoch (allocator warm-up,
compilation) reported apart from the median of the rest. The real mode reads Scientific from the
data root and MSM4SR's item features from BENCH_HOME's cache (built there if missing: minutes of
text encoding on a CPU). `--tiny` uses small synthetic data instead (random sequences, random
item features, 2,000 x 2,000 evaluation) so the script itself is tested on any machine; its
timings mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.engine.evaluator import EvalConfig, evaluate  # noqa: E402
from bench.engine.seeding import seed_everything  # noqa: E402
from bench.engine.trainer import TrainerConfig, fit, resolve_device  # noqa: E402
from bench.features.item_features import ItemFeatures  # noqa: E402
from bench.nn.model import ModelContext  # noqa: E402
from bench.plugins import get_model_class  # noqa: E402
from protocols.base import EvalCases, Split, TrainSequences  # noqa: E402


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_split(n_users: int, n_items: int, seed: int = 0, min_len: int = 4, max_len: int = 30) -> Split:
    """Random sequences (lengths min_len..max_len); the last item of each user is its valid target."""
    g = np.random.default_rng(seed)
    lengths = g.integers(min_len, max_len + 1, size=n_users)
    items = g.integers(1, n_items + 1, size=int(lengths.sum())).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    train_len = lengths - 1
    train_off = np.concatenate([[0], np.cumsum(train_len)]).astype(np.int64)
    keep = np.ones(len(items), bool)
    keep[offsets[1:] - 1] = False
    train = TrainSequences(train_off, items[keep])
    valid = EvalCases(np.arange(n_users), items[offsets[1:] - 1], train_off, train.items)
    return Split(n_items, train, valid, valid, {"protocol": "synthetic"})


def fit_epochs(model_name: str, stage: str, split: Split, ctx: ModelContext, device: torch.device, epochs: int,
               max_len: int, params: dict, cfg: TrainerConfig) -> dict:
    cls = get_model_class(model_name)
    seed_everything(0)
    model = cls(cls.Config(**params), ctx).to(device)
    model.set_stage(stage)
    cfg = cfg.model_copy(update={"epochs": epochs, "patience": epochs + 1, "device": str(device)})
    sync(device)
    result = fit(model, split, stage, cfg, EvalConfig(), 0, max_len)
    train_s = result.train_seconds
    return {"model": model_name, "stage": stage, "batch_size": cfg.batch_size, "epochs": len(train_s),
            "first_epoch_s": train_s[0],
            "median_epoch_s_after_first": statistics.median(train_s[1:]) if len(train_s) > 1 else None,
            "median_valid_s": statistics.median(result.eval_seconds),
            "loss": [h["loss"] for h in result.history],
            **({"dropped_rows": result.history[-1]["dropped_rows"]} if cfg.fixed_shape else {})}


def eval_speed(n_users: int, n_items: int, device: torch.device, max_len: int, repeats: int) -> dict:
    """Full ranking of n_users x n_items with an untrained SASRec (the scoring work does not
    depend on the weights); histories of random lengths up to max_len."""
    split = synthetic_split(n_users, n_items, seed=1, max_len=max_len + 1)
    cls = get_model_class("sasrec")
    seed_everything(0)
    model = cls(cls.Config(), ModelContext(n_items, max_len, split.train.item_counts(n_items))).to(device)
    seconds = []
    for _ in range(repeats + 1):  # the first pass warms the allocator
        sync(device)
        t = time.perf_counter()
        res = evaluate(model, split.valid, max_len, EvalConfig(), device)
        sync(device)
        seconds.append(time.perf_counter() - t)
    return {"users": n_users, "items": n_items, "first_s": seconds[0], "median_s_after_first": statistics.median(seconds[1:]),
            "Recall@20": res.means["Recall@20"]}


def real_data(args, model_name: str, stage: str, dataset: str):
    """Scientific as a run of the harness sees it: split, model context (features), the model's
    and the stage's default settings."""
    from bench.engine.runner import RunEnv, _stage_data
    from bench.engine.spec import build_spec

    env = RunEnv(Path(args.data_root), Path(args.home))
    spec = build_spec(dataset, "leave_one_out", model_name, 0, {})
    ds, split = env.dataset(spec.dataset, spec.data), env.split(spec)
    max_len = spec.protocol_params["max_len"]
    cls = get_model_class(model_name)
    data = _stage_data(env, ds, split, max_len, cls.needs_features(cls.Config(**spec.model_params)))
    return split, data.ctx, max_len, spec.model_params, spec.trainer[stage]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small synthetic data (a smoke run; works on CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=4, help="training epochs per model (the first is reported apart)")
    ap.add_argument("--capture", default="off", choices=["off", "compile", "cudagraphs"])
    ap.add_argument("--fixed-shape", action="store_true", help="full batches of max_len columns (drops the partial batch)")
    ap.add_argument("--eval-users", type=int, default=100_000)
    ap.add_argument("--eval-items", type=int, default=100_000)
    ap.add_argument("--eval-repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=["sasrec", "msm4sr", "eval"], choices=["sasrec", "msm4sr", "eval"])
    ap.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--home", default=os.environ.get("BENCH_HOME", ".bench"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    step = {"fixed_shape": args.fixed_shape, "capture": args.capture}  # trainer fields
    name = device_name(device)
    out = {"device": name, "torch": torch.__version__, "tiny": args.tiny, "capture": args.capture,
           "fixed_shape": args.fixed_shape, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "figures": []}
    print(f"device: {name}", flush=True)
    for part in args.only:
        if part == "eval":
            users, items = (2000, 2000) if args.tiny else (args.eval_users, args.eval_items)
            row = {"figure": "evaluation", **eval_speed(users, items, device, 50, 1 if args.tiny else args.eval_repeats)}
        else:
            model_name, stage = ("sasrec", "train") if part == "sasrec" else ("msm4sr", "pretrain")
            if args.tiny:
                split = synthetic_split(150, 200)
                feats = ItemFeatures.random(200, dim=16, seed=0) if part == "msm4sr" else None
                if feats is not None:
                    feats.meta["n_keywords"] = 15
                ctx, max_len = ModelContext(200, 20, split.train.item_counts(200), feats), 20
                params, cfg = {}, TrainerConfig(batch_size=64, **step)
            else:
                dataset = "scientific" if part == "sasrec" else "scientific_mm"
                split, ctx, max_len, params, cfg = real_data(args, model_name, stage, dataset)
                cfg = cfg.model_copy(update=step)
            epochs = min(args.epochs, 2) if args.tiny else args.epochs
            row = {"figure": f"{model_name} {stage} epoch",
                   **fit_epochs(model_name, stage, split, ctx, device, epochs, max_len, params, cfg)}
        row["device"] = name
        out["figures"].append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
