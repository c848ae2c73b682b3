"""The store's records as the report sees them: the complete records read once (RecordsEnv), a
record's run hash recomputed from its own fields, and the per-run facts a page or `bench runs`
shows (final stage, cap flag)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.engine.spec import hashed_spec
from bench.engine.store import ResultStore
from bench.errors import BenchError
from bench.hashing import hash_obj


class RecordsEnv:
    """A store and its complete records, read once. The report needs nothing else (tables find a
    cell's runs by its spec: bench.report.tables.suite_records), so a site is rebuilt from a
    clone's committed records without the data."""

    def __init__(self, store: ResultStore):
        self.store = store
        self.records = dict(store.records())


def record_hash(record: dict) -> str:
    """The run hash as `bench.engine.runner.run_hash` computes it, from the record's own fields."""
    return hash_obj({"spec": hashed_spec(record["spec"]), "dataset": record["dataset"]["content_hash"],
                     "protocol": record["protocol"]})


def finished_at(record: dict) -> str:
    return record.get("provenance", {}).get("finished_at", "")


def find_run(store: ResultStore, prefix: str) -> tuple[str, dict]:
    """The complete record whose hash starts with `prefix` (a unique prefix is enough)."""
    prefix = prefix.strip().lower()
    runs = store.root / "runs"
    matches = sorted(p.name for p in runs.iterdir() if p.name.startswith(prefix)) if runs.exists() and prefix else []
    if not matches:
        raise BenchError(f"no run {prefix!r} in {store.root}")
    if len(matches) > 1:
        raise BenchError(f"run prefix {prefix!r} is ambiguous: {', '.join(matches[:8])}")
    record = store.load(matches[0])
    if record is None:
        raise BenchError(f"run {matches[0]} in {store.root} is incomplete or its checksum does not verify")
    return matches[0], record


# ---------------------------------------------------------------- per-run facts


def final_stage(record: dict) -> str | None:
    history = record.get("history") or {}
    if not history:
        return None
    from bench.report.tables import final_stage as stage_of

    return stage_of(record["spec"]["model"], history)


@dataclass
class StopInfo:
    stage: str
    epochs_run: int
    epochs_cap: int
    patience: int
    best_epoch: int  # 0-based, as the trainer counts
    capped: bool  # the final stage stopped at its epoch cap while still improving
    capped_stages: list[str]  # every stage that did (e.g. a pre-training too)


def stop_info(record: dict) -> StopInfo | None:
    """Why the final stage stopped, or None for runs without training (e.g. Pop, zero-shot).

    The trainer stops early once `patience` epochs pass without a better validation value; a run
    that used every epoch while its best was within the patience window of the cap was stopped by
    the cap (it may still have been improving). The tables' definition (bench.report.tables.capped_stages)
    decides, so the site, `bench runs` and `bench table` flag the same runs."""
    from bench.report.tables import capped_stages

    stage = final_stage(record)
    if stage is None or record.get("best_epoch") is None:
        return None
    cfg = record["spec"]["trainer"].get(stage, {})
    run = len(record["history"][stage])
    capped = capped_stages(record)
    return StopInfo(stage, run, int(cfg.get("epochs", 0)), int(cfg.get("patience", 0)), int(record["best_epoch"]),
                    capped=stage in capped, capped_stages=capped)


def stopped_by_cap(record: dict) -> bool:
    info = stop_info(record)
    return bool(info and info.capped)


def run_row(run_hash: str, record: dict, metrics: tuple[str, ...] = ("Recall@20", "NDCG@10")) -> dict[str, Any]:
    """One line of `bench runs ls` and of the site's run list."""
    spec = record["spec"]
    info = stop_info(record)
    test = record.get("metrics", {}).get("test", {})
    return {
        "hash": run_hash, "label": record.get("label", spec["model"]), "model": spec["model"],
        "dataset": spec["dataset"], "protocol": spec["protocol"], "seed": spec["seed"],
        **{m: test.get(m) for m in metrics},
        "best_epoch": None if info is None else info.best_epoch + 1,  # 1-based, as the tables count
        "epochs": None if info is None else f"{info.epochs_run}/{info.epochs_cap}",
        "capped": bool(info and info.capped),
        "finished": finished_at(record),
    }


def open_store(home: Path, store: Path | None = None) -> ResultStore:
    """<home>/store, or `store` itself (a folder holding runs/, e.g. records committed to a repo)."""
    from bench.paths import store_dir

    root = Path(store).expanduser().resolve() if store else store_dir(home)
    if not (root / "runs").is_dir():
        where = "--store to a folder with runs/" if store else "--home or $BENCH_HOME to a folder with store/runs/"
        raise BenchError(f"no results store at {root} (set {where})")
    return ResultStore(root)
