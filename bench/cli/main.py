"""The `bench` command."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from bench import defaults
from bench.cli.console import console, split_names
from bench.cli.experiments import AddressOpt, CpusOpt, ExecutorOpt, GpusOpt, ray_options
from bench.errors import BenchError
from bench.paths import bench_home, data_root

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Benchmark harness for multimodal sequential recommendation.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: list, stats, keywords, add, fetch.")
app.add_typer(data_app, name="data")

DataRoot = typer.Option(None, "--data-root", help="Folder of raw datasets (else $BENCH_DATA_ROOT, else ../shared/data).")
Home = typer.Option(None, "--home", help="Caches and results store (else $BENCH_HOME, else ./.bench).")


def check_table_output(fmt: str | None, out: Path | None, formats=("md", "csv", "latex")) -> None:
    """--format / --out refused up front: an unknown format, or a file in a missing folder."""
    if fmt is None and out is None:
        return
    if fmt is None or out is None:
        raise BenchError("--format and --out go together (e.g. --format md --out table.md)")
    if fmt not in formats:
        raise BenchError(f"--format {fmt!r}: valid: {', '.join(formats)}")
    if out.is_dir():
        raise BenchError(f"--out {out}: is a folder; give a file name")
    if not out.parent.is_dir():
        raise BenchError(f"--out {out}: folder {out.parent} does not exist")


@app.command()
def run(
    protocol: str = typer.Option(defaults.PROTOCOL, help="Protocol name."),
    dataset: str = typer.Option(defaults.DATASET, help="Dataset name(s), comma-separated."),
    models: str = typer.Option(defaults.MODELS, help="Model names, comma-separated."),
    seeds: int = typer.Option(1, min=1, help="Number of seeds (0..seeds-1, offset by --seed)."),
    seed: int = typer.Option(0, min=0, help="First seed."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. sasrec.dropout=0.5, trainer.lr=1e-3."),
    fmt: str = typer.Option(None, "--format", help="Also write the table as md, csv or latex to --out."),
    out: Path = typer.Option(None, help="File for --format."),
    force: bool = typer.Option(False, help="Re-run runs that are already complete."),
    by: str = typer.Option(None, "--by", help="Also print test metrics by target popularity / history length: "
                           "popularity,length."),
    metrics: str = typer.Option(None, "--metrics", help="Columns: e.g. MRR@5,Hit@5,Precision@5; a bare name (MRR) "
                                "means every cutoff (5,10,20,50); 'all' = every metric. Default: Recall and NDCG "
                                "at 10, 20, 50."),
    executor: str = ExecutorOpt,
    address: str = AddressOpt,
    jobs: int = typer.Option(1, min=1, help="Runs at once on a local Ray cluster (needs the ray extra)."),
    cpus_per_cell: float = CpusOpt,
    gpus_per_cell: float = GpusOpt,
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Train and evaluate models under a protocol; print a results table."""
    from bench.engine.metrics import select_metrics
    from bench.engine.runner import RunEnv
    from bench.engine.spec import build_spec, parse_overrides
    from bench.experiment.experiment import Experiment
    from bench.progress import Reporter
    from bench.report.console import render, rich_table, summary

    check_table_output(fmt, out)  # before any training, not after it
    from bench.report.strata import extra_parts, parse_by, part_title, stratified_tables

    by_dims = parse_by(by) if by else []
    columns = select_metrics(metrics)  # checked before anything runs
    overrides = parse_overrides(set_)
    ray_opts = ray_options(executor, jobs, address, cpus_per_cell, gpus_per_cell, 3)
    with Reporter() as reporter:
        env = RunEnv(data_root(data_root_), bench_home(home), reporter)
        specs = [
            build_spec(ds, protocol, m, s, overrides)
            for ds in split_names(dataset) for m in split_names(models) for s in range(seed, seed + seeds)
        ]
        # an ad-hoc suite of its cells, run here or one Ray task each (bench/experiment/experiment.py):
        # a run another process holds is waited for, the first failure ends the command
        records = Experiment.of_specs(specs).run(env, ray_opts, force=force, busy="wait",
                                                 fail_fast=True).ordered_records()
    if not records:
        raise BenchError("no run completed")
    df = summary(records, columns, store=env.store).drop(columns="protocol")  # metrics stored or from ranks
    if df["dataset"].nunique() == 1:
        df = df.drop(columns="dataset")
    ties = records[0]["spec"]["evaluation"]["ties"]
    kind = records[0]["protocol"].get("kind")
    name = f"{protocol} ({kind})" if kind else protocol
    dataset = ",".join(dict.fromkeys(r["dataset"]["name"] for r in records))
    console.print(rich_table(df, f"{dataset} / {name}: test metrics (full ranking, {ties} ties)"))
    for part in extra_parts(records):  # e.g. test:all (long_tail), test:full_history (user), test_sampled
        if part.startswith("test"):
            extra_df = summary(records, [c for c in columns if c in records[0]["metrics"][part]],
                               split=part).drop(columns="protocol")
            extra_df = extra_df.drop(columns="dataset") if "dataset" not in df else extra_df
            console.print(rich_table(extra_df, f"{dataset} / {name}: {part_title(part, records)}"))
    for title, table in stratified_tables(records, env, by_dims) if by_dims else []:
        console.print(rich_table(table, title))
    if fmt:
        out.write_text(render(df, fmt) + "\n")
        console.print(f"table written to {out}")


