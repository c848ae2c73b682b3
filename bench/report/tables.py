"""A suite's results table: mean +- std over seeds, best bold, second underlined, and a mark
on every row that differs significantly from the suite's reference (paired tests on per-user
test metrics, corrected over the declared family), rendered as Markdown, LaTeX or CSV.

Every table comes with a sidecar JSON that maps each (dataset, row, seed) to its run hash in the
store, with the comparisons' statistics, so any number can be traced to its run record.

A table needs the records alone (bench.report.values: metrics stored, or computed from the stored
ranks); its rows and their aggregation also make the console tables (bench.report.console); its
caption is written by bench.report.captions.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.engine.budgets import training_limits
from bench.engine.spec import spec_key as spec_hash
from bench.errors import BenchError
from bench.experiment.suites import Suite, budget_label, cells
from bench.hashing import canonical_json
from bench.plugins import get_model_class
from bench.report import stats
from bench.report.captions import CAP_MARK, SIG_MARK, caption, split_counts


@dataclass
class Row:
    dataset: str
    arm: tuple[str, str]
    label: str
    seeds: dict[int, str | None]  # seed -> run hash when complete, else None
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    marks: dict[str, set] = field(default_factory=dict)  # metric -> {"best", "second", "sig"}
    tuned_from: str | None = None
    cost: dict[str, Any] = field(default_factory=dict)  # parameters, best epoch, s/epoch per stage
    capped: int = 0  # seeds stopped by an epoch cap while still improving (capped_stages)
    below_need: list[str] = field(default_factory=list)  # stages the budget trained below the model's declared need
    distinct: int = 0  # seeds with distinct results (1 = every seed gave the same numbers)
    shared_pretraining: bool = False  # an earlier stage shared by every seed (trainer.<stage>.shared_seed)
    same_as: str | None = None  # the label of an earlier row with exactly these results
    untested: bool = False  # judged on other test users than the reference: no paired test
    uncomputed: list[str] = field(default_factory=list)  # metrics its records can give no value of (say why)

    @property
    def n_done(self) -> int:
        return sum(h is not None for h in self.seeds.values())


@dataclass
class SuiteTable:
    suite: Suite
    budget: str
    rows: list[Row]
    comparisons: list[dict]
    caption: str
    ties: str = "pessimistic"
    n_items: dict[str, int] = field(default_factory=dict)  # dataset -> catalogue size (chance level)
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> what the split affects
    coverage: dict[str, dict] = field(default_factory=dict)  # dataset -> per modality: items, interactions
    uses_images: bool = False

    @property
    def metrics(self) -> list[str]:
        return self.suite.metrics

    @property
    def budget_label(self) -> str:
        return budget_label(self.budget)

    def sidecar(self) -> dict:
        return {
            "suite": self.suite.name,
            "title": self.suite.title,
            "budget": self.budget,
            "caption": self.caption,
            "protocol": self.suite.protocol,
            "metrics": self.metrics,
            "significance": self.suite.significance.model_dump(),
            "reference": list(self.suite.reference_arm() or []),
            "cells": [
                {
                    "dataset": r.dataset, "variation": r.arm[0], "model": r.arm[1], "label": r.label,
                    "tuned_from": r.tuned_from,
                    "runs": {str(s): h for s, h in r.seeds.items()},
                    "mean": r.means, "std": r.stds,
                    "marks": {m: sorted(v) for m, v in r.marks.items()},
                    "cost": r.cost, "capped_seeds": r.capped, "below_need": r.below_need, "distinct_runs": r.distinct,
                    "shared_pretraining": r.shared_pretraining, "same_as": r.same_as, "untested": r.untested,
                }
                for r in self.rows
            ],
            "comparisons": self.comparisons,
            "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }


def capped_stages(record: dict) -> list[str]:
    """Stages of a run that stopped at their epoch cap while still improving: the best epoch lies
    within the patience window of the cap, so early stopping never had its say."""
    out = []
    for stage, history in record.get("history", {}).items():
        cfg = record["spec"]["trainer"].get(stage, {})
        metric, cap, patience = cfg.get("valid_metric"), cfg.get("epochs"), cfg.get("patience")
        values = [h.get(metric) for h in history]
        if not history or cap is None or None in values or len(history) < cap:
            continue
        best = int(np.argmax(values))  # the trainer keeps the first best epoch
        if best >= cap - patience:
            out.append(stage)
    return out


def records_by_spec(store) -> dict[str, list[tuple[str, dict]]]:
    """Complete records indexed by the hash of their spec alone: a table finds its runs without
    the raw data (a run hash also keys the dataset's content, which needs the files)."""
    index: dict[str, list[tuple[str, dict]]] = {}
    for key, record in store.records():
        index.setdefault(spec_hash(record["spec"]), []).append((key, record))
    return index


def suite_records(suite: Suite, store, budget: str):
    """(cell, run hash, record or None) of every cell of the suite at the budget, found by the
    cell's spec among the store's records: the records alone, no raw data read or hashed. When
    runs of one spec on different versions of the data exist, the newest record is the cell's (a
    missing cell's key is its spec's hash, which no run has)."""
    index = records_by_spec(store)
    for cell in cells(suite, budget):
        spec_key = spec_hash(cell.spec(suite.protocol))
        found = index.get(spec_key)
        key, record = max(found, key=lambda kr: kr[1].get("provenance", {}).get("finished_at", "")) \
            if found else (spec_key, None)
        yield cell, key, record


def aggregate(row: Row, done: list[tuple[str, dict]], metrics, split: str, values) -> None:
    """Mean and std (ddof 1) over the row's complete runs [(run hash, record)] of each metric: the
    one aggregation behind suite tables and console tables. Values come from `values`
    (bench.report.values.RunValues): stored, or computed from the stored ranks."""
    for m in metrics:
        try:
            vals = [values.mean(h, r, split, m) for h, r in done]
        except BenchError as exc:  # e.g. a metric registered after runs that predate stored ranks
            row.uncomputed.append(f"{m} ({exc})")
            vals = []
        if vals:
            row.means[m] = float(np.mean(vals))
            row.stds[m] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        row.marks[m] = set()


def records_rows(records: list[dict], metrics, split: str = "test", values=None) -> list[Row]:
    """Rows of ad-hoc records (`bench run`, `bench tune --seeds`, the API): one per (dataset,
    protocol, label) in order of appearance, aggregated as a suite table's rows are."""
    from bench.report.values import RunValues

    values = values or RunValues()
    groups: dict[tuple[str, str, str], dict] = {}
    for r in records:  # the same run listed twice counts once
        key = (r["dataset"]["name"], r["protocol"]["protocol"], r["label"])
        groups.setdefault(key, {})[r.get("run_hash") or id(r)] = r
    rows = []
    for (dataset, protocol, label), runs in groups.items():
        done = [(h if isinstance(h, str) else "", r) for h, r in runs.items()]
        row = Row(dataset, (protocol, label), label, {i: h for i, (h, _) in enumerate(done)})  # n_done = runs
        aggregate(row, done, metrics, split, values)
        rows.append(row)
    return rows


def build_table(suite: Suite, store, budget: str = "full", split: str = "test") -> SuiteTable:
    """Gather the suite's complete records from the store (records alone: no raw data needed)
    and compute the marks."""
    from bench.report.values import RunValues

    values = RunValues(store)
    by_row: dict[tuple[str, tuple[str, str]], Row] = {}
    records: dict[str, dict] = {}
    run_keys: dict[int, list[str]] = {}  # id(row) -> its runs' hashes, complete or not
    for cell, key, record in suite_records(suite, store, budget):
        row = by_row.setdefault(
            (cell.dataset, cell.arm),
            Row(cell.dataset, cell.arm, suite.arm_label(cell.arm), {}, tuned_from=cell.tuned_from),
        )
        row.seeds[cell.seed] = key if record is not None else None
        run_keys.setdefault(id(row), []).append(key)
        if record is not None:
            records[key] = record
    # rows grouped by dataset, in the suite's order
    datasets = list(dict.fromkeys(d for d, _ in by_row))
    rows = _distinct_runs([by_row[(d, arm)] for d in datasets for arm in suite.arms() if (d, arm) in by_row],
                          run_keys, records, suite.reference_arm())
    for row in rows:
        runs = [(h, records[h]) for h in row.seeds.values() if h is not None]
        aggregate(row, runs, suite.metrics, split, values)
        done = [r for _, r in runs]
        row.cost = run_cost(done)
        row.capped = sum(bool(capped_stages(r)) for r in done)
        row.below_need = sorted({f"{st} {'/'.join(v['below_need'])}" for r in done
                                 for st, v in training_limits(r["spec"]).items() if v["below_need"]})
        # seeds that produced identical results (nothing seeded trained, e.g. zero-shot with a
        # shared pre-training) are one run, not n runs with a spread of zero
        row.distinct = len({canonical_json(r["metrics"][split]) for r in done})
        row.shared_pretraining = any(t.get("shared_seed") for r in done
                                     for st, t in r["spec"]["trainer"].items() if st in r.get("history", {})
                                     and st != list(r["history"])[-1])
    _mark_same_results(rows, records, split)
    for d in datasets:
        ds_rows = [r for r in rows if r.dataset == d and not r.same_as]
        for m in suite.metrics:
            _rank_marks(ds_rows, m)
    comparisons = _significance(suite, [r for r in rows if not r.same_as], values, records, split)
    ties = next(iter(records.values()))["spec"]["evaluation"]["ties"] if records else "pessimistic"
    table = SuiteTable(suite, budget, rows, comparisons, "", ties)
    one_per_dataset = {r["dataset"]["name"]: r for r in records.values() if "dataset" in r}  # one split each
    table.n_items = {d: r["dataset"]["items"] for d, r in one_per_dataset.items()}
    table.split_counts = {d: split_counts(r.get("protocol", {})) for d, r in one_per_dataset.items()}
    table.coverage = {r["dataset"]["name"]: r["dataset"]["coverage"] for r in records.values()
                      if r.get("dataset", {}).get("coverage") and _uses_images(r)}
    table.uses_images = any(_uses_images(r) for r in records.values())
    table.caption = caption(table)
    return table


def _uses_images(record: dict) -> bool:
    return "image" in (record["spec"]["model_params"].get("modalities") or ())


def _mark_same_results(rows: list[Row], records: dict[str, dict], split: str) -> None:
    """A row whose every seed reproduces another row's results exactly trains the same model
    (e.g. VQ-Rec has no ID table, so its inductive and transductive rows are one model): it is
    marked as such and left out of the ranking and the tests."""
    seen: dict[tuple, Row] = {}
    for row in rows:
        if not row.n_done or row.n_done < len(row.seeds):
            continue
        key = (row.dataset, tuple(canonical_json(records[h]["metrics"][split]) for _, h in sorted(row.seeds.items())))
        if key in seen and seen[key].arm[1] == row.arm[1]:
            row.same_as = seen[key].label
        else:
            seen.setdefault(key, row)


def export_records(table: SuiteTable, store, dest_root) -> int:
    """Copy each complete run's record and per-user arrays (nothing else: no weights, no
    checkpoints) into the store at `dest_root`, for tables that others re-render."""
    import shutil
    from pathlib import Path

    n = 0
    for h in {h for r in table.rows for h in r.seeds.values() if h is not None}:
        dest = Path(dest_root) / "runs" / h
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("record.json", "per_user.npz"):
            shutil.copyfile(store.run_dir(h) / name, dest / name)
        n += 1
    return n


def identical_runs(runs_of: dict[Any, tuple]) -> dict[Any, list[Any]]:
    """First key -> every key with the same runs, in the given order: a model that no variation
    touches (e.g. an ID-only model in a text vs text+image suite) runs the same specs in each."""
    groups: dict[tuple, list] = {}
    for key, runs in runs_of.items():
        groups.setdefault(tuple(runs), []).append(key)
    return {keys[0]: keys for keys in groups.values()}


def _distinct_runs(rows: list[Row], run_keys: dict[int, list[str]], records: dict[str, dict],
                   reference: tuple[str, str] | None = None) -> list[Row]:
    """Rows with identical runs shown once, under the label their runs give themselves (e.g.
    "SASRec (CE) [target only]"), else the plain model label. A group holding the reference
    arm keeps that arm, so the other rows are still tested against it."""
    out = []
    for first, group in identical_runs({i: (r.dataset, *run_keys[id(r)]) for i, r in enumerate(rows)}).items():
        row = next((rows[i] for i in group if rows[i].arm == reference), rows[first])
        if len(group) > 1:
            labels = {records[h]["label"] for h in row.seeds.values() if h in records}
            row.label = labels.pop() if len(labels) == 1 else get_model_class(row.arm[1]).label or row.arm[1]
        out.append(row)
    return out


def final_stage(model: str, history: dict) -> str:
    """The last stage the model ran (records sort their keys, so 'finetune' precedes 'pretrain')."""
    order = get_model_class(model).stages
    return max(history, key=lambda st: order.index(st) if st in order else -1)


def run_cost(records: list[dict]) -> dict[str, Any]:
    """Trainable parameters, mean best epoch and epoch cap (final stage), mean s/epoch of each stage."""
    if not records:
        return {}
    stages = [k for k, v in records[0].get("timings", {}).items() if isinstance(v, dict) and "s_per_epoch" in v]
    best = [r["best_epoch"] for r in records if r.get("best_epoch") is not None]
    caps = {r["spec"]["trainer"].get(final_stage(r["spec"]["model"], r["history"]), {}).get("epochs")
            for r in records if r.get("history")}
    return {
        "parameters": records[0].get("parameters"),
        "best_epoch": float(np.mean(best)) + 1 if best else None,  # 1-based, as epochs are counted
        "epoch_cap": "/".join(str(c) for c in sorted(caps - {None})) or None,
        "s_per_epoch": {st: float(np.mean([r["timings"][st]["s_per_epoch"] for r in records])) for st in stages},
        "machine": ", ".join(sorted({machine_label(r) for r in records})),
    }


def machine_label(record: dict) -> str:
    """Where a run trained: the GPU's name, or the CPU and its torch threads (s/epoch depends on it)."""
    hw = record.get("provenance", {}).get("hardware", {})
    devices = {stage.get("device", "auto") for stage in record.get("spec", {}).get("trainer", {}).values()}
    if hw.get("gpu") and devices != {"cpu"}:
        return hw["gpu"]
    threads = hw.get("torch_threads")
    return f"CPU, {threads} thread{'s' if threads != 1 else ''}" if threads else "CPU"


def render_costs(table: SuiteTable) -> str:
    """Markdown: what each row cost (the machine is in the records' provenance)."""
    several = len({r.dataset for r in table.rows}) > 1
    lines = ["| " + ("Dataset | " if several else "") + "Model | parameters | best epoch | epoch cap | s/epoch | "
             "machine |", "|" + ("---|" if several else "") + "---|---|---|---|---|---|"]
    for r in table.rows:
        c = r.cost
        if not c:
            continue
        per_stage = ", ".join(f"{st} {v:.1f}" for st, v in c["s_per_epoch"].items()) or "—"
        best = f"{c['best_epoch']:.1f}" if c["best_epoch"] is not None else "—"
        params = f"{c['parameters']:,}" if c.get("parameters") is not None else "—"
        lines.append("| " + (f"{r.dataset} | " if several else "") + f"{row_label(r)} | {params} | {best} | "
                     f"{c.get('epoch_cap') or '—'} | {per_stage} | {c.get('machine') or '—'} |")
    return "\n".join(lines) + "\n"


def _rank_marks(rows: list[Row], metric: str) -> None:
    """Best (bold) and second best (underlined) by the mean as displayed (4 decimals)."""
    shown = {id(r): round(r.means[metric], 4) for r in rows if metric in r.means}
    distinct = sorted(set(shown.values()), reverse=True)
    for r in rows:
        if id(r) not in shown:
            continue
        if shown[id(r)] == distinct[0]:
            r.marks[metric].add("best")
        elif len(distinct) > 1 and shown[id(r)] == distinct[1]:
            r.marks[metric].add("second")


def _significance(suite: Suite, rows: list[Row], values, records: dict[str, dict], split: str) -> list[dict]:
    ref_arm = suite.reference_arm()
    if ref_arm is None:
        return []
    sig = suite.significance

    def per_user(h: str, m: str):  # stored, or computed from the stored ranks
        return values.per_user(h, records[h], split, m)

    groups: dict[tuple, list[tuple[Row, stats.PairedComparison]]] = {}
    for ref in (r for r in rows if r.arm == ref_arm and r.n_done):
        for row in (r for r in rows if r.dataset == ref.dataset and r.arm != ref_arm and r.n_done):
            for m in (m for m in suite.metrics if m in ref.means and m in row.means):
                a = {s: per_user(h, m) for s, h in ref.seeds.items() if h is not None}
                b = {s: per_user(h, m) for s, h in row.seeds.items() if h is not None}
                if {len(v) for v in a.values()} != {len(v) for v in b.values()}:
                    # other test users (e.g. data.dedup removed some): no paired test is possible
                    row.untested = True
                    continue
                comp = stats.compare(a, b, metric=m, a=ref.label, b=row.label)
                family = (ref.dataset, m) if sig.family == "per_dataset_metric" else ("table",)
                groups.setdefault(family, []).append((row, comp))
    out = []
    for family, members in groups.items():
        stats.correct_family([c for _, c in members], sig.correction)
        for row, comp in members:
            p = comp.p_adjusted[sig.test]
            significant = not math.isnan(p) and p < sig.alpha
            if significant:
                row.marks[comp.metric].add("sig")
            out.append({"dataset": row.dataset, "variation": row.arm[0], "model": row.arm[1],
                        "family": list(family), "family_size": len(members), "significant": significant,
                        **comp.to_dict()})
    return out


# ---------------------------------------------------------------- rendering


def cell_text(row: Row, metric: str, fmt: str) -> str:
    if metric not in row.means:
        return "—" if fmt != "latex" else "--"
    pm = " $\\pm$ " if fmt == "latex" else " ± "
    spread = row.n_done > 1 and row.distinct != 1
    text = f"{row.means[metric]:.4f}" + (f"{pm}{row.stds[metric]:.4f}" if spread else "")
    marks = row.marks.get(metric, set())
    if fmt == "md":
        text = f"**{text}**" if "best" in marks else f"<u>{text}</u>" if "second" in marks else text
        text += SIG_MARK if "sig" in marks else ""
    elif fmt == "latex":
        text = f"\\textbf{{{text}}}" if "best" in marks else f"\\underline{{{text}}}" if "second" in marks else text
        text += "$^{\\dagger}$" if "sig" in marks else ""
    if row.n_done < len(row.seeds):
        text += f" ({row.n_done}/{len(row.seeds)})"
    return text


def row_label(row: Row) -> str:
    """The model label with what its numbers need said: cap flags, one run, same results."""
    label = row.label
    if row.capped:
        label += f" {CAP_MARK}{row.capped}/{row.n_done}"
    if row.n_done > 1 and row.distinct == 1:
        label += " (1 run)"
    if row.same_as:
        label += f" (= {row.same_as})"
    return label


def render(table: SuiteTable, fmt: str) -> str:
    if fmt == "csv":
        return _render_csv(table)
    if fmt not in ("md", "latex"):
        from bench.errors import BenchError

        raise BenchError(f"unknown format {fmt!r}; valid: md, latex, csv")
    several = len({r.dataset for r in table.rows}) > 1
    header = (["Dataset"] if several else []) + ["Model"] + table.metrics
    body = [([r.dataset] if several else []) + [row_label(r)] + [cell_text(r, m, fmt) for m in table.metrics]
            for r in table.rows]
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + f"\n\n{table.caption}\n\nCost (mean over seeds; best epoch of the final stage, " \
            f"1-based):\n\n{render_costs(table)}"
    esc = _latex_escape
    cap = esc(table.caption).replace(SIG_MARK, "$^{\\dagger}$")
    lines = [
        "\\begin{table}[t]", "\\centering",
        "\\caption{" + cap + "}",
        "\\begin{tabular}{" + "l" * (len(header) - len(table.metrics)) + "c" * len(table.metrics) + "}",
        "\\toprule", " & ".join(esc(h) for h in header) + " \\\\", "\\midrule",
    ]
    lines += [" & ".join([*(esc(x) for x in row[: len(header) - len(table.metrics)]),
                          *row[len(header) - len(table.metrics):]]) + " \\\\" for row in body]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"),
                 ("±", "$\\pm$"), ("α", "$\\alpha$")):
        text = text.replace(a, b)
    return text


