"""`bench tune`, `bench suite ...`, `bench table`, `bench plot`: the experiment commands."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from bench.errors import BenchError
from bench.paths import bench_home, data_root

DataRoot = typer.Option(None, "--data-root", help="Folder of raw datasets (else $BENCH_DATA_ROOT, else ../shared/data).")
Home = typer.Option(None, "--home", help="Caches, results store and studies (else $BENCH_HOME, else ./.bench).")
BudgetOpt = typer.Option("full", "--budget", help="full; cpu (capped epochs, every user); quick (fewer users, epochs, seeds).")

suite_app = typer.Typer(no_args_is_help=True, help="Declarative experiment suites (bench/suites/*.yaml).")


def _console():
    from bench.cli import console

    return console


def _command_line() -> str:
    return "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def tune(
    model: str = typer.Option(..., help="Model name."),
    dataset: str = typer.Option("scientific", help="Dataset name."),
    protocol: str = typer.Option("leave_one_out", help="Protocol name."),
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
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Tune a model's hyper-parameters on the validation split (Optuna TPE + median pruning)."""
    from bench.progress import Reporter
    from bench.runner import RunEnv, execute
    from bench.spec import build_spec, parse_overrides
    from bench.tuning import parse_param
    from bench.tuning import tune as run_tune

    console = _console()
    extra = dict(parse_param(p) for p in param)
    overrides = parse_overrides(set_)
    with Reporter() as reporter:
        env = RunEnv(data_root(data_root_), bench_home(home), reporter)
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
            from bench.tables import rich_table
            from bench.tables import summary as table_summary

            records = []
            for s in range(seed, seed + seeds):
                key, record, _ = execute(build_spec(dataset, protocol, model, s, summary["overrides"]), env)
                records.append(record)
            console.print(rich_table(table_summary(records), f"selected configuration, {seeds} seeds (test)"))


