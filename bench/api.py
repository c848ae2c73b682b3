"""The Python API: `bench.run(...)` and `bench.load(home)`, for notebooks and scripts.

    import bench
    res = bench.run(models="pop,sasrec", dataset="scientific", seeds=2,
                    overrides={"protocol.max_users": 200, "trainer.epochs": 1})
    res.frame()                 # one row per run: model, seed, metrics (pandas)
    res.per_user()              # per-user test metrics, indexed by the dataset's user ids
    res.compare("sasrec")       # paired significance tests of every other model vs the reference
    print(res.table("md"))      # mean ± std over seeds

Runs go through the same code as `bench run` (same store, same hashes: a run done from the CLI
is not run again here and vice versa).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import defaults
from bench.errors import BenchError
from bench.paths import bench_home, data_root

__all__ = ["Results", "Store", "load", "run"]


def _names(value: str | Iterable[str]) -> list[str]:
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    return [str(x) for x in value]


def _seed_list(seeds: int | Iterable[int], seed: int) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise BenchError(f"seeds={seeds}: give a count >= 1 or a list of seeds")
        return list(range(seed, seed + seeds))
    return [int(s) for s in seeds]


def _env(home, data_root_, reporter=None):
    from bench.engine.runner import RunEnv
    from bench.progress import SILENT

    return RunEnv(data_root(data_root_), bench_home(home), reporter or SILENT)


def run(
    models: str | Iterable[str] = defaults.MODELS,
    dataset: str | Iterable[str] = defaults.DATASET,
    protocol: str = defaults.PROTOCOL,
    seeds: int | Iterable[int] = 1,
    overrides: dict[str, Any] | None = None,
    home: str | Path | None = None,
    data_root: str | Path | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Results:
    """Train and evaluate `models` on `dataset` under `protocol`, one run per seed, like `bench run`.

    models / dataset: comma-separated names or lists. seeds: a count (seed, seed+1, ...) or a list.
    overrides: {"group.option": value}, as `--set` (e.g. {"trainer.epochs": 1, "sasrec.dropout": 0.5}).
    home / data_root: as --home / --data-root (else $BENCH_HOME / $BENCH_DATA_ROOT, else defaults).
    Complete runs already in the store are loaded, not re-run (force=True re-runs them)."""
    from bench.engine.spec import build_spec
    from bench.experiment.experiment import Experiment
    from bench.progress import Reporter

    reporter = Reporter() if progress else None
    if reporter is not None:
        reporter.__enter__()
    try:
        env = _env(home, data_root, reporter)
        specs = [build_spec(ds, protocol, m, s, dict(overrides or {}))
                 for ds in _names(dataset) for m in _names(models) for s in _seed_list(seeds, seed)]
        # as `bench run`: a run another process holds is waited for, the first failure is raised
        records = Experiment.of_specs(specs).run(env, force=force, busy="wait", fail_fast=True).ordered_records()
    finally:
        if reporter is not None:
            reporter.__exit__(None, None, None)
    return Results(records, env)


@dataclass
class Results:
    """Records of complete runs, with the environment (data root, home) that can reload their data."""

    records: list[dict]
    env: Any = field(repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        labels = sorted({f"{r['label']} on {r['dataset']['name']}" for r in self.records})
        return f"Results({len(self.records)} runs: {', '.join(labels)})"

    def frame(self, split: str = "test"):
        """pandas DataFrame, one row per run: model, dataset, protocol, seed, best_epoch, every metric,
        run_hash. split: test, valid, or a protocol's extra part (e.g. test:all)."""
        from bench.report.console import records_frame

        self._check_split(split)
        df = records_frame(self.records, split)
        df["run_hash"] = [r["run_hash"] for r in self.records]
        return df

    def per_user(self, split: str = "test"):
        """pandas DataFrame of per-user metrics, indexed by the dataset's user ids (one row per user
        and run; columns model, dataset, seed, run_hash, then the metrics)."""
        import pandas as pd

        from bench.engine.spec import RunSpec

        self._check_split(split)
        frames = []
        for r in self.records:
            spec = RunSpec(**r["spec"])
            ds, cases = self.env.dataset(spec.dataset, spec.data), self._cases(spec, split)
            arrays = self.env.store.per_user(r["run_hash"])[split]
            df = pd.DataFrame(arrays, index=pd.Index([ds.user_ids[u] for u in cases.users], name="user_id"))
            df.insert(0, "run_hash", r["run_hash"])
            df.insert(0, "seed", spec.seed)
            df.insert(0, "dataset", r["dataset"]["name"])
            df.insert(0, "model", r["label"])
            frames.append(df)
        return pd.concat(frames) if frames else pd.DataFrame()

    def _cases(self, spec, split: str):
        s = self.env.split(spec)
        if split == "valid":
            return s.valid
        from protocols import MAIN_TEST

        s.unlock_test()  # the runs are complete: their test results are already recorded
        # stored as 'test' (the main test set) and 'test:<name>' (the split's other test sets)
        parts = {n if n == MAIN_TEST else f"test:{n}": cases for n, cases in s.test_sets().items()}
        if split not in parts:
            raise BenchError(f"split {split!r}: this protocol has no such part (has: valid, {', '.join(parts)})")
        return parts[split]

    def compare(self, reference: str, metrics: Iterable[str] = ("Recall@20", "NDCG@20"), split: str = "test",
                test: str = "ttest", correction: str = "holm", alpha: float = 0.05):
        """pandas DataFrame: every other model vs `reference` (a model name or label) per dataset and
        metric: means, difference with bootstrap CI, paired t-test, Wilcoxon and seed-level t-test
        p-values, Holm-corrected over each (dataset, metric) family; `significant` at alpha by `test`."""
        import math

        import pandas as pd

        from bench.report import stats

        self._check_split(split)
        by_arm: dict[tuple[str, str], dict[int, str]] = {}
        for r in self.records:
            by_arm.setdefault((r["dataset"]["name"], r["label"]), {})[r["spec"]["seed"]] = r["run_hash"]
        ref_labels = {r["label"] for r in self.records if reference in (r["label"], r["spec"]["model"])}
        if len(ref_labels) != 1:
            models = sorted({r["spec"]["model"] for r in self.records})
            raise BenchError(f"compare({reference!r}): not exactly one model of these results "
                             f"(models: {', '.join(models)})")
        ref_label = ref_labels.pop()
        from bench.report.values import RunValues

        values = RunValues(self.env.store)  # stored per-user metrics, or computed from the stored ranks
        rows = []
        for (ds, label), seeds in by_arm.items():
            if label == ref_label or (ds, ref_label) not in by_arm:
                continue
            for m in metrics:
                ref = {s: values.per_user(h, None, split, m) for s, h in by_arm[(ds, ref_label)].items()}
                other = {s: values.per_user(h, None, split, m) for s, h in seeds.items()}
                rows.append((ds, stats.compare(other, ref, metric=m, a=label, b=ref_label)))
        if not rows:
            raise BenchError(f"compare({reference!r}): no other model on the reference's datasets")
        for family in {(ds, c.metric) for ds, c in rows}:
            stats.correct_family([c for ds, c in rows if (ds, c.metric) == family], correction)
        out = []
        for ds, c in rows:
            p = c.p_adjusted[test]
            out.append({"dataset": ds, "model": c.a, "reference": c.b, **c.to_dict(),
                        f"p_{test}_{correction}": p, "significant": not math.isnan(p) and p < alpha})
        df = pd.DataFrame(out).drop(columns=["a", "b", "p_adjusted"])
        return df

    def table(self, format: str = "md", metrics: Iterable[str] | None = None, split: str = "test") -> str:
        """mean ± std over seeds per (dataset, protocol, model) as md, csv or latex text."""
        from bench.engine.metrics import DEFAULT_METRICS
        from bench.report.console import render, summary

        self._check_split(split)
        return render(summary(self.records, tuple(metrics or DEFAULT_METRICS), split, self.env.store), format)

    def _check_split(self, split: str) -> None:
        missing = [r["run_hash"] for r in self.records if split not in r["metrics"]]
        if missing:
            have = sorted({k for r in self.records for k in r["metrics"]})
            raise BenchError(f"split {split!r}: not in run {missing[0]} (have: {', '.join(have)})")


