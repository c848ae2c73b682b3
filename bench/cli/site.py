"""`bench report` (a static site of the store's results) and `bench runs ls|show` (records from the terminal)."""

from __future__ import annotations

from pathlib import Path

import typer

from bench.cli.console import split_names
from bench.errors import BenchError
from bench.paths import bench_home

Home = typer.Option(None, "--home", help="Results store and tuning studies (else $BENCH_HOME, else ./.bench).")
StoreOpt = typer.Option(None, "--store", help="A store folder holding runs/ (e.g. committed records) instead of "
                        "<home>/store.")
runs_app = typer.Typer(no_args_is_help=True, help="Find and inspect run records in the store.")


def _console():
    from bench.cli.console import console

    return console


def report(
    suites: list[str] = typer.Argument(None, help="Suites to report (default: every suite with records)."),
    budget: list[str] = typer.Option(None, "--budget", help="quick, cpu or full; repeat or comma-separate "
                                     "(default: every budget with records)."),
    out: Path = typer.Option(None, "--out", help="Folder for the site (default <home>/site; open OUT/index.html)."),
    by: str = typer.Option(None, "--by", help="Also draw strata (popularity,length); needs the datasets."),
    data_root_: Path = typer.Option(None, "--data-root", help="Datasets, only for --by (else $BENCH_DATA_ROOT, "
                                    "else ../shared/data)."),
    storage: str = typer.Option(None, "--storage", help="Optuna storage of `bench tune` studies "
                                "(default: <home>/tuning/optuna.journal)."),
    all_runs: bool = typer.Option(None, "--all-runs/--suite-runs", help="A page per record in the store, or only "
                                  "per cell of the reported suites (default: all without SUITE arguments)."),
    home: Path = Home,
    store: Path = StoreOpt,
) -> None:
    """Write a static, browsable site (no server, no network) from the store's records."""
    from bench.paths import data_root
    from bench.report.site.build import build_site
    from bench.report.strata import parse_by

    dims = parse_by(by) if by else None
    out = out or bench_home(home) / "site"
    result = build_site(out, bench_home(home), split_names(",".join(suites or [])) or None, split_names(",".join(budget or [])) or None, dims,
                        data_root(data_root_) if dims else None, storage, all_runs, store)
    _console().print(
        f"site written to {out}/index.html: {len(result.suite_pages)} suite page(s), {result.run_pages} run page(s), "
        f"{result.tuning_pages} tuning page(s), {result.bytes / 2**20:.1f} MiB in {result.seconds:.1f}s")


