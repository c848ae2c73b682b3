"""`bench tune`, `bench suite ...`, `bench table`, `bench plot`: the experiment commands."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from bench import defaults
from bench.cli.console import split_names
from bench.errors import BenchError
from bench.paths import bench_home, data_root

DataRoot = typer.Option(None, "--data-root", help="Folder of raw datasets (else $BENCH_DATA_ROOT, else ../shared/data).")
Home = typer.Option(None, "--home", help="Caches, results store and studies (else $BENCH_HOME, else ./.bench).")
BudgetOpt = typer.Option("full", "--budget", help="full; cpu (capped epochs, every user); quick (fewer users, epochs, seeds).")
ShownBudgetOpt = typer.Option(None, "--budget", help="full, cpu or quick (default: the one with the most complete "
                              "cells in the store, full first on a tie).")

ExecutorOpt = typer.Option("sequential", "--executor", help="sequential (this process) or ray (one Ray task per "
                          "cell; a local cluster unless --address).")
AddressOpt = typer.Option(None, "--address", help="Ray cluster to run on: auto, HOST:PORT or ray://HOST:10001 "
                          "(implies --executor ray).")
CpusOpt = typer.Option(1.0, "--cpus-per-cell", help="CPUs each cell reserves on Ray (its torch threads).")
GpusOpt = typer.Option(0.0, "--gpus-per-cell", help="GPUs each cell reserves on Ray: 0.1 packs ten cells per GPU.")
RetriesOpt = typer.Option(3, "--max-retries", help="Ray retries of a cell whose worker or node died.")

suite_app = typer.Typer(no_args_is_help=True, help="Declarative experiment suites (bench/suites/*.yaml).")


def _console():
    from bench.cli.console import console

    return console


def _command_line() -> str:
    return "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def tune(
    model: str = typer.Option(..., help="Model name."),
    dataset: str = typer.Option(defaults.DATASET, help="Dataset name."),
    protocol: str = typer.Option(defaults.PROTOCOL, help="Protocol name."),
    trials: int = typer.Option(None, help="Budget: finished (complete or pruned) trials in the study."),
    timeout: float = typer.Option(None, help="Budget: wall-clock seconds for this invocation."),
    storage: str = typer.Option(None, help="Optuna storage: journal:///file (default: <home>/tuning/optuna.journal), "
                                           "sqlite:///file or postgresql://user@host:port/db."),
    study_name: str = typer.Option(None, "--study-name", help="Default: <model>-<dataset>-<protocol>-<hash of --set>."),
    set_: list[str] = typer.Option([], "--set", help="Fixed override for every trial, e.g. trainer.epochs=50."),
    param: list[str] = typer.Option([], "--param", help="Extra search dimension, e.g. trainer.lr=loguniform:1e-4:1e-2."),
    seed: int = typer.Option(0, help="Training seed of every trial, and the sampler's base seed."),
    worker: int = typer.Option(0, help="Index of this worker when several share a study (distinct sampler seeds)."),
    change_budget: bool = typer.Option(False, "--change-budget", help="Allow a budget different from the study's (recorded)."),
    out: Path = typer.Option(None, help="Where to write the best parameters (default <home>/tuning/<study>.best.json)."),
    seeds: int = typer.Option(0, help="After tuning, run the selected configuration with this many seeds (test evaluated)."),
    executor: str = typer.Option("sequential", "--executor", help="sequential (this process) or ray (--workers "
                                 "Optuna workers as Ray tasks sharing the study)."),
    workers: int = typer.Option(1, "--workers", min=1, help="With --executor ray: Optuna workers (worker indices "
                                "--worker .. --worker+N-1)."),
    address: str = AddressOpt,
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="CPUs each Ray worker reserves."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs each Ray worker reserves (0.25: four per GPU)."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Tune a model's hyper-parameters on the validation split (Optuna TPE + median pruning)."""
    from bench.engine.runner import RunEnv
    from bench.engine.spec import build_spec, parse_overrides
    from bench.experiment.tuning import parse_param
    from bench.experiment.tuning import tune as run_tune
    from bench.progress import Reporter

    console = _console()
    extra = dict(parse_param(p) for p in param)
    overrides = parse_overrides(set_)
    ray_opts = ray_options(executor, 1, address, cpus_per_worker, gpus_per_worker, 3)
    if workers > 1 and ray_opts is None:
        raise BenchError("--workers N runs N Optuna workers on Ray: add --executor ray (or run `bench tune ... "
                         "--worker K` in N shells against one --storage)")
    with Reporter() as reporter:
        env = RunEnv(data_root(data_root_), bench_home(home), reporter)
        if ray_opts is not None:
            from bench.experiment.executors import tune_on_ray

            summary = tune_on_ray(model, dataset, protocol, env, workers, ray_opts, trials=trials, timeout_s=timeout,
                                  storage=storage, study_name=study_name, overrides=overrides, extra_space=extra,
                                  seed=seed, worker=worker, change_budget=change_budget, out=out)
        else:
            summary = run_tune(model, dataset, protocol, env, trials=trials, timeout_s=timeout, storage=storage,
                               study_name=study_name, overrides=overrides, extra_space=extra, seed=seed,
                               worker=worker, out=out, change_budget=change_budget)
        console.print(f"study {summary['study']} ({summary['storage']}): trials {summary['trials']}, "
                      f"budget {summary['budget']}")
        console.print(f"best valid {summary['metric']} = {summary['best_value']:.4f} (trial {summary['best_trial']})")
        console.print("best params:")
        for k, v in summary["params"].items():
            console.print(f"  {k} = {v}")
        console.print(f"written to {summary['written_to']} (as --set: "
                      + " ".join(f"{k}={v}" for k, v in summary["overrides"].items()) + ")")
        if seeds:
            from bench.experiment.experiment import Experiment
            from bench.report.console import rich_table
            from bench.report.console import summary as table_summary

            specs = [build_spec(dataset, protocol, model, s, summary["overrides"]) for s in range(seed, seed + seeds)]
            done = Experiment.of_specs(specs, name=f"selected configuration, {seeds} seeds").run(env, ray_opts)
            if done.failed or done.busy:
                raise BenchError(f"selected configuration: {len(done.failed)} seed run(s) failed, {len(done.busy)} "
                                 "running elsewhere" + (f"; first: {done.failed[0][1]}" if done.failed else ""))
            records = list(done.records.values())
            console.print(rich_table(table_summary(records), f"selected configuration, {seeds} seeds (test)"))


