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
    by: str = typer.Option(None, "--by", help="Also print test metrics by target popularity / history length: "
                           "popularity,length."),
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
    from bench.stratify import extra_parts, parse_by, part_title, stratified_tables

    by_dims = parse_by(by) if by else []
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
    kind = records[0]["protocol"].get("kind")
    name = f"{protocol} ({kind})" if kind else protocol
    dataset = ",".join(dict.fromkeys(r["dataset"]["name"] for r in records))
    console.print(rich_table(df, f"{dataset} / {name}: test metrics (full ranking, {ties} ties)"))
    for part in extra_parts(records):  # e.g. test:all (long_tail), test:full_history (user), test_sampled
        if part.startswith("test"):
            extra_df = summary(records, split=part).drop(columns="protocol")
            extra_df = extra_df.drop(columns="dataset") if "dataset" not in df else extra_df
            console.print(rich_table(extra_df, f"{dataset} / {name}: {part_title(part, records)}"))
    for title, table in stratified_tables(records, env, by_dims) if by_dims else []:
        console.print(rich_table(table, title))
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


@data_app.command("list")
def data_list(data_root_: Path = DataRoot, home: Path = Home) -> None:
    """Registered datasets (built-in and user-added) with their counts."""
    from bench.data.cli_commands import list_datasets
    from bench.paths import cache_dir
    from bench.tables import rich_table

    rows = list_datasets(data_root(data_root_), cache_dir(bench_home(home)))
    import pandas as pd

    console.print(rich_table(pd.DataFrame(rows).fillna(""), "datasets"))


@data_app.command("keywords")
def data_keywords(
    name: str,
    show: int = typer.Option(5, "--show", help="Number of items to print."),
    tagger: str = typer.Option("clip_features", help="Image tagger."),
    n_keywords: int = typer.Option(15, "--n", help="Keywords per image."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Print items with their title and image keywords, to judge a tagger by eye."""
    from bench.data.cli_commands import show_keywords
    from bench.paths import cache_dir

    for row in show_keywords(name, show, data_root(data_root_), cache_dir(bench_home(home)), tagger, n_keywords):
        console.print(f"[bold]{row['item']}[/] {row['external_id']}  {row['title'][:100]}")
        for kws in row["keywords"]:
            console.print(f"    keywords: {kws}")


@data_app.command("add")
def data_add(
    name: str,
    raw_dir: Path = typer.Option(..., "--raw-dir", help="Folder with the raw Amazon review and meta files."),
    category: str = typer.Option(..., "--category", help="Category as in the file names, e.g. Office_Products."),
    k_core: int = typer.Option(5, "--k-core"),
    image_dir: Path = typer.Option(None, "--image-dir", help="Optional folder of <asin>.jpg images."),
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="Skip malformed lines (counted)."),
    home: Path = Home,
) -> None:
    """Build a dataset from raw Amazon 2014/2018 files and register it under NAME."""
    from bench.data.stats import dataset_stats
    from bench.data.user_datasets import add_raw_dataset
    from bench.progress import Reporter

    with Reporter() as reporter:
        ds = add_raw_dataset(name, raw_dir, category, bench_home(home), k_core, image_dir, skip_bad_lines,
                             reporter)
    console.print(f"added dataset {name!r}: {dataset_stats(ds)}")


export_app = typer.Typer(no_args_is_help=True, help="Export data for other tools.")
app.add_typer(export_app, name="export")


@export_app.command("mp4sr")
def export_mp4sr_cmd(
    dataset: str = typer.Option(..., "--dataset"),
    out: Path = typer.Option(..., "--out", help="Folder to write <dataset>.inter, desc_emb.pkl, image_emb_N.pkl."),
    n_keywords: int = typer.Option(15, "--n"),
    tagger: str = typer.Option("clip_features"),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Write a dataset and its features in the format the MSM4SR authors' code (MP4SR) reads."""
    from bench.features.store import load_item_features
    from bench.paths import cache_dir
    from msm4sr.export import export_mp4sr

    root, cache = data_root(data_root_), cache_dir(bench_home(home))
    from bench.data.catalog import load_dataset

    ds = load_dataset(dataset, root, cache)
    feats = load_item_features(ds, root, cache, tagger=tagger, n_keywords=n_keywords)
    for kind, path in export_mp4sr(ds, feats, out, n_keywords).items():
        console.print(f"{kind}: {path}")


@app.command()
def perf(
    recbole_python: str = typer.Option(None, "--recbole-python", help="python of a venv with recbole==1.2.1."),
    dataset: str = typer.Option("scientific", "--dataset"),
    epochs: int = typer.Option(2, help="Epochs timed per system (each followed by a validation pass)."),
    threads: int = typer.Option(2, help="torch threads for every process."),
    recbole_batch: int = typer.Option(2048, "--recbole-batch", help="RecBole train_batch_size (prefix rows)."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """SASRec s/epoch, full-evaluation s and peak memory: ours (packed and prefix rows) vs RecBole."""
    import pandas as pd

    from bench.perf import median, run_ours_subprocess, run_recbole_subprocess
    from bench.tables import rich_table

    root, bhome = data_root(data_root_), bench_home(home)
    base = {"dataset": dataset, "data_root": str(root), "home": str(bhome), "epochs": epochs}
    # packed rows carry ~4 targets each on Scientific: 512 rows ~ the targets of 2048 prefix rows
    systems = {
        "ours (packed rows)": run_ours_subprocess({**base, "mode": "packed", "batch_size": max(recbole_batch // 4, 1)}, threads),
        "ours (prefix rows)": run_ours_subprocess({**base, "mode": "prefix", "batch_size": recbole_batch}, threads),
    }
    if recbole_python:
        import tempfile

        from bench.recbole_export import export

        with tempfile.TemporaryDirectory() as tmp:
            export(dataset, str(root), str(bhome), tmp)
            systems["RecBole 1.2.1"] = run_recbole_subprocess(recbole_python, Path(tmp) / dataset, recbole_batch, epochs, threads)
    rows = []
    for name, r in systems.items():
        rows.append({"system": name, "s/epoch (median)": median(r["train_epoch_s"]),
                     "valid eval s (median)": median(r["valid_eval_s"]), "peak RSS MiB": r["peak_rss_mib"]})
    df = pd.DataFrame(rows)
    if recbole_python:
        ref = df.iloc[-1]
        for col in ("s/epoch (median)", "valid eval s (median)", "peak RSS MiB"):
            df[f"{col.split(' (')[0]} / RecBole"] = df[col] / ref[col]
    console.print(rich_table(df.round(3), f"SASRec (CE) on {dataset}, {epochs} epochs, {threads} threads"))


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


from bench.cli_experiments import register as _register_experiments  # noqa: E402

_register_experiments(app)


def main() -> None:
    try:
        app(standalone_mode=False)
    except BenchError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # usage errors: typer vendors its own click, so match by shape, not class
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        raise