def _render_csv(table: SuiteTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "variation", "model", "label", "metric", "mean", "std", "seeds_done", "seeds",
                "best", "second", "significant", "p_adjusted", "capped_seeds", "distinct_runs", "same_as",
                "run_hashes"])
    p_adj = {(c["dataset"], c["variation"], c["model"], c["metric"]):
             c["p_adjusted"][table.suite.significance.test] for c in table.comparisons}
    for r in table.rows:
        for m in table.metrics:
            marks = r.marks.get(m, set())
            w.writerow([r.dataset, r.arm[0], r.arm[1], r.label, m,
                        _num(r.means.get(m)), _num(r.stds.get(m)), r.n_done, len(r.seeds),
                        int("best" in marks), int("second" in marks), int("sig" in marks),
                        _num(p_adj.get((r.dataset, *r.arm, m))), r.capped, r.distinct, r.same_as or "",
                        " ".join(h for h in r.seeds.values() if h)])
    return f"# {table.caption}\n" + buf.getvalue()


def _num(x: Any) -> str:
    return "" if x is None else f"{x:.6g}"


def provenance_header(fmt: str, command: str, suite_runs: list[str] | None = None) -> str:
    """Command, git revision, date and hardware (and the suite runs behind the records), as
    comments of the output format."""
    from bench.engine.provenance import git_revision, hardware

    hw = hardware()
    lines = [
        f"command: {command}",
        f"git revision: {git_revision()}",
        f"date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"hardware: {hw['cpu']} ({hw['cpu_count']} cores){', ' + hw['gpu'] if 'gpu' in hw else ''}",
        *(f"suite run: {r}" for r in suite_runs or []),
    ]
    if fmt == "md":
        return "<!--\n" + "\n".join(lines) + "\n-->\n"
    prefix = "% " if fmt == "latex" else "# "
    return "".join(prefix + line + "\n" for line in lines)
