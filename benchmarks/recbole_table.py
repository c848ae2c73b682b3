"""Our models beside RecBole 1.2.1 on the identical split: one markdown table.

Reads the JSON results of benchmarks/recbole_sasrec.py (one per model, dataset and seed) and the
rows of a suite table (leave-one-out, full ranking; the reference variation's rows) from the
store, e.g.

    python benchmarks/recbole_table.py results/recbole/*.json --suite baselines --budget cpu --home results \
        --out results/baselines-recbole-cpu.md

`--variations a,b` sets those variations' rows of the suite beside RecBole instead (each row with
RecBole's difference from it), e.g. a layout switch that reproduces RecBole's figure.

Each RecBole group is matched to our rows of the same dataset and model. Its split is the same
only when the export's content hash equals our records' (the export was made from that data):
a group exported under another content hash is marked, never silently set beside ours.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.engine.store import ResultStore
from bench.experiment.suites import load_suite
from bench.paths import bench_home, store_dir
from bench.report.tables import build_table, provenance_header

OURS = {"SASRec": "sasrec", "GRU4Rec": "gru4rec", "BERT4Rec": "bert4rec", "S3Rec": "s3rec"}
METRICS = ["Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "Recall@50", "NDCG@50"]


def recbole_rows(paths: list[Path]) -> dict[tuple[str, str, str], list[dict]]:
    """Runs grouped by dataset, model and the content hash of the data they were exported from."""
    by_model = defaultdict(list)
    for p in paths:
        run = json.loads(p.read_text())
        by_model[(run["dataset"], run["model"], str(run["export_info"].get("dataset_content_hash")))].append(run)
    return by_model


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.4f}"


def versus(ours: dict[str, list[float]], runs: list[dict], metrics: list[str]) -> str:
    """RecBole minus ours per metric, with Welch's t-test over seeds (the runs are not paired:
    seed k is not the same random stream in both implementations)."""
    from scipy import stats

    parts = []
    for m in metrics:
        theirs = [r["test"][m.lower()] for r in runs]
        p = stats.ttest_ind(theirs, ours[m], equal_var=False).pvalue if min(len(theirs), len(ours[m])) > 1 else float("nan")
        parts.append(f"{m} {np.mean(theirs) - np.mean(ours[m]):+.4f} (p {p:.2g})")
    return "; ".join(parts)


def recbole_line(dataset: str, model: str, runs: list[dict], metrics: list[str], our_hash: str | None) -> str:
    values = [cell([r["test"][m.lower()] for r in runs]) for m in metrics]
    best = np.mean([r["best_epoch"] + 1 for r in runs])
    s_epoch = np.mean([r["timing"]["train_epoch_seconds_median"] for r in runs])
    device = runs[0].get("device", "cpu")
    where = f"{device}, {runs[0]['machine']['torch_threads']} thread(s)" if device == "cpu" else device
    limited = sum(bool(r.get("stopped_by_time_limit")) for r in runs)
    budget = f"max {runs[0]['hyperparameters']['max_epochs']} ep., patience {runs[0]['hyperparameters']['patience']}"
    if runs[0].get("pretrain"):
        budget = f"pre-training {runs[0]['pretrain']['epochs']} ep. (fixed), then {budget}"
    if limited:
        budget += f"; {limited} run(s) cut by a time limit after {min(r['epochs_run'] for r in runs)}+ epochs"
    exported = str(runs[0]["export_info"].get("dataset_content_hash"))
    if our_hash is not None and exported != our_hash:
        budget += f"; exported from content hash {exported}, ours {our_hash}: same split not verified"
    return (f"| {dataset} | {model} | RecBole 1.2.1 | {len(runs)} | " + " | ".join(values)
            + f" | {best:.1f} | {s_epoch:.2f} ({where}) | {budget} | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recbole", nargs="+", type=Path, help="recbole_sasrec.py result JSON files")
    ap.add_argument("--suite", default="main")
    ap.add_argument("--budget", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--home", type=Path, default=None, help="store to read our rows from (default: $BENCH_HOME)")
    ap.add_argument("--variations", default=None,
                    help="comma-separated variations whose rows to show (default: the suite's reference)")
    a = ap.parse_args()
    suite = load_suite(a.suite)
    store = ResultStore(store_dir(a.home or bench_home()))  # read once: the table and the split check
    table = build_table(suite, store, a.budget)
    reference = suite.reference_arm()
    wanted = a.variations.split(",") if a.variations else [reference[0]] if reference else None
    ours = defaultdict(list)  # (dataset, model) -> its rows of the wanted variations, in the suite's order
    for row in table.rows:
        if row.n_done and (wanted is None or row.arm[0] in wanted):
            ours[(row.dataset, row.arm[1])].append(row)
    metrics = [m for m in METRICS if m in table.metrics]
    lines = ["| Dataset | Model | implementation | seeds | " + " | ".join(metrics)
             + " | best epoch | s/epoch | budget | RecBole minus this row (Welch p) |",
             "|---" * (len(metrics) + 8) + "|"]
    for (dataset, model, _), runs in sorted(recbole_rows(a.recbole).items()):
        rows = ours.get((dataset, OURS.get(model, "")), [])
        if rows:  # the same seeds on both sides
            runs = [r for r in runs if r["seed"] in rows[0].seeds] or runs
        our_hash = None
        for row in rows:  # our rows above their RecBole group
            records = [store.load(h) for h in row.seeds.values() if h is not None]
            our_hash = records[0]["dataset"]["content_hash"]
            per_seed = {m: [r["metrics"]["test"][m] for r in records] for m in metrics}
            c = row.cost
            s_epoch = ", ".join(f"{v:.2f}" for v in c["s_per_epoch"].values())
            name = "msm4sr-bench" + (f" ({row.label})" if not wanted or len(wanted) > 1 else "")
            lines.append(f"| {dataset} | {model} | {name} | {row.n_done} | "
                         + " | ".join(f"{row.means[m]:.4f} ± {row.stds[m]:.4f}" for m in metrics)
                         + f" | {c['best_epoch']:.1f} | {s_epoch} ({c['machine']}) | suite {a.suite}, {a.budget} "
                           f"budget, max {c.get('epoch_cap')} ep. | {versus(per_seed, runs, metrics[:2])} |")
        lines.append(recbole_line(dataset, model, runs, metrics, our_hash))
    body = "\n".join(lines) + "\n"
    text = (provenance_header("md", "python " + shlex.join(sys.argv)) + "\n" + body
            + "\nTest split, full ranking over all items, mean ± std (ddof 1) over seeds; best epoch 1-based; "
              "s/epoch = training seconds per epoch (median per run for RecBole, mean for ours); the last "
              "column: RecBole's mean minus that row's, Welch's t-test over the seeds (RecBole's runs of our row's seeds; "
              "not paired: seed k is another random stream in each implementation).\n")
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