@suite_app.command("list")
def suite_list() -> None:
    """The suites in bench/suites/."""
    from bench.suites import list_suites, load_suite

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
    variations: str = typer.Option(None, help="Comma-separated: only these variations' cells."),
    jobs: int = typer.Option(1, min=1, help="Worker processes on this machine (shards k/N of the selection, one "
                             "store); several share a GPU well."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Run the suite's cells whose records are missing."""
    from bench.progress import Reporter
    from bench.runner import RunEnv, run_hash
    from bench.suites import budget_label, load_suite, parse_shard, run_suite, select

    console = _console()
    suite = load_suite(name)
    k_n = parse_shard(shard)
    filters = {"models": models, "datasets": datasets, "variations": variations}
    picked = {option: _names(value) for option, value in filters.items()}
    label = budget_label(budget)
    if jobs > 1 and (shard or dry_run):
        raise BenchError("--jobs runs every shard of the selection here; drop --shard / --dry-run (or --jobs)")
    with Reporter() as reporter:
        env = RunEnv(data_root(data_root_), bench_home(home), reporter)
        if jobs > 1:
            _run_jobs(name, budget, filters, force, jobs, env, suite, reporter)
            return
        if dry_run:
            todo = select(suite, budget, k_n, **picked)
            for c in todo:
                key = run_hash(c.spec(suite.protocol), env)
                state = "complete" if env.store.is_complete(key) else "missing"
                console.print(f"{c.describe():>48}  {key}  {state}")
            console.print(f"{len(todo)} cells in shard {k_n[0]}/{k_n[1]} ({label})")
            return
        report = run_suite(suite, env, budget, k_n, force=force, **picked)
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


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _run_jobs(name, budget, filters: dict[str, str | None], force, jobs, env, suite, reporter) -> None:
    from bench.runner import run_hash
    from bench.suites import budget_label, select
    from bench.workers import run_workers

    args = ["suite", "run", name, "--budget", budget, "--data-root", str(env.data_root), "--home", str(env.home)]
    for option, value in filters.items():
        args += [f"--{option}", value] if value else []
    args += ["--force"] if force else []
    codes = run_workers(args, jobs, env.home, reporter)
    todo = select(suite, budget, (1, 1), **{option: _names(value) for option, value in filters.items()})
    done = sum(env.store.is_complete(run_hash(c.spec(suite.protocol), env)) for c in todo)
    _console().print(f"suite {suite.name} ({budget_label(budget)}), {jobs} workers: {done}/{len(todo)} cells complete; "
                     f"worker exit codes {codes}")
    if any(codes) or done < len(todo):
        raise typer.Exit(1)


def log_suite_run(home: Path, suite: str, budget: str, k_n: tuple[int, int], report) -> None:
    """Append this invocation (command, counts, wall time) to <home>/suite_runs.jsonl."""
    import datetime as dt

    from bench.provenance import git_revision, hardware

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
    budget: str = BudgetOpt,
    out: Path = typer.Option(None, help="Write here (with a provenance header) instead of printing."),
    sidecar: Path = typer.Option(None, help="Cell -> run-hash map (default: OUT.cells.json, "
                                            "else <home>/tables/<suite>-<budget>.cells.json)."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Render a suite's table: mean ± std over seeds, best bold, second underlined, † vs the reference."""
    from bench.atomic import write_json
    from bench.report import build_table, provenance_header, render
    from bench.runner import RunEnv
    from bench.suites import load_suite

    console = _console()
    suite = load_suite(name)
    env = RunEnv(data_root(data_root_), bench_home(home))
    result = build_table(suite, env, budget)
    if not any(r.n_done for r in result.rows):
        raise BenchError(f"suite {suite.name} ({budget} budget): no complete run in the store; "
                         f"run `bench suite run {name} --budget {budget}` first")
    text = render(result, fmt)
    side = sidecar or (Path(f"{out}.cells.json") if out else bench_home(home) / "tables" / f"{suite.name}-{budget}.cells.json")
    side.parent.mkdir(parents=True, exist_ok=True)
    write_json(side, {**result.sidecar(), "command": _command_line()})
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
                             "of pre-trained models), sensitivity (sweeps), or all."),
    budget: str = BudgetOpt,
    out_dir: Path = typer.Option(Path("results/figures"), "--out-dir", help="Folder for the PNG and PDF files."),
    data_root_: Path = DataRoot,
    home: Path = Home,
) -> None:
    """Draw a suite's per-epoch validation curves and sensitivity curves (PNG and PDF)."""
    from bench.plots import sensitivity_curves, stage_curves, validation_curves
    from bench.runner import RunEnv
    from bench.suites import load_suite

    if kind not in ("curves", "stages", "sensitivity", "all"):
        raise BenchError(f"--kind {kind!r}: valid: curves, stages, sensitivity, all")
    suite = load_suite(name)
    env = RunEnv(data_root(data_root_), bench_home(home))
    written = []
    if kind in ("curves", "all"):
        written += validation_curves(suite, env, budget, out_dir)
    if kind in ("stages", "all"):
        written += stage_curves(suite, env, budget, out_dir)
    if kind in ("sensitivity", "all"):
        written += sensitivity_curves(suite, env, budget, out_dir)
    if not written:
        raise BenchError(f"nothing to plot for suite {suite.name} ({budget} budget): no complete run"
                         + (" or no sweep" if kind == "sensitivity" else ""))
    console = _console()
    for p in written:
        console.print(f"wrote {p}")
    manifest = out_dir / f"{suite.name}-{budget}-figures.json"
    manifest.write_text(json.dumps({"command": _command_line(), "files": [str(p) for p in written]}, indent=1))


def register(app: typer.Typer) -> None:
    """Mount the experiment commands on the `bench` app."""
    app.command("tune")(tune)
    app.add_typer(suite_app, name="suite")
    app.command("table")(table)
    app.command("plot")(plot)
