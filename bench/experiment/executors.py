"""Ray as an Experiment's executor: each pending cell one Ray task, on a local or existing cluster.

`Experiment.run(env, executor=RayOptions(...))` (bench/experiment/experiment.py; behind `--executor
ray`, `--address` or `--jobs N` of `bench suite run`, `bench run` and `bench tune --seeds`) hands
its cells to `run_on_ray`: one task per pending cell with declared resources (cpus/gpus per cell,
fractional GPUs allowed), submitted longest-expected first; Ray retries a task whose worker or
node died (max_retries). The driver alone writes its store: it claims each
cell's run folder (the store's lock) while the cell is in flight, so a second driver on the same
store skips it, and writes a returned record only if the store has none yet. Workers run in a
node-local scratch home (bench/experiment/workers.py), so the cluster needs no shared filesystem.

Ray is an optional extra (pip install -e '.[ray]'); nothing imports it unless asked to.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError
from bench.experiment.experiment import Cell, ExperimentReport

__all__ = ["EXECUTORS", "RayOptions", "expected_costs", "run_on_ray", "tune_on_ray"]

EXECUTORS = ("sequential", "ray")  # --executor: sequential = Experiment.run without an executor
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20  # records are small: a local cluster needs little shared memory
POLL_S = 5.0
MIN_IN_FLIGHT = 64  # cells submitted ahead of free slots (each holds its store lock while in flight)

# relative cost of one epoch per model and stage at the same data size (quick-budget timings on
# one CPU thread); only the order of cells and the first ETA depend on them
EPOCH_COST = {
    "pop": {"train": 0.2}, "gru4rec": {"train": 2.0}, "sasrec": {"train": 4.0}, "sasrec_bce": {"train": 4.0},
    "bert4rec": {"train": 8.0}, "cl4srec": {"train": 60.0}, "duorec": {"train": 70.0},
    "s3rec": {"pretrain": 90.0, "finetune": 4.0}, "msm4sr": {"pretrain": 15.0, "finetune": 10.0},
    "fdsa": {"train": 6.0}, "sasrecm": {"train": 6.0}, "unisrec": {"pretrain": 15.0, "finetune": 10.0},
    "vqrec": {"pretrain": 15.0, "finetune": 10.0},
}
DEFAULT_EPOCH_COST = 10.0
REFERENCE_USERS = 2000  # EPOCH_COST's data size; costs scale linearly with protocol.max_users


@dataclass
class RayOptions:
    """Where and how cells run on Ray. address None: start a local cluster of `local_cpus` CPUs."""

    address: str | None = None
    local_cpus: int | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    max_retries: int = 3
    include_dashboard: bool | None = None  # None: Ray's default (on when its dashboard is installed)
    poll_s: float = POLL_S

    @property
    def where(self) -> str:
        return f"Ray ({self.address or 'local cluster'})"

    def run(self, cells: list[Cell], env, force: bool, report: ExperimentReport) -> None:
        """The executor protocol of Experiment.run: every cell as a Ray task."""
        run_on_ray(cells, env, force, self, report)

    def check(self) -> None:
        if self.cpus_per_cell <= 0:
            raise BenchError(f"--cpus-per-cell {self.cpus_per_cell}: must be > 0")
        if self.gpus_per_cell < 0 or (self.gpus_per_cell > 1 and self.gpus_per_cell != int(self.gpus_per_cell)):
            raise BenchError(f"--gpus-per-cell {self.gpus_per_cell}: a fraction in [0, 1] (0.1 = ten cells per GPU) "
                             "or a whole number of GPUs")
        if self.max_retries < 0:
            raise BenchError(f"--max-retries {self.max_retries}: must be >= 0")


def import_ray():
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray (and --jobs N) needs Ray: pip install -e '.[ray]'; without Ray, split a "
                         "suite over processes or machines with --shard k/N") from None
    return ray


# ---------------------------------------------------------------- cost


def _spec_without_seed(spec: dict) -> str:
    from bench.hashing import hash_obj

    return hash_obj({k: v for k, v in spec.items() if k != "seed"})


def _static_cost(spec) -> float:
    table = EPOCH_COST.get(spec.model, {})
    users = spec.protocol_params.get("max_users") or 10 * REFERENCE_USERS
    epochs = sum(table.get(stage, table.get("train", DEFAULT_EPOCH_COST)) * cfg.epochs
                 for stage, cfg in spec.trainer.items())
    return epochs * users / REFERENCE_USERS


def expected_costs(cells: list[Cell], records: Iterable[dict]) -> dict[str, float]:
    """Expected seconds of each cell: the median total time of stored runs of the same spec
    (any seed), else of the same model, dataset and protocol, scaled like the static estimate,
    else a per-model estimate from EPOCH_COST."""
    same_spec: dict[str, list[float]] = {}
    same_arm: dict[tuple, list[tuple[float, float]]] = {}
    for record in records:
        spec, total = record.get("spec"), record.get("timings", {}).get("total_s")
        if not spec or not total:
            continue
        same_spec.setdefault(_spec_without_seed(spec), []).append(total)
        try:
            from bench.engine.spec import RunSpec

            static = _static_cost(RunSpec(**spec))
        except Exception:  # noqa: BLE001 - a record of an older spec schema: no scale for it
            continue
        same_arm.setdefault((spec["model"], spec["dataset"], spec["protocol"]), []).append((total, static))
    out = {}
    for c in cells:
        spec = c.spec
        exact = same_spec.get(_spec_without_seed(spec.model_dump()))
        arm = same_arm.get((spec.model, spec.dataset, spec.protocol))
        if exact:
            out[c.key] = statistics.median(exact)
        elif arm:  # seconds per unit of static cost on this arm, times this cell's static cost
            out[c.key] = statistics.median(t / max(s, 1e-9) for t, s in arm) * _static_cost(spec)
        else:
            out[c.key] = _static_cost(spec)
    return out


def _stored_records(store) -> Iterable[dict]:
    try:
        for _, record in store.records():
            yield record
    except OSError:
        return


# ---------------------------------------------------------------- the Ray executor


@contextlib.contextmanager
def ray_session(opts: RayOptions, reporter):
    """Connected to the cluster at opts.address, or to a new local one; yields (ray, dashboard URL)."""
    ray = import_ray()
    opts.check()
    if ray.is_initialized():  # a caller (e.g. a notebook) already connected: use it, leave it
        yield ray, None
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time
    common = {"log_to_driver": False, "logging_level": "warning"}
    try:
        if opts.address:
            ctx = ray.init(address=opts.address, **common)
        else:
            cpus = opts.local_cpus * opts.cpus_per_cell if opts.local_cpus else os.cpu_count() or 1
            ctx = ray.init(address="local", num_cpus=max(int(cpus), 1),
                           object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                           include_dashboard=opts.include_dashboard, **common)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise BenchError(f"--address {opts.address or 'local'}: cannot start or reach a Ray cluster: {exc}") from None
    dashboard = getattr(ctx, "dashboard_url", None) or None
    if dashboard and not dashboard.startswith("http"):
        dashboard = f"http://{dashboard}"
    try:
        yield ray, dashboard
    finally:
        ray.shutdown()


def _fmt_s(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _slots(ray, opts: RayOptions) -> int:
    """How many cells the cluster runs at once now (its CPUs and GPUs over each cell's share)."""
    try:
        total = ray.cluster_resources()
    except Exception:  # noqa: BLE001 - only for the progress line
        return 1
    slots = int(total.get("CPU", 0) // opts.cpus_per_cell)
    if opts.gpus_per_cell:
        slots = min(slots, int(round(total.get("GPU", 0) / opts.gpus_per_cell, 6)))
    return max(slots, 0)


def run_on_ray(cells: list[Cell], env, force: bool, opts: RayOptions, report: ExperimentReport) -> None:
    """Run the cells whose records are missing (all with force) as Ray tasks; fills `report`."""
    from bench.engine.runner import run_hash
    from bench.engine.store import RunBusy
    from bench.experiment.workers import run_cell

    started = time.perf_counter()
    store = env.store
    for c in cells:
        c.key = c.key or run_hash(c.spec, env)
    pending = [c for c in cells if force or not store.is_complete(c.key)]
    for c in cells:
        if c not in pending:
            report.complete.append(c.key)
            report.records[c.key] = store.load(c.key)
    costs = expected_costs(pending, _stored_records(store)) if pending else {}
    for c in pending:
        c.cost = costs[c.key]
    pending.sort(key=lambda c: -c.cost)  # longest first: the last cells to finish are short ones
    if not pending:
        return
    with ray_session(opts, env.reporter) as (ray, dashboard), contextlib.ExitStack() as all_claims:
        if dashboard:
            env.reporter.info(f"Ray dashboard: {dashboard}")
        resources = ray.cluster_resources()
        if resources.get("CPU", 0) < opts.cpus_per_cell or resources.get("GPU", 0) < opts.gpus_per_cell:
            raise BenchError(f"the Ray cluster has {resources.get('CPU', 0):g} CPU and {resources.get('GPU', 0):g} GPU; "
                             f"a cell asks for {opts.cpus_per_cell:g} CPU and {opts.gpus_per_cell:g} GPU")
        task = ray.remote(run_cell).options(num_cpus=opts.cpus_per_cell, num_gpus=opts.gpus_per_cell,
                                            max_retries=opts.max_retries, retry_exceptions=False)
        in_flight: dict = {}  # object ref -> (cell, its claim)
        queue = list(pending)  # longest first; claimed only when submitted (one lock file open per cell in flight)
        progress = env.reporter.task("cells", len(queue))

        def submit() -> None:
            window = max(MIN_IN_FLIGHT, 2 * _slots(ray, opts))  # enough queued that no slot waits on the driver
            while queue and len(in_flight) < window:
                c = queue.pop(0)
                claim = contextlib.ExitStack()
                try:
                    claim.enter_context(store.claim(store.run_dir(c.key)))
                except RunBusy:
                    env.reporter.info(f"{c.label}: running under another driver or process, skipped")
                    report.busy.append(c.key)
                    progress.advance(1)
                    continue
                if not force and store.is_complete(c.key):  # another driver finished it since the first look
                    claim.close()
                    report.complete.append(c.key)
                    report.records[c.key] = store.load(c.key)
                    progress.advance(1)
                    continue
                all_claims.callback(claim.close)
                payload = {"spec": c.spec.model_dump(), "key": c.key, "data_root": str(env.data_root),
                           "home": str(env.home), "force": force, "threads": opts.cpus_per_cell}
                in_flight[task.remote(payload)] = (c, claim)

        submit()
        env.reporter.info(f"{len(pending)} cells for Ray ({opts.cpus_per_cell:g} CPU, {opts.gpus_per_cell:g} GPU each, "
                          f"longest expected first); {len(report.complete)} already complete")
        done_cost = 0.0
        try:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=opts.poll_s)
                for ref in ready:
                    c, claim = in_flight.pop(ref)
                    try:
                        out = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a failed cell must not stop the others
                        message = _ray_error(exc)
                        env.reporter.info(f"{c.label}: FAILED: {message}")
                        report.failed.append((c.key, f"{c.label}: {message}"))
                    else:
                        _record(store, c, out, force, report, env.reporter)
                    finally:
                        claim.close()
                    done_cost += c.cost
                    submit()
                    progress.advance(1, _status(report, in_flight, queue, ray, opts, started, done_cost))
                if not ready:
                    progress.advance(0, _status(report, in_flight, queue, ray, opts, started, done_cost))
        except KeyboardInterrupt:
            for ref in in_flight:
                ray.cancel(ref, force=True)  # their scratch checkpoints stay for a resumed run
            raise
        finally:
            progress.close()


def _record(store, c: Cell, out: dict, force: bool, report: ExperimentReport, reporter) -> None:
    """Write a returned record unless the store already has one (check before write)."""
    if out["key"] != c.key:
        report.failed.append((c.key, f"{c.label}: worker returned run {out['key']}"))
        return
    if force or store.load(c.key) is None:
        store.save(c.key, out["record"], out["per_user"])
        report.executed.append(c.key)
    else:
        report.complete.append(c.key)
    report.records[c.key] = store.load(c.key)
    reporter.info(f"{c.label}: finished on {out.get('host')} -> {c.key}")


def _status(report: ExperimentReport, in_flight: dict, queue: list[Cell], ray, opts: RayOptions, started: float,
            done_cost: float) -> str:
    running = min(len(in_flight), _slots(ray, opts))
    remaining_cost = sum(c.cost for c, _ in in_flight.values()) + sum(c.cost for c in queue)
    elapsed = time.perf_counter() - started
    eta = f"ETA {_fmt_s(elapsed * remaining_cost / done_cost)}" if done_cost > 0 and in_flight else "ETA ?"
    return (f"done {len(report.executed)} · running {running} · failed {len(report.failed)} · "
            f"waiting {len(in_flight) - running + len(queue)} · {eta}")


def _ray_error(exc: Exception) -> str:
    """One line for a task's failure: the cell's own exception, else why Ray gave up on it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BenchError):
        return str(cause)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"


# ---------------------------------------------------------------- tuning


def tune_on_ray(model: str, dataset: str, protocol: str, env, workers: int, opts: RayOptions, *,
                trials: int | None, timeout_s: float | None, storage: str | None, study_name: str | None,
                overrides: dict, extra_space: dict, seed: int, worker: int, change_budget: bool,
                out: Path | None) -> dict:
    """N Optuna workers as Ray tasks against one study; the driver writes the summary."""
    from bench.experiment.tuning import (
        _optuna,
        default_storage_url,
        default_study_name,
        make_storage,
        tuning_dir,
        write_summary,
    )
    from bench.experiment.workers import run_tune_worker

    if workers < 1:
        raise BenchError(f"--workers {workers}: must be >= 1")
    url = storage or default_storage_url(env.home)
    local_file = url.startswith(("journal://", "sqlite:///")) or url.endswith(".journal")
    if opts.address and local_file:
        env.reporter.info(f"storage {url}: a file; every node must reach that path (a shared filesystem), "
                          "else pass --storage postgresql://...")
    name = study_name or default_study_name(model, dataset, protocol, overrides)
    args = {"model": model, "dataset": dataset, "protocol": protocol, "trials": trials, "timeout_s": timeout_s,
            "storage": url, "study_name": name, "overrides": overrides, "extra_space": extra_space, "seed": seed,
            "change_budget": change_budget}
    optuna = _optuna()
    with ray_session(opts, env.reporter) as (ray, dashboard):
        if dashboard:
            env.reporter.info(f"Ray dashboard: {dashboard}")
        task = ray.remote(run_tune_worker).options(num_cpus=opts.cpus_per_cell, num_gpus=opts.gpus_per_cell,
                                                   max_retries=opts.max_retries, retry_exceptions=False)
        refs = [task.remote({"tune": {**args, "worker": worker + i}, "home": str(env.home),
                             "data_root": str(env.data_root), "threads": opts.cpus_per_cell})
                for i in range(workers)]
        env.reporter.info(f"study {name}: {workers} Optuna workers submitted to Ray")
        progress = env.reporter.task("trials", trials or 0)
        started, last = time.perf_counter(), 0
        errors = []
        try:
            left = list(refs)
            while left:
                ready, left = ray.wait(left, num_returns=1, timeout=opts.poll_s)
                for ref in ready:
                    try:
                        ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - reported after the others finish
                        errors.append(_ray_error(exc))
                counts = _trial_counts(optuna, make_storage(url, env.home), name)
                finished = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
                elapsed = time.perf_counter() - started
                eta = (f"ETA {_fmt_s(elapsed / finished * (trials - finished))}"
                       if trials and finished else "ETA ?")
                progress.advance(finished - last, f"complete {counts.get('COMPLETE', 0)} · pruned "
                                 f"{counts.get('PRUNED', 0)} · running {counts.get('RUNNING', 0)} · failed "
                                 f"{counts.get('FAIL', 0)} · workers left {len(left)} · {eta}")
                last = finished
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        finally:
            progress.close()
    if errors:
        raise BenchError(f"study {name}: {len(errors)} of {workers} workers failed; first: {errors[0]}")
    study = optuna.load_study(study_name=name, storage=make_storage(url, env.home))
    return write_summary(study, url, out or tuning_dir(env.home) / f"{name}.best.json")


def _trial_counts(optuna, storage, name: str) -> dict[str, int]:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # not created yet by the first worker
        return {}
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
