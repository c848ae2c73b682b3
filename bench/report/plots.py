"""Figures of a suite (PNG and PDF): per-epoch validation curves, per-stage curves, sensitivity
curves with seed bands, and each row's difference from the reference with its bootstrap CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.experiment.suites import Suite, budget_label
from bench.plugins import get_model_class
from bench.report.tables import final_stage, identical_runs


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path_stem: Path) -> list[Path]:
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        p = path_stem.with_suffix(f".{ext}")
        fig.savefig(p, dpi=150, bbox_inches="tight")
        out.append(p)
    return out


def _complete_records(suite: Suite, store, budget: str):
    from bench.report.tables import suite_records

    for cell, key, record in suite_records(suite, store, budget):
        if record is not None:
            yield cell, key, record


LINESTYLES = ("-", "--", ":", "-.")


def arm_style(suite: Suite, arm: tuple[str, str]) -> dict:
    """Colour per model and line style per variation (colour per variation in a one-model suite),
    so no two arms of a 12-arm figure share a look (the default cycle has 10 colours)."""
    variation, model = arm
    v = list(suite.all_variations()).index(variation)
    if len(suite.models) == 1:
        return {"color": f"C{v % 10}", "linestyle": LINESTYLES[v // 10 % len(LINESTYLES)]}
    return {"color": f"C{suite.models.index(model) % 10}", "linestyle": LINESTYLES[v % len(LINESTYLES)]}


def shared_arms(suite: Suite, runs_of: dict[tuple, set[str]]) -> dict[tuple, str]:
    """Arm -> legend label, one arm per set of identical runs (e.g. an ID-only model that every
    variation of a content suite shares): that arm is drawn once, named with all its variations."""
    labels = {}
    for arm, arms in identical_runs({arm: tuple(sorted(h)) for arm, h in runs_of.items()}).items():
        label = suite.arm_label(arm)
        if len(arms) > 1:
            label = f"{label.rsplit(' [', 1)[0]} [{', '.join(a[0] for a in arms)}]"
        labels[arm] = label
    return labels


def validation_curves(suite: Suite, store, budget: str, out_dir: Path) -> list[Path]:
    """One figure per dataset: mean (over seeds) validation metric per epoch of the final stage."""
    plt = _plt()
    curves: dict[str, dict[tuple, list[list[float]]]] = {}
    runs_of: dict[str, dict[tuple, set[str]]] = {}
    metric_name = {}
    for cell, key, record in _complete_records(suite, store, budget):
        history = record.get("history") or {}
        if not history:
            continue  # untrainable models have no epochs
        stage = final_stage(cell.model, history)
        if stage != get_model_class(cell.model).stages[-1]:
            continue  # zero-shot: nothing trained on this dataset (its pre-training is in the stage figure)
        metric = record["spec"]["trainer"][stage]["valid_metric"]
        metric_name[cell.dataset] = metric
        curves.setdefault(cell.dataset, {}).setdefault(cell.arm, []).append([h[metric] for h in history[stage]])
        runs_of.setdefault(cell.dataset, {}).setdefault(cell.arm, set()).add(key)
    written = []
    for dataset, arms in curves.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm, label in shared_arms(suite, runs_of[dataset]).items():
            runs = arms[arm]
            n = max(len(r) for r in runs)
            padded = np.full((len(runs), n), np.nan)
            for i, r in enumerate(runs):
                padded[i, : len(r)] = r
            ax.plot(np.arange(n), np.nanmean(padded, axis=0), marker="o", ms=3, label=label,
                    **arm_style(suite, arm))
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (final stage)")
        ax.set_ylabel(f"validation {metric_name[dataset]} (mean over seeds)")
        ax.set_title(f"{suite.title}: {dataset} ({budget_label(budget)})", fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), handlelength=3.5)
        written += _save(fig, out_dir / f"{suite.name}-{budget}-curves-{dataset}")
        plt.close(fig)
    return written


def stage_curves(suite: Suite, store, budget: str, out_dir: Path) -> list[Path]:
    """One figure per dataset for the multi-stage arms: training loss and validation metric per
    epoch of every stage (pre-training is shared by the seeds; fine-tuning is the seeds' mean)."""
    plt = _plt()
    curves: dict[str, dict[tuple, dict[str, list[list[dict]]]]] = {}
    for cell, _, record in _complete_records(suite, store, budget):
        history = record.get("history") or {}
        if len(history) < 2:
            continue
        per_stage = curves.setdefault(cell.dataset, {}).setdefault(cell.arm, {})
        for stage, epochs in history.items():
            per_stage.setdefault(stage, []).append(epochs)
    written = []
    for dataset, arms in curves.items():
        # records keep stages in key order; pre-training comes first on the page
        stages = sorted(dict.fromkeys(st for arm in arms.values() for st in arm), key=lambda st: st != "pretrain")
        fig, axes = plt.subplots(2, len(stages), figsize=(5 * len(stages), 6), squeeze=False)
        for col, stage in enumerate(stages):
            for arm, per_stage in arms.items():
                runs = per_stage.get(stage)
                if not runs:
                    continue
                metric = next(k for k in runs[0][0] if "@" in k)
                for row, key in enumerate(("loss", metric)):
                    n = max(len(r) for r in runs)
                    padded = np.full((len(runs), n), np.nan)
                    for i, r in enumerate(runs):
                        padded[i, : len(r)] = [h[key] for h in r]
                    axes[row, col].plot(np.arange(n), np.nanmean(padded, axis=0), marker="o", ms=2,
                                        label=suite.arm_label(arm), **arm_style(suite, arm))
                    axes[row, col].set_ylabel(f"{stage}: {'training loss' if key == 'loss' else 'validation ' + key}")
            axes[1, col].set_xlabel(f"{stage} epoch")
        axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.suptitle(f"{suite.title}: {dataset} ({budget_label(budget)})", fontsize=9)
        written += _save(fig, out_dir / f"{suite.name}-{budget}-stages-{dataset}")
        plt.close(fig)
    return written


def sensitivity_curves(suite: Suite, store, budget: str, out_dir: Path, split: str = "test") -> list[Path]:
    """One figure per (sweep key, dataset): each metric's mean +- std over seeds vs the value."""
    plt = _plt()
    sweep_of = suite.sweep_variations()
    if not sweep_of:
        return []
    values: dict[tuple[str, str], dict[object, dict[str, list[float]]]] = {}
    for cell, _, record in _complete_records(suite, store, budget):
        if cell.variation not in sweep_of:
            continue
        key, value = sweep_of[cell.variation]
        per_value = values.setdefault((key, cell.dataset), {}).setdefault(value, {})
        for m in suite.metrics:
            per_value.setdefault(m, []).append(record["metrics"][split][m])
    written = []
    for (key, dataset), per_value in values.items():
        xs = [v for v in suite.sweeps[key] if v in per_value]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
        pos = xs if numeric else list(range(len(xs)))
        fig, ax = plt.subplots(figsize=(6, 4))
        n_seeds = 0
        for m in suite.metrics:
            means = np.array([np.mean(per_value[v][m]) for v in xs])
            stds = np.array([np.std(per_value[v][m], ddof=1) if len(per_value[v][m]) > 1 else 0.0 for v in xs])
            n_seeds = max(n_seeds, *(len(per_value[v][m]) for v in xs))
            line, = ax.plot(pos, means, marker="o", ms=4, label=m)
            ax.fill_between(pos, means - stds, means + stds, color=line.get_color(), alpha=0.2, linewidth=0)
        scale = axis_scale(xs) if numeric else "linear"
        if scale == "symlog":  # a log grid with a 0 (e.g. a loss weight switched off)
            ax.set_xscale("symlog", linthresh=min(v for v in xs if v > 0))
        elif scale == "log":
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(pos, [str(v) for v in xs])
        ax.set_xlabel(key)
        ax.set_ylabel(f"{split} metric (mean, band: ± std over {n_seeds} seed{'s' * (n_seeds != 1)})")
        ax.set_title(f"{suite.title}: {key} on {dataset} ({budget_label(budget)})", fontsize=9)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), handlelength=3.5)
        written += _save(fig, out_dir / f"{suite.name}-{budget}-sensitivity-{key.replace('.', '_')}-{dataset}")
        plt.close(fig)
    return written


def axis_scale(values) -> str:
    """'log' when the swept values sit on a log grid (their log-steps clearly more even than their
    steps: relative spread under half), 'symlog' for such a grid that also holds 0, else 'linear'."""
    pos = sorted(v for v in values if v > 0)
    if len(pos) < 3 or min(values) < 0:
        return "linear"
    steps, log_steps = np.diff(pos), np.diff(np.log(pos))
    if np.std(log_steps) / np.mean(log_steps) >= np.std(steps) / np.mean(steps) / 2:
        return "linear"
    return "symlog" if 0 in values else "log"


def difference_points(comparisons: list[dict]) -> dict[str, tuple[str, list[dict]]]:
    """dataset -> (reference label, [{row, metric, diff, low, high, significant}]) with diff = row
    minus reference (a table's comparisons hold reference minus row)."""
    out: dict[str, tuple[str, list[dict]]] = {}
    for c in comparisons:
        out.setdefault(c["dataset"], (c["a"], []))[1].append(
            {"row": c["b"], "metric": c["metric"], "diff": -c["diff"], "low": -c["ci_high"], "high": -c["ci_low"],
             "significant": c["significant"]})
    return out


def differences(suite: Suite, store, budget: str, out_dir: Path, split: str = "test") -> list[Path]:
    """One figure per dataset, a panel per metric: each row's difference from the suite's reference
    with its 95% paired-bootstrap CI over users (seed-averaged per user); a filled dot is
    significant after the suite's correction, a hollow one is not."""
    from bench.report.tables import build_table

    points = difference_points(build_table(suite, store, budget, split).comparisons)
    plt = _plt()
    written = []
    for dataset, (reference, dots) in points.items():
        metrics = [m for m in suite.metrics if any(d["metric"] == m for d in dots)]
        labels = list(dict.fromkeys(d["row"] for d in dots))
        ncols = min(3, len(metrics))
        nrows = -(-len(metrics) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 1.5, nrows * (0.35 * len(labels) + 1.2)),
                                 sharey=True, squeeze=False)
        for ax in axes.flat[len(metrics):]:
            ax.set_visible(False)
        for ax, m in zip(axes.flat, metrics):
            for d in (d for d in dots if d["metric"] == m):
                ax.errorbar(d["diff"], labels.index(d["row"]), xerr=[[d["diff"] - d["low"]], [d["high"] - d["diff"]]],
                            fmt="o", ms=5, capsize=3, color="C0",
                            markerfacecolor="C0" if d["significant"] else "white")
            ax.axvline(0, color="grey", linewidth=0.8)
            ax.xaxis.set_major_locator(plt.MaxNLocator(4))
            ax.set_xlabel(f"{m}: row - {reference}", fontsize=8)
        for row in axes:
            row[0].set_yticks(range(len(labels)), labels, fontsize=8)
        axes[0][0].invert_yaxis()  # shared: the suite's first row on top
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        sig = suite.significance
        fig.suptitle(f"{suite.title} on {dataset} ({budget_label(budget)}): difference from {reference}, 95% "
                     f"paired-bootstrap CI; filled: {sig.test} significant ({sig.correction}, alpha {sig.alpha})",
                     fontsize=8)
        written += _save(fig, out_dir / f"{suite.name}-{budget}-differences-{dataset}")
        plt.close(fig)
    return written
