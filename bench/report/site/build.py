"""`bench report`: a static site from the store's records (open DIR/index.html from disk).

Pages: index (every suite x budget with records), one page per suite and budget (the table of
`bench table` with its marks and caption, sortable, with metric/cutoff toggles; row means with
paired-bootstrap CIs vs the reference; adjusted p-values between rows; extra test sets and
strata as grouped bars; cost vs quality), one page per run (spec, provenance, curves, cap flag,
per-user histogram), a run list, and one page per `bench tune` study (Optuna's own figures).
Tables, marks, captions and costs come from bench.report.tables; tests and corrections from bench.report.stats.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.errors import BenchError
from bench.experiment.suites import BUDGETS, budget_label, cells, list_suites, load_suite
from bench.report import stats
from bench.report.site import charts
from bench.report.site.records import RecordsEnv, finished_at, open_store, run_row, stop_info

ASSETS = ("site.css", "site.js")
COST_METRIC = "NDCG@10"


@dataclass
class SiteReport:
    out: Path
    pages: int = 0
    suite_pages: list[str] = field(default_factory=list)
    run_pages: int = 0
    tuning_pages: int = 0
    skipped: list[str] = field(default_factory=list)  # suite x budget without a complete run
    seconds: float = 0.0
    bytes: int = 0


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise BenchError(f"bench report needs {', '.join(missing)}: pip install 'msm4sr-bench[report]'")


def _jinja():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.report.site", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda x, d=4: "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"
    env.filters["short"] = lambda rev: (rev or "unknown")[:10] + ("-dirty" if str(rev).endswith("-dirty") else "")
    return env


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "x"


def metric_parts(metric: str) -> tuple[str, str]:
    name, _, k = metric.partition("@")
    return name, k


# ---------------------------------------------------------------- suites


@dataclass
class SuiteBuild:
    suite: Any
    budget: str
    table: Any  # bench.report.tables.SuiteTable
    hashes: dict[str, str]  # run hash -> cell description, complete cells only
    n_cells: int
    page: str


def collect_suites(env: RecordsEnv, names: list[str], budgets: list[str], report: SiteReport,
                   strict: bool = False) -> list[SuiteBuild]:
    """The table of every suite x budget with a complete run (bench.report.tables finds the runs)."""
    from bench.report.tables import build_table

    out = []
    for name in names:
        suite = load_suite(name)
        for budget in budgets:
            try:
                table = build_table(suite, env.store, budget)
            except BenchError as exc:
                if strict:  # a suite the reader asked for: its error is the answer
                    raise
                report.skipped.append(f"{suite.name} ({budget_label(budget)}: {exc})")
                continue
            complete = {h: f"{r.label} / {r.dataset} / seed {s}" for r in table.rows for s, h in r.seeds.items() if h}
            if not complete:
                report.skipped.append(f"{suite.name} ({budget_label(budget)})")
                continue
            out.append(SuiteBuild(suite, budget, table, complete, len(cells(suite, budget)),
                                  f"suites/{slug(suite.name)}-{budget}.html"))
    return out


def row_flags(row, records: dict[str, dict]) -> list[str]:
    """What a reader should know before trusting a row (bench.report.tables's flags, in words): seeds
    missing, runs the epoch cap stopped, seeds that are one run, a row repeating another."""
    flags = []
    if 0 < row.n_done < len(row.seeds):
        flags.append(f"{row.n_done}/{len(row.seeds)} seeds")
    if row.capped:
        flags.append(f"epoch cap: {row.capped}/{row.n_done} seeds")
    if row.n_done > 1 and row.distinct == 1:
        flags.append("1 run (seeds identical)")
    if row.same_as:
        flags.append(f"same results as {row.same_as}")
    return flags


def suite_summary(sb: SuiteBuild, records: dict[str, dict]) -> dict:
    recs = [records[h] for h in sb.hashes]
    flagged = sum(bool(row_flags(r, records)) for r in sb.table.rows if r.n_done)
    return {
        "name": sb.suite.name, "title": sb.suite.title, "budget": sb.budget, "page": sb.page,
        "datasets": list(dict.fromkeys(r.dataset for r in sb.table.rows)),
        "models": list(dict.fromkeys(r.label for r in sb.table.rows)),
        "runs_done": len(sb.hashes), "runs_total": sb.n_cells, "flagged": flagged,
        "rows_missing": sum(not r.n_done for r in sb.table.rows),
        "date": max(finished_at(r) for r in recs)[:16].replace("T", " "),
        "revisions": sorted({r.get("provenance", {}).get("git_revision", "unknown") for r in recs}),
    }


def _pairwise_pvalues(rows, store, metric: str, test: str, correction: str, values=None) -> np.ndarray:
    """Adjusted p-values of every pair of rows (one family per dataset and metric), with the
    suite's test and correction; NaN where a pair cannot be tested (e.g. different cases).
    `values`: a RunValues (stored arrays, or computed from the stored ranks) shared over the
    metrics of a page."""
    from bench.report.values import RunValues

    values = values or RunValues(store)

    def arrays(row) -> dict[int, np.ndarray]:
        return {s: values.per_user(h, None, "test", metric) for s, h in row.seeds.items() if h is not None}

    n = len(rows)
    pairs, raw = [], []
    for i in range(n):
        for j in range(i + 1, n):
            a, b = arrays(rows[i]), arrays(rows[j])
            try:
                if test == "seed_ttest":
                    common = sorted(set(a) & set(b))
                    p = (stats.paired_ttest(np.array([a[s].mean() for s in common]),
                                            np.array([b[s].mean() for s in common]))[1]
                         if len(common) >= 2 else math.nan)
                else:
                    fn = stats.paired_ttest if test == "ttest" else stats.wilcoxon_test
                    p = fn(stats.seed_average(list(a.values())), stats.seed_average(list(b.values())))[1]
            except BenchError:
                p = math.nan
            pairs.append((i, j))
            raw.append(p)
    matrix = np.full((n, n), math.nan)
    for (i, j), p in zip(pairs, stats.correct(raw, correction) if raw else []):
        matrix[i, j] = matrix[j, i] = p
    return matrix


def suite_context(sb: SuiteBuild, env: RecordsEnv, strata: list[tuple[str, Any]] | None = None) -> dict:
    from bench.report.tables import SIG_MARK, cell_text, row_label  # cell_text: what `bench table` prints

    table, suite = sb.table, sb.suite
    records = env.records
    metrics = table.metrics
    several = len({r.dataset for r in table.rows}) > 1
    sig = suite.significance
    p_adj = {(c["dataset"], c["variation"], c["model"], c["metric"]): c["p_adjusted"][sig.test]
             for c in table.comparisons}
    body = []
    for r in table.rows:
        cells_ = []
        for m in metrics:
            marks = r.marks.get(m, set())
            mean = r.means.get(m)
            text = cell_text(r, m, "plain")
            p = p_adj.get((r.dataset, *r.arm, m))
            cells_.append({"metric": m, "text": text, "value": mean, "best": "best" in marks,
                           "second": "second" in marks, "sig": "sig" in marks,
                           "title": "" if p is None else f"adjusted p = {p:.4g} vs the reference"})
        cost = r.cost or {}
        s_epoch = _stage_ordered(r.arm[1], cost.get("s_per_epoch") or {})
        body.append({
            "dataset": r.dataset, "label": row_label(r), "cells": cells_,
            "seeds": [{"seed": s, "hash": h} for s, h in sorted(r.seeds.items())],
            "best_epoch": cost.get("best_epoch"), "parameters": cost.get("parameters"),
            "s_per_epoch": ", ".join(f"{st} {v:.1f}" for st, v in s_epoch.items()),
            "s_per_epoch_value": list(s_epoch.values())[-1] if s_epoch else None,
            "machine": cost.get("machine", ""), "flags": row_flags(r, records), "not_run": not r.n_done,
            "reference": r.arm == suite.reference_arm(),
        })
    ref_arm = suite.reference_arm()
    datasets = list(dict.fromkeys(r.dataset for r in table.rows if r.n_done))  # figures of datasets with runs
    figures: dict[str, list[dict]] = {}  # dataset -> [{kind, metric, html}]
    from bench.report.values import RunValues

    values = RunValues(env.store)
    for d in datasets:
        rows = [r for r in table.rows if r.dataset == d and r.n_done and not r.same_as]  # as the table ranks
        figs = figures.setdefault(d, [])
        ref = next((r for r in rows if r.arm == ref_arm), None)
        for m in metrics:
            comps = {(c["variation"], c["model"]): c for c in table.comparisons if c["dataset"] == d and c["metric"] == m}
            labels, means, lows, highs = [], [], [], []
            for r in rows:
                c = comps.get(r.arm)
                labels.append(r.label)
                means.append(r.means.get(m, math.nan))
                # the CI is of mean(reference) - mean(row): moved onto the row's mean
                lows.append(None if c is None else c["mean_a"] - c["ci_high"])
                highs.append(None if c is None else c["mean_a"] - c["ci_low"])
            div = f"dot-{slug(d)}-{slug(m)}"
            fig = charts.dot_plot(labels, means, lows, highs, ref.label if ref else "none",
                                  ref.means.get(m, math.nan) if ref else math.nan, m,
                                  f"{d}: {m}, row means with 95% paired-bootstrap CI vs the reference")
            figs.append({"kind": "dot", "metric": m, "html": charts.embed(fig, div)})
            if len(rows) > 1:
                matrix = _pairwise_pvalues(rows, env.store, m, sig.test, sig.correction, values)
                fig = charts.pvalue_heatmap([r.label for r in rows], matrix, sig.alpha,
                                            f"{d}: {m}, adjusted p between rows")
                figs.append({"kind": "heat", "metric": m, "html": charts.embed(fig, f"heat-{slug(d)}-{slug(m)}")})
            parts = _extra_parts([records[h] for r in rows for h in r.seeds.values() if h])
            if parts:
                series = {r.label: [float(np.mean([values.mean(h, records[h], p, m) for h in r.seeds.values() if h]))
                                    for p in ["test", *parts]] for r in rows}
                fig = charts.grouped_bars(["test", *parts], series, m, "test set",
                                          f"{d}: {m} on each test set the records carry")
                figs.append({"kind": "parts", "metric": m, "html": charts.embed(fig, f"parts-{slug(d)}-{slug(m)}")})
        cost_metric = COST_METRIC if COST_METRIC in metrics else metrics[0]
        points = [{"label": r.label, "y": r.means.get(cost_metric), "parameters": r.cost.get("parameters"),
                   "s_per_epoch": next(reversed(_stage_ordered(r.arm[1], r.cost.get("s_per_epoch") or {None: None}).values()))}
                  for r in rows if r.cost]
        for key, title in (("s_per_epoch", "s/epoch (final stage)"), ("parameters", "trainable parameters")):
            # no point for a row without training (no s/epoch) or parameters (Pop: 0, off a log axis)
            pts = [p for p in points if p[key] and p["y"] is not None]
            if pts:
                fig = charts.cost_scatter(pts, cost_metric, key, title, f"{d}: cost vs {cost_metric}")
                figs.append({"kind": "cost", "metric": None, "html": charts.embed(fig, f"cost-{slug(d)}-{key}")})
    strata_figs = []  # one group per (table, dimension), one chart per metric (the toggle picks)
    for title, df in strata or []:
        for dim in dict.fromkeys(df["by"]):
            part = df[df["by"] == dim]
            buckets = list(dict.fromkeys(part["bucket"]))
            group = []
            for m in metrics:
                if m not in part:
                    continue
                series = {label: [_leading_float(part[(part["bucket"] == b) & (part["model"] == label)][m])
                                  for b in buckets] for label in dict.fromkeys(part["model"])}
                fig = charts.grouped_bars(buckets, series, m, dim, f"{title.split(' by ')[0]}: {m} by {dim}")
                group.append({"metric": m, "html": charts.embed(fig, f"strata-{slug(title)}-{dim}-{slug(m)}")})
            strata_figs.append(group)
    families = list(dict.fromkeys(metric_parts(m)[0] for m in metrics))
    cutoffs = list(dict.fromkeys(metric_parts(m)[1] for m in metrics))
    return {
        "suite": suite, "budget": sb.budget, "budget_label": budget_label(sb.budget), "caption": table.caption,
        "metrics": metrics, "families": families, "cutoffs": cutoffs, "several": several, "rows": body,
        "sig_mark": SIG_MARK, "figures": figures, "strata": strata_figs,
        "reference": suite.arm_label(ref_arm) if ref_arm else None, "significance": sig,
        "summary": suite_summary(sb, records),
    }


def _stage_ordered(model: str, per_stage: dict) -> dict:
    """Stages in the order the model runs them (records sort keys: 'finetune' before 'pretrain'),
    so the last entry is the final stage."""
    from bench.plugins import get_model_class

    try:
        order = list(get_model_class(model).stages)
    except BenchError:
        return per_stage
    return dict(sorted(per_stage.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def metric_order(metric: str) -> tuple:
    name, k = metric_parts(metric)
    return (name, int(k) if k.isdigit() else 0, k)


def _extra_parts(recs: list[dict]) -> list[str]:
    from bench.report.strata import extra_parts

    return [p for p in extra_parts(recs) if p.startswith("test") and p != "test"]


def _leading_float(column) -> float:
    """'0.1234 ± 0.0100' (bench.report.strata's formatted cells) -> 0.1234."""
    values = list(column)
    return float(str(values[0]).split(" ")[0]) if values else math.nan


def stratified(sb: SuiteBuild, env: RecordsEnv, run_env, by: list[str]) -> list[tuple[str, Any]]:
    """bench.report.strata's tables for the suite's runs (needs the data: the split gives the strata)."""
    from bench.report.strata import stratified_tables

    recs = [env.records[h] for h in sb.hashes]
    return stratified_tables(recs, run_env, by, metrics=sb.table.metrics)


# ---------------------------------------------------------------- runs


def run_context(run_hash: str, record: dict, store, in_suites: list[dict]) -> dict:
    spec = record["spec"]
    info = stop_info(record)
    history = record.get("history") or {}
    from bench.plugins import get_model_class

    try:
        order = list(get_model_class(spec["model"]).stages)
    except BenchError:
        order = []
    stages = sorted(history, key=lambda st: order.index(st) if st in order else len(order))
    curves, figs = None, []
    if any(history.values()):
        fig = charts.stage_curves(history, [s for s in stages if history[s]], record.get("best_epoch"),
                                  info.stage if info else "", f"{record.get('label')}: training and validation per epoch")
        curves = charts.embed(fig, "curves")
    per_user = store.per_user(run_hash).get("test", {})
    for m in ("NDCG@10", "NDCG@50"):
        if m in per_user:
            figs.append(charts.embed(charts.histogram(per_user[m], m, f"per-user test {m}"), f"hist-{slug(m)}"))
    metrics = record.get("metrics", {})
    names = sorted({m for part in metrics.values() for m in part}, key=metric_order)
    prov = record.get("provenance", {})
    return {
        "hash": run_hash, "record": record, "label": record.get("label", spec["model"]), "spec": spec,
        "spec_yaml": yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=100),
        "protocol_yaml": yaml.safe_dump(record.get("protocol", {}), sort_keys=False, width=100),
        "provenance": prov, "dataset": record.get("dataset", {}), "info": info,
        "metric_parts": list(metrics), "metric_names": names, "metrics": metrics,
        "timings": {k: v for k, v in record.get("timings", {}).items() if isinstance(v, dict)},
        "total_s": record.get("timings", {}).get("total_s"), "parameters": record.get("parameters"),
        "peak_memory": record.get("peak_memory", {}), "curves": curves, "histograms": figs, "in_suites": in_suites,
    }


# ---------------------------------------------------------------- tuning


def tuning_studies(home: Path, storage_url: str | None) -> list[tuple[Any, str]]:
    """(study, storage URL) of every study in the storage `bench tune` writes to (default: the
    journal file under <home>/tuning), or nothing when there is none."""
    from bench.experiment.tuning import default_storage_url, make_storage

    url = storage_url or default_storage_url(home)
    if url.startswith("journal://") and not Path(url.removeprefix("journal://")).exists():
        return []
    import optuna

    storage = make_storage(url, home)
    return [(optuna.load_study(study_name=s.study_name, storage=storage), url)
            for s in optuna.get_all_study_summaries(storage)]


def tuning_context(study, url: str) -> dict:
    import optuna

    from bench.experiment.tuning import redact

    vis = optuna.visualization
    trials = study.trials
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    figs, notes = [], []
    for name, fn in (("history", vis.plot_optimization_history), ("importances", vis.plot_param_importances),
                     ("intermediate", vis.plot_intermediate_values)):
        with warnings.catch_warnings(record=True) as caught:  # e.g. "importances will be equal": say it on the page
            warnings.simplefilter("always")
            try:
                fig = charts.optuna_figure(fn(study), "")
            except (ValueError, RuntimeError) as exc:  # e.g. importances need two complete trials
                notes.append(f"{name}: {exc}")
                continue
        notes += [f"{name}: {w.message}" for w in caught if not issubclass(w.category, DeprecationWarning)]
        figs.append(charts.embed(fig, f"optuna-{name}"))
    try:
        best = study.best_trial
    except ValueError:
        best = None
    return {
        "name": study.study_name, "storage": redact(url), "states": states, "best": best,
        "setup": study.user_attrs.get("setup", {}), "budget": study.user_attrs.get("budget"),
        "trials": [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                    "best_epoch": None if t.user_attrs.get("best_epoch") is None else t.user_attrs["best_epoch"] + 1,
                    "seconds": t.user_attrs.get("seconds")}
                   for t in trials],
        "figures": figs, "notes": notes, "page": f"tuning/{slug(study.study_name)}.html",
    }


# ---------------------------------------------------------------- the site


def build_site(out: Path, home: Path, suite_names: list[str] | None = None, budgets: list[str] | None = None,
               by: list[str] | None = None, data_root: Path | None = None, tuning_storage: str | None = None,
               all_runs: bool | None = None, store_root: Path | None = None) -> SiteReport:
    """Write the site into `out` (created; files of a previous build are replaced)."""
    from importlib import resources

    from bench.engine.provenance import git_revision

    started = time.perf_counter()
    _require("plotly", "jinja2")
    report = SiteReport(out)
    store = open_store(home, store_root)
    env = RecordsEnv(store)
    for b in budgets or []:
        if b not in BUDGETS:
            raise BenchError(f"--budget {b!r}: valid: {', '.join(BUDGETS)}")
    names = suite_names or list_suites()
    suites = collect_suites(env, names, list(budgets or BUDGETS), report, strict=bool(suite_names))
    if suite_names and not suites:
        raise BenchError(f"no complete run of {', '.join(suite_names)} ({', '.join(budgets or BUDGETS)}) "
                         f"in {store.root}")
    jinja = _jinja()
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("suites", "runs", "tuning", "assets"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir()
    import plotly.offline

    (out / "assets" / "plotly.min.js").write_text(plotly.offline.get_plotlyjs())
    static = resources.files("bench.report.site") / "static"
    for name in ASSETS:
        (out / "assets" / name).write_text(static.joinpath(name).read_text())
    built = {"at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "revision": git_revision()}

    def write(rel: str, template: str, **ctx) -> None:
        depth = rel.count("/")
        # only the front page carries the build stamp, so re-building leaves unchanged pages byte-identical
        html = jinja.get_template(template).render(root="../" * depth, built=built if rel == "index.html" else None,
                                                   **ctx)
        (out / rel).write_text(html)
        report.pages += 1

    # which suite pages show each run
    in_suites: dict[str, list[dict]] = {}
    run_env = None
    if by:
        from bench.engine.runner import RunEnv

        if data_root is None:
            raise BenchError("--by needs the datasets (strata come from the split): pass --data-root")
        run_env = RunEnv(data_root, home)
    summaries = []
    for sb in suites:
        strata = stratified(sb, env, run_env, by) if by else None
        ctx = suite_context(sb, env, strata)
        write(sb.page, "suite.html.j2", **ctx)
        report.suite_pages.append(sb.page)
        summaries.append(ctx["summary"])
        for h, where in sb.hashes.items():
            in_suites.setdefault(h, []).append({"page": sb.page, "title": f"{sb.suite.name} ({budget_label(sb.budget)})",
                                                "cell": where})
    show_all = all_runs if all_runs is not None else not suite_names
    runs = {h: r for h, r in env.records.items() if show_all or h in in_suites}
    rows = sorted((run_row(h, r) for h, r in runs.items()), key=lambda x: x["finished"], reverse=True)
    for h, record in runs.items():
        write(f"runs/{h}.html", "run.html.j2", **run_context(h, record, store, in_suites.get(h, [])))
        report.run_pages += 1
    write("runs/index.html", "runs.html.j2", rows=rows)
    studies = []
    for study, url in tuning_studies(home, tuning_storage):
        ctx = tuning_context(study, url)
        write(ctx["page"], "tuning.html.j2", **ctx)
        studies.append(ctx)
        report.tuning_pages += 1
    write("index.html", "index.html.j2", suites=summaries, skipped=report.skipped, studies=studies,
          n_runs=len(env.records), store=str(store.root))
    report.seconds = time.perf_counter() - started
    report.bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return report