@data_app.command("stats")
def data_stats(
    name: str, data_root_: Path = DataRoot, home: Path = Home,
    coverage: bool = typer.Option(None, "--coverage/--no-coverage",
                                  help="Modality coverage from the item feature store; by default shown when "
                                       "the store is cached, --coverage builds it (minutes on first use)."),
) -> None:
    """Users, items, interactions, sequence lengths and density of a dataset; the same after the
    authors' deduplication (data.dedup=keep_last); text and image coverage of items and interactions."""
    from bench.data.catalog import load_dataset
    from bench.data.stats import dataset_stats, modality_coverage
    from bench.data.transforms import DataConfig, apply_data_options
    from bench.paths import cache_dir

    root, cache = data_root(data_root_), cache_dir(bench_home(home))
    ds = load_dataset(name, root, cache)
    for key, value in dataset_stats(ds).items():
        console.print(f"{key:>16}: {value:,}" if isinstance(value, int) else f"{key:>16}: {value}")
    dedup = apply_data_options(ds, DataConfig(dedup="keep_last"))
    console.print(f"{'data.dedup':>16}: keep_last -> {dedup.n_users:,} users, {dedup.n_interactions:,} interactions "
                  f"({dedup.meta['repeated_rows_removed']:,} repeated rows removed, users with < 5 dropped)")
    if coverage is not False:
        from bench.features.store import load_item_features

        feats = load_item_features(ds, root, cache, build=bool(coverage))
        if feats is None:
            console.print(f"{'coverage':>16}: feature store not built yet (`bench data stats {name} --coverage` "
                          "builds it: minutes on first use)")
            return
        cov = modality_coverage(ds, feats)
        for m in ("text", "image"):
            console.print(f"{m + ' coverage':>16}: {cov[m]['items']:,} of {cov['items']:,} items, "
                          f"{cov[m]['interaction_share']:.1%} of interactions")


@data_app.command("list")
def data_list(data_root_: Path = DataRoot, home: Path = Home) -> None:
    """Registered datasets (built-in and user-added) with their counts."""
    from bench.cli.data import list_datasets
    from bench.paths import cache_dir
    from bench.report.console import rich_table

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
    from bench.cli.data import show_keywords
    from bench.paths import cache_dir

    for row in show_keywords(name, show, data_root(data_root_), cache_dir(bench_home(home)), tagger, n_keywords):
        console.print(f"[bold]{row['item']}[/] {row['external_id']}  {row['title'][:100]}")
        for kws in row["keywords"]:
            console.print(f"    keywords: {kws}")