@runs_app.command("ls")
def runs_ls(
    suite: str = typer.Option(None, "--suite", help="Only the cells of this suite (every budget unless --budget)."),
    budget: str = typer.Option(None, "--budget", help="With --suite: quick, cpu or full."),
    model: str = typer.Option(None, "--model", help="Only this model (name as in --models)."),
    dataset: str = typer.Option(None, "--dataset"),
    home: Path = Home,
    store_path: Path = StoreOpt,
) -> None:
    """Complete records: hash, model, dataset, seed, test metrics, best epoch, epoch-cap flag."""
    import pandas as pd

    from bench.report.console import rich_table
    from bench.report.site.records import RecordsEnv, open_store, run_row

    store = open_store(bench_home(home), store_path)
    env = RecordsEnv(store)
    where: dict[str, str] = {}
    if suite:
        from bench.engine.spec import spec_key
        from bench.experiment.suites import BUDGETS, cells, load_suite
        from bench.report.tables import records_by_spec

        s = load_suite(suite)
        if budget and budget not in BUDGETS:
            raise BenchError(f"--budget {budget!r}: valid: {', '.join(BUDGETS)}")
        by_spec = records_by_spec(store)  # as `bench table` finds a cell's runs: by its spec
        for b in [budget] if budget else BUDGETS:
            for c in cells(s, b):
                for key, _ in by_spec.get(spec_key(c.spec(s.protocol)), []):
                    where.setdefault(key, f"{b} {c.variation}")
    elif budget:
        raise BenchError("--budget needs --suite")
    rows = []
    for h, record in env.records.items():
        if (suite and h not in where) or (model and record["spec"]["model"] != model) or \
                (dataset and record["spec"]["dataset"] != dataset):
            continue
        row = run_row(h, record)
        if suite:
            row["cell"] = where[h]
        row["capped"] = "cap" if row["capped"] else ""
        row["finished"] = row["finished"][5:16].replace("T", " ")  # MM-DD HH:MM (UTC)
        rows.append(row)
    if not rows:
        raise BenchError(f"no complete run matches in {store.root}")
    df = pd.DataFrame(rows).sort_values(["dataset", "protocol", "model", "seed"], kind="stable").drop(columns=["model"])
    for m in ("Recall@20", "NDCG@10"):
        df[m] = df[m].map(lambda x: "—" if pd.isna(x) else f"{x:.4f}")
    df["best_epoch"] = df["best_epoch"].map(lambda x: "—" if pd.isna(x) else str(int(x)))
    df = df.fillna("—").rename(columns={"capped": "stopped by"})
    if df["protocol"].nunique() == 1:  # room for the full hashes: the column a reader copies
        df = df.drop(columns="protocol")
    table = rich_table(df, f"{len(df)} run(s) in {store.root}" + (f" ({rows[0]['protocol']})" if "protocol" not in df else ""))
    table.columns[0].no_wrap = True
    table.columns[0].min_width = len(rows[0]["hash"])
    _console().print(table)


@runs_app.command("show")
def runs_show(
    run: str = typer.Argument(..., help="Run hash (a unique prefix is enough)."),
    spec: bool = typer.Option(True, "--spec/--no-spec", help="Print the resolved spec as YAML."),
    home: Path = Home,
    store_path: Path = StoreOpt,
) -> None:
    """One record: summary, metrics per split, timings, provenance and the resolved spec."""
    import yaml
    from rich.syntax import Syntax
    from rich.table import Table

    from bench.report.site.records import find_run, open_store, stop_info

    console = _console()
    store = open_store(bench_home(home), store_path)
    key, record = find_run(store, run)
    s = record["spec"]
    info = stop_info(record)
    prov = record.get("provenance", {})
    summary = Table(title=f"run {key}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    items = [
        ("label", record.get("label", s["model"])), ("dataset", f"{s['dataset']} ({record['dataset'].get('content_hash')})"),
        ("protocol", s["protocol"]), ("seed", s["seed"]), ("parameters", f"{record.get('parameters') or 0:,}"),
        ("best epoch", "—" if info is None else f"{info.best_epoch + 1} of {info.epochs_run} ({info.stage}; "
         f"cap {info.epochs_cap}, patience {info.patience})"),
        ("stopped by", "—" if info is None else "epoch cap" if info.capped else "early stopping"
         if info.epochs_run < info.epochs_cap else "epoch cap = early stopping"),
        ("total s", f"{record.get('timings', {}).get('total_s', 0):.1f}"),
        ("revision", prov.get("git_revision")), ("finished", prov.get("finished_at")), ("command", prov.get("command")),
        ("hardware", ", ".join(f"{k} {v}" for k, v in prov.get("hardware", {}).items())),
    ]
    for k, v in items:
        summary.add_row(k, str(v))
    console.print(summary)
    metrics = record.get("metrics", {})
    table = Table(title="metrics")
    table.add_column("metric")
    for part in metrics:
        table.add_column(part, justify="right")
    from bench.report.site.build import metric_order

    for m in sorted({m for part in metrics.values() for m in part}, key=metric_order):
        table.add_row(m, *(f"{metrics[p][m]:.4f}" if m in metrics[p] else "—" for p in metrics))
    console.print(table)
    if spec:
        console.print(Syntax(yaml.safe_dump(s, sort_keys=False, width=100), "yaml", theme="ansi_dark"))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.add_typer(runs_app, name="runs")
