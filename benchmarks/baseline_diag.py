"""Train one model on one split through the harness and log what a table hides: per-epoch loss
components (models that keep `loss_parts`), validation curve, best epoch vs the epoch cap, and the
test metrics under every tie policy (one trained model, three rankings).

    BENCH_HOME=/tmp/h python benchmarks/baseline_diag.py --model duorec --dataset scientific_mm \
        --seed 0 --set trainer.epochs=50 --set trainer.patience=5 --out /tmp/h/diag/duorec-s0.json

Nothing is written to the result store (diagnostic runs are not table cells).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.engine.evaluator import evaluate
from bench.engine.metrics import TIE_POLICIES
from bench.engine.runner import RunEnv, train_stages
from bench.engine.spec import build_spec, parse_overrides
from bench.paths import bench_home, data_root
from bench.progress import Reporter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", default="scientific")
    ap.add_argument("--protocol", default="leave_one_out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="override key=value (as bench run --set)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    spec = build_spec(a.dataset, a.protocol, a.model, a.seed, parse_overrides(a.set))
    parts: dict[str, list[float]] = defaultdict(list)  # per batch, this epoch
    per_epoch: list[dict[str, float]] = []
    with Reporter(interactive=False) as reporter:
        env = RunEnv(data_root(), bench_home(), reporter)

        from bench.plugins import get_model_class

        cls = get_model_class(a.model)
        original = cls.loss

        def logged_loss(self, batch):
            loss = original(self, batch)
            for k, v in getattr(self, "loss_parts", {}).items():
                parts[k].append(float(v))
            return loss

        cls.loss = logged_loss

        def on_epoch(epoch: int, value: float) -> None:
            row = {"epoch": epoch, **{k: sum(v) / len(v) for k, v in parts.items() if v}}
            per_epoch.append(row)
            reporter.info(f"epoch {epoch} parts " + " ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
            parts.clear()

        env.on_epoch = on_epoch
        started = time.perf_counter()
        trained = train_stages(spec, env)
        split = env.split(spec)
        max_len = spec.protocol_params["max_len"]
        test_cases = split.unlock_test()
        test = {}
        for ties in TIE_POLICIES:
            cfg = spec.evaluation.model_copy(update={"ties": ties})
            test[ties] = evaluate(trained.model, test_cases, max_len, cfg, trained.device).means
        final = trained.fits[trained.stages[-1]]
        stage = trained.stages[-1]
        out = {
            "model": a.model, "dataset": spec.dataset, "seed": a.seed, "overrides": a.set,
            "spec": spec.model_dump(),
            "epochs_cap": spec.trainer[stage].epochs, "patience": spec.trainer[stage].patience,
            "epochs_run": len(final.history), "best_epoch": final.best_epoch,
            "history": final.history, "loss_parts": per_epoch,
            "test": test, "seconds": time.perf_counter() - started,
        }
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1, default=str))
        t = test[spec.evaluation.ties]
        reporter.info(f"{a.model} {spec.dataset} seed {a.seed}: best epoch {final.best_epoch + 1}/{len(final.history)} "
                      f"(cap {out['epochs_cap']}) test R@10 {t['Recall@10']:.4f} N@10 {t['NDCG@10']:.4f}")


if __name__ == "__main__":
    main()