ADD_HELP = (  # one paragraph per format (rich re-wraps each)
    "Build a dataset from raw Amazon review files or a RecBole atomic folder and register it under NAME.\n\n"
    "Amazon Reviews 2023 (https://amazon-reviews-2023.github.io): <Category>.jsonl(.gz) reviews (user_id, "
    "parent_asin, timestamp) and meta_<Category>.jsonl(.gz) (title, features, description, categories, store).\n\n"
    "Amazon 2018 (https://nijianmo.github.io/amazon/): <Category>_5.json.gz or ratings-only <Category>.csv, "
    "with meta_<Category>.json.gz.\n\n"
    "Amazon 2014 (https://jmcauley.ucsd.edu/data/amazon/): reviews_<Category>_5.json.gz or "
    "ratings_<Category>.csv, with meta_<Category>.json.gz. For all three: --raw-dir DIR --category NAME.\n\n"
    "RecBole atomic (https://recbole.io/atomic_files.html; e.g. the RecSysDatasets collection): --atomic DIR "
    "with DIR/<name>.inter (user_id:token, item_id:token, optional timestamp:float columns) and optionally "
    "DIR/<name>.item (item_id:token plus text fields such as title:token_seq)."
)


@data_app.command("add", help=ADD_HELP)
def data_add(
    name: str,
    raw_dir: Path = typer.Option(None, "--raw-dir", help="Folder with raw Amazon 2023/2018/2014 review and meta files."),
    category: str = typer.Option(None, "--category", help="Category as in the file names, e.g. Office_Products."),
    atomic: Path = typer.Option(None, "--atomic", help="Folder with a RecBole atomic <name>.inter (and .item)."),
    k_core: int = typer.Option(None, "--k-core", help="Keep users/items with >= k interactions (default: 5 for "
                               "Amazon files, 1 = as given for --atomic)."),
    text_fields: str = typer.Option(None, "--text-fields", help="--atomic: comma-separated .item fields used as "
                                    "item text (default: every token/token_seq field but ids)."),
    image_dir: Path = typer.Option(None, "--image-dir", help="Optional folder of <asin>.jpg images."),
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="Skip malformed lines (counted)."),
    home: Path = Home,
) -> None:
    from bench.data.stats import dataset_stats
    from bench.data.user_datasets import add_atomic_dataset, add_raw_dataset
    from bench.progress import Reporter

    if (atomic is None) == (raw_dir is None):
        raise BenchError("bench data add: give either --raw-dir DIR --category NAME (Amazon files) or --atomic DIR")
    if atomic is not None:
        ds = add_atomic_dataset(name, atomic, bench_home(home), k_core or 1,
                                split_names(text_fields) if text_fields else None)
    else:
        if not category:
            raise BenchError("--raw-dir needs --category (as in the file names, e.g. Office_Products)")
        with Reporter() as reporter:
            ds = add_raw_dataset(name, raw_dir, category, bench_home(home), 5 if k_core is None else k_core,
                                 image_dir, skip_bad_lines, reporter)
    console.print(f"added dataset {name!r}: {dataset_stats(ds)}")


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="scientific, scientific_mm, office, a data-root folder name, or all."),
    mirror: str = typer.Option(None, "--mirror", help="Instead of raw GitHub (else $BENCH_DATA_MIRROR): a base URL "
                               "serving <repo>/<commit>/<path><file>, or a local folder laid out like a data root."),
    force: bool = typer.Option(False, "--force", help="Replace files whose sha256 differs from the source's."),
    data_root_: Path = DataRoot,
) -> None:
    """Download a built-in dataset's files (pinned public commits), verify each sha256, write them into the data root."""
    from bench.data.fetch import fetch
    from bench.progress import Reporter

    root = data_root(data_root_)
    with Reporter() as reporter:
        results = fetch(name, root, mirror, force, reporter)
    downloaded = sum(status == "downloaded" for _, status in results)
    console.print(f"{name}: {downloaded} file(s) downloaded, {len(results) - downloaded} already present, "
                  f"all sha256-verified, in {root}")


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
    from bench.data.export_mp4sr import export_mp4sr
    from bench.features.store import load_item_features
    from bench.paths import cache_dir

    root, cache = data_root(data_root_), cache_dir(bench_home(home))
    from bench.data.catalog import load_dataset

    ds = load_dataset(dataset, root, cache)
    feats = load_item_features(ds, root, cache, tagger=tagger, n_keywords=n_keywords)
    for kind, path in export_mp4sr(ds, feats, out, n_keywords).items():
        console.print(f"{kind}: {path}")