@suite_app.command("list")
def suite_list() -> None:
    """The suites in bench/suites/."""
    from bench.experiment.suites import list_suites, load_suite

    console = _console()
    for name in list_suites():
        s = load_suite(name)
        console.print(f"{name:>14}: {s.title} — {len(s.all_variations())} variation(s) x {len(s.models)} model(s) "
                      f"x {len(s.datasets)} dataset(s) x {len(s.seeds)} seed(s)")


@suite_app.command("run")
def suite_run(
    name: str = typer.Argument(..., help="Suite name (bench/suites/NAME.yaml) or a YAML path."),
    shard: str = typer.Option(None, help="k/N: run cells i with i % N == k-1 (e.g. one shard per machine)."),
    budget: str = BudgetOpt,
    force: bool = typer.Option(False, help="Re-run cells that are already complete."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List this shard's cells and their status; run nothing."),
    models: str = typer.Option(None, help="Comma-separated: only these models' cells (sharded among themselves)."),
    datasets: str = typer.Option(None, help="Comma-separated: only these datasets' cells."),
    variations: str = typer.Option(None, help="Comma-separated: only these variations' cells (or one variation's whole name, commas and all)."),
    jobs: int = typer.Option(1, min=1, help="Cells at once on a local Ray cluster (--executor ray without "
                             "--address); several share a GPU well. Needs the ray extra."),
    executor: str = ExecutorOpt,
    address: str = AddressOpt,
    cpus_per_cell: float = CpusOpt,
    gpus_per_cell: float = GpusOpt,
    max_retries: int = RetriesOpt,
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Run the suite's cells whose records are missing."""
    from bench.engine.runner import RunEnv
    from bench.experiment.experiment import Experiment, parse_shard
    from bench.experiment.suites import budget_label, load_suite
    from bench.progress import Reporter

    console = _console()
    suite = load_suite(name)
    k_n = parse_shard(shard)
    filters = {"models": models, "datasets": datasets, "variations": variations}
    picked = {option: split_names(value) or None for option, value in filters.items()}
    if variations and variations.strip() in suite.all_variations():  # a name with a comma: "cos, tau 0.1"
        picked["variations"] = [variations.strip()]
    label = budget_label(budget)
    ray_opts = ray_options(executor, jobs, address, cpus_per_cell, gpus_per_cell, max_retries)
    with Reporter() as reporter:
        env = RunEnv(data_root(data_root_), bench_home(home), reporter)
        todo = Experiment.of_suite(suite, budget, k_n, **picked)
        if dry_run:
            for c, key, complete in todo.status(env):
                console.print(f"{c.label:>48}  {key}  {'complete' if complete else 'missing'}")
            console.print(f"{len(todo.cells)} cells in shard {k_n[0]}/{k_n[1]} ({label})")
            return
        report = todo.run(env, ray_opts, force=force)  # ray_opts None: here, one cell after another
        log_suite_run(env.home, suite.name, budget, k_n, report)
    console.print(
        f"suite {suite.name} ({label}), shard {k_n[0]}/{k_n[1]}: executed {len(report.executed)}, "
        f"already complete {len(report.complete)}, busy elsewhere {len(report.busy)}, failed {len(report.failed)} "
        f"in {report.seconds:.1f}s"
    )
    for key, err in report.failed:
        console.print(f"  failed {key}: {err}")
    if report.failed:
        raise typer.Exit(1)


@suite_app.command("tune")
def suite_tune(
    name: str = typer.Argument(..., help="Suite name (bench/suites/NAME.yaml) or a YAML path."),
    trials: int = typer.Option(None, help="Budget of every study: finished (complete or pruned) trials."),
    timeout: float = typer.Option(None, help="Budget of every study: wall-clock seconds per invocation."),
    budget: str = BudgetOpt,
    models: str = typer.Option(None, help="Comma-separated: only these models."),
    datasets: str = typer.Option(None, help="Comma-separated: only these datasets."),
    storage: str = typer.Option(None, help="Optuna storage (default: <home>/tuning/optuna.journal)."),
    worker: int = typer.Option(0, help="Index of this worker when several processes share the studies "
                               "(distinct sampler seeds; the trial budget is shared)."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Tune every model of the suite's tuned variations with one budget (validation only); each
    summary is written where the suite's params_from reads it. Resumes unfinished studies."""
    from bench.engine.runner import RunEnv
    from bench.experiment.suites import load_suite
    from bench.experiment.tuning import tune_suite
    from bench.progress import Reporter

    console = _console()
    suite = load_suite(name)
    if trials is None and timeout is None:
        raise BenchError("give a budget: --trials N and/or --timeout SECONDS (one for every model)")
    with Reporter() as reporter:
        env = RunEnv(data_root(data_root_), bench_home(home), reporter)
        summaries, skipped = tune_suite(suite, budget, env, trials, timeout, storage,
                                        split_names(models) or None, split_names(datasets) or None, worker)
    for s in summaries:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["params"].items())
        console.print(f"{s['model']} / {s['dataset']}: valid {s['metric']} {s['best_value']:.4f} after "
                      f"{s['trials'].get('complete', 0)} complete + {s['trials'].get('pruned', 0)} pruned trials; "
                      f"{params} -> {s['written_to']}")
    if skipped:
        console.print(f"nothing to tune (no search space), default rows only: {', '.join(skipped)}")


def ray_options(executor: str, jobs: int, address: str | None, cpus_per_cell: float, gpus_per_cell: float,
                max_retries: int):
    """RayOptions when the command runs on Ray (--executor ray, --address or --jobs N > 1), else None."""
    from bench.experiment.executors import EXECUTORS, RayOptions, import_ray

    if executor not in EXECUTORS:
        raise BenchError(f"--executor {executor!r}: valid: {', '.join(EXECUTORS)}")
    if executor != "ray" and not address and jobs == 1:
        return None
    if address and jobs > 1:
        raise BenchError("--jobs N sizes a local Ray cluster; with --address the cluster's resources decide")
    import_ray()  # a clear message now if the extra is missing
    opts = RayOptions(address=address, local_cpus=jobs if jobs > 1 else None, cpus_per_cell=cpus_per_cell,
                      gpus_per_cell=gpus_per_cell, max_retries=max_retries)
    opts.check()
    return opts


def log_suite_run(home: Path, suite: str, budget: str, k_n: tuple[int, int], report) -> None:
    """Append this invocation (command, counts, wall time) to <home>/suite_runs.jsonl."""
    import datetime as dt

    from bench.engine.provenance import git_revision, hardware

    entry = {
        "suite": suite, "budget": budget, "shard": f"{k_n[0]}/{k_n[1]}", "command": _command_line(),
        "executed": len(report.executed), "already_complete": len(report.complete), "busy": len(report.busy),
        "failed": len(report.failed), "wall_s": round(report.seconds, 1), "git_revision": git_revision(),
        "cpu": hardware()["cpu"], "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "suite_runs.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def suite_run_history(home: Path, suite: str, budget: str) -> list[dict]:
    path = home / "suite_runs.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("suite") == suite and entry.get("budget") == budget:
            out.append(entry)
    return out


def table(
    name: str = typer.Argument(..., help="Suite name or YAML path."),
    fmt: str = typer.Option("md", "--format", help="md, latex or csv."),
    budget: str = ShownBudgetOpt,
    out: Path = typer.Option(None, help="Write here (with a provenance header) instead of printing."),
    sidecar: Path = typer.Option(None, help="Cell -> run-hash map (default: OUT.cells.json, "
                                            "else <home>/tables/<suite>-<budget>.cells.json)."),
    save_records: Path = typer.Option(None, help="Also copy the records behind the table (spec, provenance, "
                                                 "curves, per-user metrics; no weights) into this home, "
                                                 "e.g. results: `--home results` then re-renders it."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Render a suite's table: mean ± std over seeds, best bold, second underlined, † vs the reference.
    Reads the records alone (no raw data: --data-root is not used)."""
    from bench.atomic import write_json
    from bench.engine.store import ResultStore
    from bench.experiment.suites import load_suite
    from bench.paths import store_dir
    from bench.report.tables import build_table, provenance_header, render

    console = _console()
    suite = load_suite(name)
    store = ResultStore(store_dir(bench_home(home)))
    budget = budget or default_budget(suite, store)
    result = build_table(suite, store, budget)
    if not any(r.n_done for r in result.rows):
        raise BenchError(f"suite {suite.name} ({budget} budget): no complete run in the store; "
                         f"run `bench suite run {name} --budget {budget}` first")
    text = render(result, fmt)
    if save_records:
        from bench.report.tables import export_records

        n = export_records(result, store, store_dir(save_records))
        console.print(f"{n} records copied to {store_dir(save_records)}")
    side = sidecar or (Path(f"{out}.cells.json") if out else bench_home(home) / "tables" / f"{suite.name}-{budget}.cells.json")
    try:
        side.parent.mkdir(parents=True, exist_ok=True)
        write_json(side, {**result.sidecar(), "command": _command_line()})
    except (BenchError, OSError) as exc:  # e.g. a read-only home: the table is still shown
        from bench.errors import warn

        warn(f"cell -> run map not written ({exc})")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        runs = [f"{e['command']} -> executed {e['executed']}, already complete {e['already_complete']}, "
                f"failed {e['failed']} in {e['wall_s']}s ({e['finished_at']}, {e['git_revision']})"
                for e in suite_run_history(bench_home(home), suite.name, budget)]
        out.write_text(provenance_header(fmt, _command_line(), runs) + text)
        console.print(f"table written to {out}; cells -> runs in {side}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
        typer.echo(f"cells -> runs: {side}", err=True)


def plot(
    name: str = typer.Argument(..., help="Suite name or YAML path."),
    kind: str = typer.Option("all", help="curves (per-epoch validation), stages (loss and validation per stage "
                             "of pre-trained models), sensitivity (sweeps), differences (each row minus "
                             "the reference, bootstrap CI), or all."),
    budget: str = ShownBudgetOpt,
    out_dir: Path = typer.Option(None, "--out-dir", help="Folder for the PNG and PDF files (default: "
                                 "<home>/figures)."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Draw a suite's per-epoch validation curves and sensitivity curves (PNG and PDF), from the
    records alone (--data-root is not used)."""
    from bench.engine.store import ResultStore
    from bench.experiment.suites import load_suite
    from bench.paths import store_dir
    from bench.report.plots import differences, sensitivity_curves, stage_curves, validation_curves

    if kind not in ("curves", "stages", "sensitivity", "differences", "all"):
        raise BenchError(f"--kind {kind!r}: valid: curves, stages, sensitivity, differences, all")
    suite = load_suite(name)
    store = ResultStore(store_dir(bench_home(home)))
    budget = budget or default_budget(suite, store)
    out_dir = out_dir or bench_home(home) / "figures"  # never into the checkout unless asked
    written = []
    if kind in ("curves", "all"):
        written += validation_curves(suite, store, budget, out_dir)
    if kind in ("stages", "all"):
        written += stage_curves(suite, store, budget, out_dir)
    if kind in ("sensitivity", "all"):
        written += sensitivity_curves(suite, store, budget, out_dir)
    if kind in ("differences", "all") and suite.reference_arm() is not None:
        written += differences(suite, store, budget, out_dir)
    if not written:
        raise BenchError(f"nothing to plot for suite {suite.name} ({budget} budget): no complete run"
                         + (" or no sweep" if kind == "sensitivity" else ""))
    console = _console()
    for p in written:
        console.print(f"wrote {p}")
    manifest = out_dir / f"{suite.name}-{budget}-figures.json"
    manifest.write_text(json.dumps({"command": _command_line(), "files": [str(p) for p in written]}, indent=1))


def default_budget(suite, store) -> str:
    """The budget with the most complete cells in the store (full, cpu, quick on ties), said on
    stderr with the others' counts; an error naming the command to run when none has any."""
    from bench.engine.spec import spec_key
    from bench.experiment.suites import BUDGETS, cells
    from bench.report.tables import records_by_spec

    index = records_by_spec(store)
    counts = {}
    for b in BUDGETS:
        todo = cells(suite, b)
        counts[b] = (sum(spec_key(c.spec(suite.protocol)) in index for c in todo), len(todo))
    order = sorted(BUDGETS, key=lambda b: (-counts[b][0], ("full", "cpu", "quick").index(b)))
    summary = ", ".join(f"{b} {done}/{n}" for b, (done, n) in counts.items())
    if counts[order[0]][0] == 0:
        raise BenchError(f"suite {suite.name}: no complete run at any budget ({summary} cells); run "
                         f"`bench suite run {suite.name} --budget quick` (or cpu, full) first")
    typer.echo(f"budget: {order[0]} (complete cells: {summary}; choose with --budget)", err=True)
    return order[0]


def register(app: typer.Typer) -> None:
    """Mount the experiment commands on the `bench` app."""
    app.command("tune")(tune)
    app.add_typer(suite_app, name="suite")
    app.command("table")(table)
    app.command("plot")(plot)
