"""One Experiment: a list of cells (a run spec each, with a label) -> records in the store.

`bench run` (an ad-hoc suite: its datasets x models x seeds), `bench suite run` and `bench tune
--seeds` each build one and call `run`: here, one cell after another, or through an executor
such as bench/experiment/executors.RayOptions (one Ray task per cell; a local cluster of --jobs N,
or --address), which the caller passes in, so this module knows no executor. A cell whose record
is stored is not run again (unless force); one another process holds is skipped as busy (or,
with busy="wait", waited for after the others); one that fails is recorded and the others go on
(or, with fail_fast, the first failure is raised as it is). `shard(k, n)` keeps cells i with
i % n == k - 1, so machines writing to one store split the work.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

from bench.errors import BenchError


@dataclass
class Cell:
    """One run: its spec, its run hash in the driver's store (filled when run), a label for messages."""

    spec: Any  # RunSpec
    key: str = ""
    label: str = ""
    cost: float = 0.0  # expected seconds (Ray: the order of submission and the ETA)
    meta: dict = field(default_factory=dict)  # e.g. the suite cell it stands for


@dataclass
class ExperimentReport:
    """What happened to each cell (run hashes), with the records of the complete ones."""

    executed: list[str] = field(default_factory=list)
    complete: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run hash, "label: message")
    seconds: float = 0.0
    records: dict[str, dict] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # every cell's run hash, in cell order

    def ordered_records(self) -> list[dict]:
        """The records in cell order (a cell without one, e.g. failed or busy, left out)."""
        return [self.records[k] for k in self.keys if k in self.records]


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 1, 1
    k, sep, n = text.partition("/")
    try:
        k_i, n_i = int(k), int(n)
    except ValueError:
        k_i, n_i = 0, 0
    if not sep or n_i < 1 or not 1 <= k_i <= n_i:
        raise BenchError(f"--shard {text!r}: expected k/N with 1 <= k <= N, e.g. 2/4")
    return k_i, n_i


def shard(items: list, k: int, n: int) -> list:
    """The i-th items of the list with i % n == k - 1 (k is 1-based)."""
    return [c for i, c in enumerate(items) if i % n == k - 1]


@dataclass
class Experiment:
    cells: list[Cell]
    name: str = ""  # when given, the first line of a run says "<name>: N cells"
    tag: str = ""  # before each cell's label in messages, e.g. "[cpu budget] "
    announce_complete: bool = True  # a line for each cell already complete (a suite skips them quietly)

    @classmethod
    def of_specs(cls, specs: list, **kwargs) -> Experiment:
        return cls([Cell(s, label=f"{s.model} / {s.dataset} / seed {s.seed}") for s in specs], **kwargs)

    @classmethod
    def of_suite(cls, suite, budget: str = "full", shard_spec: tuple[int, int] = (1, 1),
                 models: list[str] | None = None, datasets: list[str] | None = None,
                 variations: list[str] | None = None) -> Experiment:
        """A suite's cells at a budget (of the named models / datasets / variations when given),
        this shard's only: sharded before specs are built, so a shard builds (and checks) its own."""
        from bench.experiment.suites import budget_label, select

        todo = shard(select(suite, budget, models, datasets, variations), *shard_spec)
        label = budget_label(budget)
        return cls([Cell(c.spec(suite.protocol), label=c.describe(), meta={"cell": c}) for c in todo],
                   name=f"suite {suite.name} ({label}), shard {shard_spec[0]}/{shard_spec[1]}",
                   tag=f"[{label}] ", announce_complete=False)

    def shard(self, k: int, n: int) -> Experiment:
        return replace(self, cells=shard(self.cells, k, n))

    def status(self, env) -> list[tuple[Cell, str, bool]]:
        """(cell, run hash, complete?) for each cell; reads the store only."""
        from bench.engine.runner import run_hash

        out = []
        for c in self.cells:
            c.key = c.key or run_hash(c.spec, env)
            out.append((c, c.key, env.store.is_complete(c.key)))
        return out

    def run(self, env, executor=None, force: bool = False, busy: str = "skip",
            fail_fast: bool = False) -> ExperimentReport:
        """Run the cells whose records are missing (all of them with force) into env's store.

        executor: None (here, one cell after another) or an object with `where` (words) and
        `run(cells, env, force, report)`, e.g. executors.RayOptions (one Ray task per cell).
        busy: "skip" a cell another process holds (reported), or "wait" for it after the others.
        fail_fast: raise the first failure (an executor's: after the others, one line) instead of
        recording it."""
        if executor is not None and not callable(getattr(executor, "run", None)):
            raise TypeError(f"executor {executor!r}: None or an object with run(cells, env, force, report)")
        if busy not in ("skip", "wait"):
            raise ValueError(f"busy={busy!r}: skip or wait")
        cells = [replace(c, label=self.tag + c.label) for c in self.cells]
        started = time.perf_counter()
        report = ExperimentReport()
        if executor is not None:
            if self.name:
                env.reporter.info(f"{self.name}: {len(cells)} cells on {executor.where}")
            executor.run(cells, env, force, report)
            if fail_fast and report.failed:
                raise BenchError(f"{len(report.failed)} of {len(cells)} runs failed; first: {report.failed[0][1]}")
        else:
            if self.name:  # (bench run says nothing first: a bad dataset name is its only line)
                env.reporter.info(f"{self.name}: {len(cells)} cells")
            _run_here(cells, env, force, report, busy == "wait", fail_fast, self.announce_complete)
        if busy == "wait":
            _wait_for_busy([c for c in cells if c.key in report.busy], env, report)
        report.keys = [c.key for c in cells]
        report.seconds = time.perf_counter() - started
        return report


def _run_here(cells: list[Cell], env, force: bool, report: ExperimentReport, will_wait: bool, fail_fast: bool,
              announce_complete: bool) -> None:
    from bench.engine.runner import execute, run_hash
    from bench.engine.store import RunBusy

    for c in cells:
        c.key = c.key or run_hash(c.spec, env)
        try:
            key, record, ran = execute(c.spec, env, force=force)
        except RunBusy:
            then = "will wait for it" if will_wait else "skipped"
            env.reporter.info(f"{c.label}: running in another process, {then}")
            report.busy.append(c.key)
            continue
        except Exception as exc:  # noqa: BLE001 - one broken cell must not stop the others
            if fail_fast:
                raise
            message = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
            env.reporter.info(f"{c.label}: FAILED: {message}")
            if not isinstance(exc, BenchError):  # a bug, not bad input: where it happened
                env.reporter.info(traceback.format_exc())
            report.failed.append((c.key, f"{c.label}: {message}"))
            continue
        report.records[key] = record
        (report.executed if ran else report.complete).append(key)
        if ran or announce_complete:
            env.reporter.info(f"{c.label}: {'finished' if ran else 'already complete'} -> {key}")


def _wait_for_busy(cells: list[Cell], env, report: ExperimentReport) -> None:
    """Block on each cell another process held, then take its record (running it if that process died)."""
    from bench.engine.runner import execute

    for c in cells:
        key, record, ran = execute(c.spec, env, wait=True)
        report.busy.remove(c.key)
        report.records[key] = record
        (report.executed if ran else report.complete).append(key)
        env.reporter.info(f"{c.label}: {'finished' if ran else 'completed elsewhere'} -> {key}")