@export_app.command("recbole")
def export_recbole_cmd(
    dataset: str = typer.Option(defaults.DATASET, "--dataset"),
    out: Path = typer.Option(..., "--out", help="Folder; files go to OUT/<name>/<name>.{train,valid,test}.inter."),
    name: str = typer.Option(None, "--name", help="RecBole dataset name (default: the dataset's)."),
    max_len: int = typer.Option(50, "--max-len"),
    attributes: str = typer.Option(None, "--attributes", help="Also write <name>.item with our S3-Rec's item "
                                   "attributes from this source (text, text_image, popularity), for RecBole's S3Rec."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Write the leave-one-out split as RecBole 1.2.1 pre-split atomic files (same samples as ours)."""
    from bench.data.export_recbole import export

    if attributes not in (None, "text", "text_image", "popularity"):
        raise BenchError(f"--attributes {attributes!r}: expected text, text_image or popularity")
    info = export(dataset, str(data_root(data_root_)), str(bench_home(home)), str(out), max_len, name, attributes)
    folder = out / (name or dataset)
    console.print(f"wrote {folder} ({info['n_valid']} valid, {info['n_test']} test cases; see export_info.json)")


@app.command()
def perf(
    recbole_python: str = typer.Option(None, "--recbole-python", help="python of a venv with recbole==1.2.1."),
    dataset: str = typer.Option(defaults.DATASET, "--dataset"),
    epochs: int = typer.Option(2, help="Epochs timed per system (each followed by a validation pass)."),
    threads: int = typer.Option(2, help="torch threads for every process."),
    recbole_batch: int = typer.Option(2048, "--recbole-batch", help="RecBole train_batch_size (prefix rows)."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """SASRec s/epoch, full-evaluation s and peak memory: ours (packed and prefix rows) vs RecBole."""
    import pandas as pd

    from bench.data.catalog import check_dataset_name
    from bench.experiment.perf import (
        check_recbole_python,
        median,
        run_ours_subprocess,
        run_recbole_subprocess,
    )
    from bench.report.console import rich_table

    check_dataset_name(dataset)  # before any subprocess is started
    if recbole_python:  # before two minutes of timing, not after
        console.print(f"RecBole {check_recbole_python(recbole_python)} at {recbole_python}")

    root, bhome = data_root(data_root_), bench_home(home)
    base = {"dataset": dataset, "data_root": str(root), "home": str(bhome), "epochs": epochs}
    # packed rows carry ~4 targets each on Scientific: 512 rows ~ the targets of 2048 prefix rows
    systems = {
        "ours (packed rows)": run_ours_subprocess({**base, "mode": "packed", "batch_size": max(recbole_batch // 4, 1)}, threads),
        "ours (prefix rows)": run_ours_subprocess({**base, "mode": "prefix", "batch_size": recbole_batch}, threads),
    }
    if recbole_python:
        import tempfile

        from bench.data.export_recbole import export

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


config_app = typer.Typer(no_args_is_help=True, help="Model configuration: options, defaults, search spaces.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show_cmd(model: str = typer.Argument(..., help="Model name, e.g. sasrec.")) -> None:
    """A model's options (type, default, constraints), its trainer defaults per stage and its search space."""
    import pandas as pd

    from bench.cli.config_show import config_tables
    from bench.report.console import rich_table

    for title, rows in config_tables(model).items():
        console.print(rich_table(pd.DataFrame(rows), title))


check_app = typer.Typer(no_args_is_help=True, help="Checks of the harness itself.")
app.add_typer(check_app, name="check")


@check_app.command("determinism")
def check_determinism_cmd(
    model: str = typer.Option("sasrec", "--model"),
    dataset: str = typer.Option(defaults.DATASET, "--dataset"),
    protocol: str = typer.Option(defaults.PROTOCOL, "--protocol"),
    seed: int = typer.Option(0),
    set_: list[str] = typer.Option([], "--set"),
    data_root_: Path = DataRoot,
    home: Path = typer.Option(None, "--home", help="Read dataset/feature caches from this home (else $BENCH_HOME, "
                              "else ./.bench); both runs still train from scratch in throw-away stores."),
) -> None:
    """Run one spec twice from scratch and compare the hashes of its per-user metrics."""
    from bench.engine.determinism import check_determinism
    from bench.engine.spec import build_spec, parse_overrides
    from bench.progress import Reporter

    spec = build_spec(dataset, protocol, model, seed, parse_overrides(set_))
    with Reporter() as reporter:
        report = check_determinism(spec, data_root(data_root_), reporter, bench_home(home))
    console.print(f"metric hashes: {report['metric_hashes'][0]}  {report['metric_hashes'][1]}")
    console.print("[green]deterministic[/]" if report["identical"] else "[red]NOT deterministic[/]")
    console.print(f"torch threads: {report['torch_threads']}; remaining sources of variation:")
    for source in report["remaining_sources"]:
        console.print(f"  - {source}")
    if not report["identical"]:
        raise typer.Exit(1)


from bench.cli.experiments import register as _register_experiments  # noqa: E402

_register_experiments(app)

from bench.cli.site import register as _register_site  # noqa: E402

_register_site(app)


def _error_line(message: str) -> None:
    from rich.markup import escape

    text = " ".join(str(message).split())  # one line, whatever the message holds
    Console(stderr=True).print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def main() -> None:
    """Every failure ends in one `error:` line: exit 2 for bad input, damaged or unwritable state
    (BenchError, OSError such as a full disk), 130 for an interrupt; a command's own exit code
    (typer.Exit) is passed on."""
    try:
        code = app(standalone_mode=False)
    except BenchError as exc:
        _error_line(str(exc))
        sys.exit(2)
    except OSError as exc:  # disk full, permission denied, a vanished file: name it
        where = f": {exc.filename}" if exc.filename else ""
        _error_line(f"{exc.strerror or type(exc).__name__}{where}")
        sys.exit(2)
    except KeyboardInterrupt:
        _error_line("interrupted")
        sys.exit(130)
    except Exception as exc:  # usage errors: typer vendors its own click, so match by shape, not class
        if type(exc).__name__ == "NoArgsIsHelpError" and callable(getattr(exc, "show", None)):
            exc.show()  # `bench` or `bench data` alone: the help text
            sys.exit(getattr(exc, "exit_code", 2))
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _error_line(f"{exc.format_message()}{hint}")
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":  # click turns EOFError and Ctrl-C into Abort
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, EOFError):
                _error_line(f"unexpected end of input or file (EOFError{': ' + str(cause) if str(cause) else ''})")
                sys.exit(2)
            _error_line("interrupted")
            sys.exit(130)
        raise
    if code == 130:  # typer turns Ctrl-C into a silent Exit(130)
        _error_line("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