@dataclass
class Store:
    """A results store (`bench.load(home)`): query its complete runs."""

    env: Any

    def runs(self, model: str | None = None, dataset: str | None = None, protocol: str | None = None,
             suite: str | None = None, budget: str = "full") -> Results:
        """Complete runs, filtered by model name (or label), dataset, protocol, and/or the cells of a
        suite at a budget (finding a suite's cells reads its datasets from the data root)."""
        wanted = None
        if suite is not None:
            from bench.engine.runner import run_hash
            from bench.experiment.suites import cells, load_suite

            s = load_suite(suite)
            wanted = {run_hash(c.spec(s.protocol), self.env) for c in cells(s, budget)}
        records = []
        for key, r in self.env.store.records():
            if wanted is not None and key not in wanted:
                continue
            if model is not None and model not in (r["spec"]["model"], r["label"]):
                continue
            if dataset is not None and r["dataset"]["name"] != dataset:
                continue
            if protocol is not None and r["protocol"].get("protocol") != protocol:
                continue
            records.append(r)
        return Results(records, self.env)


def load(home: str | Path | None = None, data_root: str | Path | None = None) -> Store:
    """The store under `home` (else $BENCH_HOME, else ./.bench)."""
    env = _env(home, data_root)
    if not (env.home / "store").is_dir():
        raise BenchError(f"no results store under {env.home} (run something first, or pass home=)")
    return Store(env)
