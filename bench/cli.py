"""The `bench` command."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from bench.errors import BenchError
from bench.paths import bench_home, data_root

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Benchmark harness for multimodal sequential recommendation.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: list, statistics.")
app.add_typer(data_app, name="data")
console = Console(width=None if sys.stdout.isatty() else 160)

DataRoot = typer.Option(None, "--data-root", help="Folder of raw datasets (else $BENCH_DATA_ROOT, else ../shared/data).")
Home = typer.Option(None, "--home", help="Caches and results store (else $BENCH_HOME, else ./.bench).")


def split_names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@app.command()
def run(
    protocol: str = typer.Option("leave_one_out", help="Protocol name."),
    dataset: str = typer.Option("scientific", help="Dataset name(s), comma-separated."),
    models: str = typer.Option("pop,sasrec", help="Model names, comma-separated."),
    seeds: int = typer.Option(1, help="Number of seeds (0..seeds-1, offset by --seed)."),
    seed: int = typer.Option(0, help="First seed."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. sasrec.dropout=0.5, trainer.lr=1e-3."),
    fmt: str = typer.Option(None, "--format", help="Also write the table as md, csv or latex to --out."),
    out: Path = typer.Option(None, help="File for --format."),
    force: bool = typer.Option(False, help="Re-run runs that are already complete."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Train and evaluate models under a protocol; print a results table."""
    from bench.progress import Reporter
    from bench.runner import RunEnv, execute
    from bench.spec import build_spec, parse_overrides
    from bench.store import RunBusy
    from bench.tables import render, rich_table, summary

    if fmt and not out:
        raise BenchError("--format needs --out FILE")
    overrides = parse_overrides(set_)
    with Reporter() as reporter:
        env = RunEnv(data_root(data_root_), bench_home(home), reporter)
        specs = [
            build_spec(ds, protocol, m, s, overrides)
            for ds in split_names(dataset) for m in split_names(models) for s in range(seed, seed + seeds)
        ]
        records, busy = [], []
        for spec in specs:
            try:
                key, record, ran = execute(spec, env, force=force)
            except RunBusy:
                reporter.info(f"{spec.model} seed {spec.seed}: running in another process; will wait for it")
                busy.append(spec)
                continue
            reporter.info(f"{'finished' if ran else 'already complete'}: {record['label']} seed {spec.seed} -> {key}")
            records.append(record)
        for spec in busy:  # other processes' runs: wait, then take their records
            key, record, ran = execute(spec, env, wait=True)
            reporter.info(f"{'finished' if ran else 'completed elsewhere'}: {record['label']} seed {spec.seed} -> {key}")
            records.append(record)
    if not records:
        raise BenchError("no run completed")
    df = summary(records).drop(columns="protocol")
    if df["dataset"].nunique() == 1:
        df = df.drop(columns="dataset")
    ties = records[0]["spec"]["evaluation"]["ties"]
    console.print(rich_table(df, f"{dataset} / {protocol}: test metrics (full ranking, {ties} ties)"))
    if fmt:
        out.write_text(render(df, fmt) + "\n")
        console.print(f"table written to {out}")


@data_app.command("stats")
def data_stats(name: str, data_root_: Path = DataRoot, home: Path = Home) -> None:
    """Users, items, interactions, sequence lengths and density of a dataset."""
    from bench.data.catalog import load_dataset
    from bench.data.stats import dataset_stats
    from bench.paths import cache_dir

    ds = load_dataset(name, data_root(data_root_), cache_dir(bench_home(home)))
    for key, value in dataset_stats(ds).items():
        console.print(f"{key:>16}: {value:,}" if isinstance(value, int) else f"{key:>16}: {value}")


check_app = typer.Typer(no_args_is_help=True, help="Checks of the harness itself.")
app.add_typer(check_app, name="check")


@check_app.command("determinism")
def check_determinism_cmd(
    model: str = typer.Option("sasrec", "--model"),
    dataset: str = typer.Option("scientific", "--dataset"),
    protocol: str = typer.Option("leave_one_out", "--protocol"),
    seed: int = typer.Option(0),
    set_: list[str] = typer.Option([], "--set"),
    data_root_: Path = DataRoot,
) -> None:
    """Run one spec twice from scratch and compare the hashes of its per-user metrics."""
    from bench.determinism import check_determinism
    from bench.progress import Reporter
    from bench.spec import build_spec, parse_overrides

    spec = build_spec(dataset, protocol, model, seed, parse_overrides(set_))
    with Reporter() as reporter:
        report = check_determinism(spec, data_root(data_root_), reporter)
    console.print(f"metric hashes: {report['metric_hashes'][0]}  {report['metric_hashes'][1]}")
    console.print("[green]deterministic[/]" if report["identical"] else "[red]NOT deterministic[/]")
    console.print(f"torch threads: {report['torch_threads']}; remaining sources of variation:")
    for source in report["remaining_sources"]:
        console.print(f"  - {source}")
    if not report["identical"]:
        raise typer.Exit(1)


def main() -> None:
    try:
        app(standalone_mode=False)
    except BenchError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise
