"""Hyper-parameter tuning with Optuna: selection on the validation split only.

A trial trains every stage of the model exactly as the runner does, but is scored by the
best per-epoch validation value of its final stage; the test split stays locked throughout
(a trial that unlocks it fails the study). Each epoch's validation value is reported to the
trial so the median pruner can stop poor trials early.

Storage: an Optuna journal file under the bench home by default (no server needed), or any
Optuna RDB URL (sqlite:///..., postgresql://user@host/db) so many workers on many machines
share one study. A study is created once and resumed by name; its budget (trials and/or wall
time) is recorded in the study's user attributes and a different budget for the same study is
refused, so every model of a comparison is tuned with the same declared budget.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.engine.spec import RunSpec, build_spec
from bench.errors import BenchError
from bench.hashing import hash_obj

STATE_COUNTED = ("COMPLETE", "PRUNED")  # trials that spend budget


def _optuna():
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - optuna is a declared dependency
        raise BenchError("tuning needs optuna: pip install optuna") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ---------------------------------------------------------------- storage


def tuning_dir(home: Path) -> Path:
    return home / "tuning"


def default_storage_url(home: Path) -> str:
    return f"journal://{(tuning_dir(home) / 'optuna.journal').resolve()}"


def make_storage(url: str | None, home: Path):
    """Optuna storage from a URL: None / journal:///path / *.journal -> journal file; else RDB."""
    optuna = _optuna()
    url = url or default_storage_url(home)
    if url.startswith("journal://") or url.endswith(".journal"):
        path = Path(url.removeprefix("journal://"))  # journal:///abs/file -> /abs/file
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except (ValueError, KeyError, TypeError) as exc:  # undecodable bytes or JSON: a damaged journal
            raise BenchError(f"{path}: damaged Optuna journal ({type(exc).__name__}); it holds the studies' "
                             f"trials and cannot be rebuilt: repair or move it away to start afresh") from None
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url)
    if "://" in url:
        url = with_installed_driver(url)
        # heartbeats let other workers fail the trials of a worker that died, so a resumed study
        # does not wait on them
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=30, grace_period=120
            )
    raise BenchError(f"--storage {url!r}: expected journal:///path, a *.journal file, sqlite:///path or postgresql://...")


def with_installed_driver(url: str) -> str:
    """postgresql://... -> postgresql+psycopg2://... when only psycopg2 is installed.

    (SQLAlchemy 2.1 defaults to psycopg 3 for a bare postgresql:// URL, 2.0 to psycopg2.)
    """
    import importlib.util

    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            if importlib.util.find_spec("psycopg") is not None:
                return "postgresql+psycopg://" + url[len(scheme):]
            if importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(scheme):]
            raise BenchError("a postgresql:// storage needs a driver: pip install 'msm4sr-bench[postgres]' "
                             "(or psycopg2-binary)")
    return url


def redact(url: str) -> str:
    """The URL without its password, for records."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# ---------------------------------------------------------------- search space


def search_space(model: str, extra: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """{override key: (kind, args...)} from the model's declared space plus `extra` entries."""
    from bench.engine.spec import GROUPS
    from bench.plugins import get_model_class

    # a model's own fields are named bare ("dropout"); a run-level setting by its group
    # ("trainer.finetune.lr"), e.g. a fine-tuning space whose trials share one pre-training
    space = {(k if k.split(".", 1)[0] in GROUPS else f"{model}.{k}"): tuple(v)
             for k, v in get_model_class(model).Config.search_space().items()}
    space.update({k: tuple(v) for k, v in (extra or {}).items()})
    if not space:
        raise BenchError(
            f"model {model!r} declares no search space; add dimensions with --param, e.g. "
            "--param trainer.lr=loguniform:1e-4:1e-2"
        )
    return space


def parse_param(text: str) -> tuple[str, tuple]:
    """'trainer.lr=loguniform:1e-4:1e-2' | 'sasrec.hidden=categorical:64,128' -> (key, spec)."""
    from bench.engine.spec import parse_value

    key, sep, rest = text.partition("=")
    kind, _, args = rest.partition(":")
    if not sep or kind not in ("float", "loguniform", "int", "categorical"):
        raise BenchError(f"--param {text!r}: expected key=float|loguniform|int:LO:HI or key=categorical:A,B,...")
    if kind == "categorical":
        return key.strip(), (kind, [parse_value(x) for x in args.split(",")])
    lo, _, hi = args.partition(":")
    cast = int if kind == "int" else float
    try:
        return key.strip(), (kind, cast(lo), cast(hi))
    except ValueError:
        raise BenchError(f"--param {text!r}: bounds must be numbers") from None


def suggest(trial, space: dict[str, tuple]) -> dict[str, Any]:
    out = {}
    for key, (kind, *args) in space.items():
        if kind == "float":
            out[key] = trial.suggest_float(key, float(args[0]), float(args[1]))
        elif kind == "loguniform":
            out[key] = trial.suggest_float(key, float(args[0]), float(args[1]), log=True)
        elif kind == "int":
            out[key] = trial.suggest_int(key, int(args[0]), int(args[1]))
        elif kind == "categorical":
            out[key] = trial.suggest_categorical(key, list(args[0]))
        else:
            raise BenchError(f"search space {key}: unknown kind {kind!r} (float, loguniform, int, categorical)")
    return out


# ---------------------------------------------------------------- one trial


def validation_objective(spec: RunSpec, env, on_epoch: Callable[[int, float], None] | None = None) -> dict:
    """Train `spec` like the runner, evaluate on validation only; never unlocks the test split.

    Returns {'value': best validation value of the final stage's valid_metric, 'metric',
    'best_epoch', 'history'}.
    """
    import torch

    from bench.engine.evaluator import evaluate
    from bench.engine.runner import train_stages

    split = env.split(spec)
    max_len = spec.protocol_params["max_len"]
    previous, env.on_epoch = env.on_epoch, on_epoch
    try:
        trained = train_stages(spec, env)  # no resume checkpoints: a trial is cheap to redo
    finally:
        env.on_epoch = previous
    model, device = trained.model, trained.device
    final_cfg = spec.trainer[trained.stages[-1]]
    result = trained.fits.get(trained.stages[-1])
    if split.test_unlocked:
        raise BenchError("the test split was unlocked during tuning; selection must use validation only")
    if result is None:  # an untrainable model (e.g. popularity): one validation pass
        value = evaluate(model, split.valid, max_len, spec.evaluation, device).means[final_cfg.valid_metric]
        if on_epoch is not None:
            on_epoch(0, value)
        out = {"value": value, "best_epoch": 0, "history": []}
    else:
        out = {"value": result.best_value, "best_epoch": result.best_epoch, "history": result.history}
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {**out, "metric": final_cfg.valid_metric}


# ---------------------------------------------------------------- the study


def default_study_name(model: str, dataset: str, protocol: str, overrides: dict[str, Any]) -> str:
    """Trials on another device or with another evaluation batch join the same study."""
    from bench.engine.spec import execution_only

    searched = {k: v for k, v in overrides.items() if not execution_only(k)}
    return f"{model}-{dataset}-{protocol}-{hash_obj(searched)[:8]}"


def _fail_dead_local_trials(study) -> int:
    """Mark RUNNING trials whose worker (this host, a pid no longer alive) died as FAIL."""
    optuna = _optuna()
    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("host") != host or "pid" not in t.user_attrs:
            continue
        try:
            os.kill(int(t.user_attrs["pid"]), 0)
        except ProcessLookupError:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            n += 1
        except PermissionError:
            pass
    return n


def tune(
    model: str,
    dataset: str,
    protocol: str,
    env,
    trials: int | None = None,
    timeout_s: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    overrides: dict[str, Any] | None = None,
    extra_space: dict[str, tuple] | None = None,
    seed: int = 0,
    worker: int = 0,
    pruner=None,
    out: Path | None = None,
    change_budget: bool = False,
    trial_overrides: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict:
    """Run (or resume) a study until it holds `trials` finished trials or `timeout_s` passes.
    `trial_overrides(params)`: the overrides a trial's parameters run under (default: `overrides`,
    then the params); a suite passes its cells' resolution, so a trial trains as a tuned cell with
    those parameters would (e.g. a budget that gives one setting a longer patience than another).

    Returns the summary written to `out` (default <home>/tuning/<study>.best.json).
    """
    optuna = _optuna()
    if trials is None and timeout_s is None:
        raise BenchError("give a budget: --trials N and/or --timeout SECONDS")
    overrides = dict(overrides or {})
    space = search_space(model, extra_space)
    space = {k: v for k, v in space.items() if k not in overrides}  # --set fixes a dimension
    if not space:
        raise BenchError("every dimension of the search space is fixed by --set; nothing to tune")
    build_spec(dataset, protocol, model, seed, overrides)  # fail fast on a bad override
    name = study_name or default_study_name(model, dataset, protocol, overrides)
    url = storage or default_storage_url(env.home)
    budget = {"trials": trials, "timeout_s": timeout_s}
    study_storage = make_storage(url, env.home)

    existing = {s.study_name for s in optuna.get_all_study_summaries(study_storage)}
    # the sampler's seed depends on the study's progress, so a resumed study (or a second
    # worker, given its own --worker) does not replay the suggestions already made
    probe = optuna.load_study(study_name=name, storage=study_storage) if name in existing else None
    n_before = len(probe.trials) if probe is not None else 0
    sampler_seed = seed + 1_000_003 * worker + n_before
    study = optuna.create_study(
        study_name=name, storage=study_storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=pruner if pruner is not None else optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    declared = {"model": model, "dataset": dataset, "protocol": protocol, "overrides": overrides,
                "space": {k: list(v) for k, v in space.items()}, "seed": seed}
    attrs = study.user_attrs
    if "setup" in attrs:
        if json.loads(json.dumps(declared)) != attrs["setup"]:
            raise BenchError(f"study {name!r} was created with a different setup: {attrs['setup']}")
        if attrs.get("budget") != budget and change_budget:
            env.reporter.info(f"study {name}: budget changed from {attrs.get('budget')} to {budget}")
            study.set_user_attr("budget_history", [*attrs.get("budget_history", []), attrs.get("budget")])
            study.set_user_attr("budget", budget)
        elif attrs.get("budget") != budget:
            raise BenchError(
                f"study {name!r} has budget {attrs.get('budget')}; asked for {budget}. Every model is tuned "
                "with one declared budget: pass the same --trials/--timeout, a new --study-name, "
                "or --change-budget to extend this study (recorded)"
            )
    else:
        # budget before setup: a worker that sees "setup" must also see the budget
        study.set_user_attr("budget", budget)
        study.set_user_attr("setup", declared)
    stale = _fail_dead_local_trials(study)
    if stale:
        env.reporter.info(f"study {name}: marked {stale} trial(s) of dead workers as failed")

    def objective(trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("worker", worker)
        params = suggest(trial, space)
        run = trial_overrides(params) if trial_overrides else {**overrides, **params}
        resolved = {k: v for k, v in run.items() if k not in params and (k not in overrides or overrides[k] != v)}
        if resolved:  # what this trial ran under beyond the study's fixed settings (its summary says it)
            trial.set_user_attr("resolved_overrides", resolved)
        spec = build_spec(dataset, protocol, model, seed, run)

        def on_epoch(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {value:.4f}")

        started = time.perf_counter()
        try:
            result = validation_objective(spec, env, on_epoch)
        except BenchError as exc:
            if str(exc).startswith("non-finite loss"):  # a diverged configuration: a failed trial
                env.reporter.info(f"trial {trial.number}: {params} diverged ({exc})")
                return math.nan
            raise
        trial.set_user_attr("best_epoch", result["best_epoch"])
        trial.set_user_attr("metric", result["metric"])
        trial.set_user_attr("seconds", time.perf_counter() - started)
        env.reporter.info(f"trial {trial.number}: {params} -> valid {result['metric']} {result['value']:.4f}")
        return result["value"]

    counted = tuple(getattr(optuna.trial.TrialState, s) for s in STATE_COUNTED)
    callbacks = []
    n_trials = None
    if trials is not None:
        done = len(study.get_trials(deepcopy=False, states=counted))
        n_trials = max(trials - done, 0)
        callbacks.append(optuna.study.MaxTrialsCallback(trials, states=counted))
    started = time.perf_counter()
    if n_trials != 0:
        study.optimize(objective, n_trials=n_trials, timeout=timeout_s, callbacks=callbacks,
                       catch=(), gc_after_trial=True)
    study.set_user_attr(f"wall_s/worker{worker}/{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
                        time.perf_counter() - started)
    return write_summary(study, url, out or tuning_dir(env.home) / f"{name}.best.json")


def tune_suite(suite, budget: str, env, trials: int | None = None, timeout_s: float | None = None,
               storage: str | None = None, models: list[str] | None = None,
               datasets: list[str] | None = None, worker: int = 0) -> tuple[list[dict], list[str]]:
    """Tune every (model, dataset) of the suite's tuned variations with one budget, each study's
    fixed settings being exactly its cells' (the budget's caps included), trials seeded with
    the budget's first seed; each summary goes where the suite's params_from reads it.

    Returns (summaries, models skipped because they have nothing to tune)."""
    from bench.experiment.suites import cell_overrides, params_path, select

    if not suite.tuned_variations():
        raise BenchError(f"suite {suite.name} has no params_from: nothing of it is tuned")
    todo = select(suite, budget, models, datasets, suite.tuned_variations())
    seed = min(c.seed for c in todo)
    b = suite.budget(budget)
    summaries, skipped, seen = [], [], set()
    for cell in todo:
        path = params_path(suite, cell.variation, cell.model, cell.dataset, budget)
        if path in seen:
            continue
        seen.add(path)
        try:
            search_space(cell.model)
        except BenchError:
            skipped.append(cell.model)
            continue
        per_trial = functools.partial(cell_overrides, suite, b, cell.variation, cell.model, cell.dataset)
        fixed = per_trial({})
        env.reporter.info(f"tuning {cell.model} on {cell.dataset} -> {path}")
        summaries.append(tune(cell.model, cell.dataset, suite.protocol, env, trials=trials, timeout_s=timeout_s,
                              storage=storage, overrides=fixed, seed=seed, worker=worker, out=path,
                              trial_overrides=per_trial))
    return summaries, sorted(set(skipped))


def write_summary(study, url: str, out: Path) -> dict:
    """The study's summary, written to `out` (its path added as `written_to`)."""
    from bench.atomic import write_json

    summary = study_summary(study, url)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, summary)
    summary["written_to"] = str(out)
    return summary


def study_summary(study, url: str) -> dict:
    optuna = _optuna()
    states = [t.state for t in study.trials]
    count = {s.name.lower(): states.count(s) for s in optuna.trial.TrialState}
    setup = study.user_attrs.get("setup", {})
    try:
        best = study.best_trial
    except ValueError:
        raise BenchError(f"study {study.study_name!r}: no trial completed ({count})") from None
    wall = sum(v for k, v in study.user_attrs.items() if k.startswith("wall_s/"))
    from bench.engine.provenance import git_revision

    return {
        "study": study.study_name,
        "storage": redact(url),
        "model": setup.get("model"),
        "dataset": setup.get("dataset"),
        "protocol": setup.get("protocol"),
        "seed": setup.get("seed"),
        "metric": best.user_attrs.get("metric"),
        "selection": "best validation value of the final stage (test split never read)",
        "best_value": best.value,
        "best_trial": best.number,
        "best_epoch": best.user_attrs.get("best_epoch"),
        "params": best.params,
        "space": setup.get("space", {}),
        # everything a run needs to reproduce the selected configuration, as --set overrides
        "overrides": {**setup.get("overrides", {}), **best.user_attrs.get("resolved_overrides", {}), **best.params},
        "budget": study.user_attrs.get("budget"),
        "trials": count,
        "wall_s": wall,
        "sampler": "TPESampler",
        "pruner": "MedianPruner on per-epoch validation values",
        "git_revision": git_revision(),
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
