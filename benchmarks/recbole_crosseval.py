"""Score RecBole-trained GRU4Rec weights with the harness's evaluator (issue 22).

If the harness's evaluator gives the same test metrics for RecBole's weights as RecBole's own
evaluation, the two evaluations are the same and any gap between the implementations lies in
training; if not, it lies in evaluation. Runs in the project venv on the weights written by

    /work/recbole-venv/bin/python benchmarks/recbole_sasrec.py --model GRU4Rec --data DIR --seed 0 \
        --epochs 50 --patience 5 --train-batch-size 256 --out run.json --save-weights run.npz
    python benchmarks/recbole_crosseval.py --weights run.npz --recbole run.json --dataset scientific \
        [--data-root ../shared/data --home .bench] [--out crosseval.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from baselines.gru4rec import GRU4Rec
from bench.data.catalog import load_dataset
from bench.engine.evaluator import EvalConfig, evaluate
from bench.nn.model import ModelContext
from bench.paths import bench_home, cache_dir, data_root
from protocols.leave_one_out import LeaveOneOut

METRICS = ["Recall@10", "NDCG@10", "Recall@20", "NDCG@20"]


def load_recbole_gru4rec(path: Path, ctx: ModelContext) -> GRU4Rec:
    arrays = np.load(path, allow_pickle=False)
    tokens = arrays["item_tokens"]  # RecBole id -> our item id (0: padding)
    if sorted(tokens.tolist()) != list(range(ctx.n_items + 1)):
        raise SystemExit(f"{path}: RecBole's items are not exactly this dataset's {ctx.n_items} items")
    model = GRU4Rec(GRU4Rec.Config(), ctx)
    emb = np.empty_like(arrays["item_embedding.weight"])
    emb[tokens] = arrays["item_embedding.weight"]  # row of RecBole id i -> row of our id tokens[i]
    state = {
        "item_emb.weight": emb,
        "gru.weight_ih_l0": arrays["gru_layers.weight_ih_l0"],
        "gru.weight_hh_l0": arrays["gru_layers.weight_hh_l0"],
        "dense.weight": arrays["dense.weight"],
        "dense.bias": arrays["dense.bias"],
    }
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help=".npz from recbole_sasrec.py --save-weights")
    ap.add_argument("--recbole", required=True, help="the same run's JSON (RecBole's own metrics)")
    ap.add_argument("--dataset", default="scientific")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--home", default=None)
    ap.add_argument("--out", default=None, help="write the comparison as JSON")
    a = ap.parse_args()

    ds = load_dataset(a.dataset, data_root(a.data_root), cache_dir(bench_home(a.home)))
    split = LeaveOneOut(LeaveOneOut.Config(max_len=a.max_len)).split(ds)  # the exported split
    ctx = ModelContext(ds.n_items, a.max_len, split.train.item_counts(ds.n_items), train_classes=split.train_classes)
    model = load_recbole_gru4rec(Path(a.weights), ctx)
    cfg = EvalConfig()
    cpu = torch.device("cpu")
    with torch.no_grad():
        ours = {"valid": evaluate(model, split.valid, a.max_len, cfg, cpu).means}
        split.unlock_test()
        ours["test"] = evaluate(model, split.test_sets()["test"], a.max_len, cfg, cpu).means
    rb = json.loads(Path(a.recbole).read_text())
    theirs = {"valid": rb["best_valid"], "test": rb["test"]}
    rows = {part: {m: {"harness": ours[part][m], "recbole": theirs[part][m.lower()]} for m in METRICS}
            for part in ("valid", "test")}
    for part, metrics in rows.items():
        for m, v in metrics.items():
            print(f"{part:5} {m:10} harness {v['harness']:.10f}  recbole {v['recbole']:.10f}  "
                  f"diff {v['harness'] - v['recbole']:+.2e}")
    if a.out:
        Path(a.out).write_text(json.dumps({"weights": Path(a.weights).name, "recbole_run": Path(a.recbole).name,
                                           "dataset": a.dataset, "dataset_content_hash": ds.content_hash,
                                           "seed": rb["seed"], "best_epoch": rb["best_epoch"], "metrics": rows},
                                          indent=2) + "\n")


if __name__ == "__main__":
    main()
