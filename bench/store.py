"""The results store: one folder per run, keyed by the hash of its fully resolved spec.

A record is complete only when record.json exists and both its own checksum and the checksum
of its per-user arrays verify; both files are written atomically, arrays first. A per-run file
lock (released by the OS if the process dies) keeps two processes off the same run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write, write_json
from bench.hashing import canonical_json


class RunBusy(Exception):
    """Another process holds this run's lock."""


class ResultStore:
    def __init__(self, root: Path):
        self.root = root

    def run_dir(self, run_hash: str) -> Path:
        return self.root / "runs" / run_hash

    def stage_dir(self, stage_hash: str) -> Path:
        return self.root / "stages" / stage_hash

    def load(self, run_hash: str) -> dict | None:
        """The verified record, or None if absent, partial or corrupt."""
        folder = self.run_dir(run_hash)
        try:
            record = json.loads((folder / "record.json").read_text())
            arrays = (folder / "per_user.npz").read_bytes()
        except (OSError, ValueError):
            return None
        claimed = record.pop("checksum", None)
        if claimed != _digest(canonical_json(record).encode()) or record.get("per_user_sha256") != _digest(arrays):
            return None
        return record

    def is_complete(self, run_hash: str) -> bool:
        return self.load(run_hash) is not None

    def per_user(self, run_hash: str) -> dict[str, dict[str, np.ndarray]]:
        """{'valid': {metric: array}, 'test': {...}} from a complete run."""
        with np.load(self.run_dir(run_hash) / "per_user.npz") as z:
            out: dict[str, dict[str, np.ndarray]] = {}
            for key in z.files:
                split, _, metric = key.partition("/")
                out.setdefault(split, {})[metric] = z[key]
        return out

    def save(self, run_hash: str, record: dict, per_user: dict[str, dict[str, np.ndarray]]) -> None:
        folder = self.run_dir(run_hash)
        buf = io.BytesIO()
        np.savez_compressed(buf, **{f"{split}/{m}": v for split, d in per_user.items() for m, v in d.items()})
        data = buf.getvalue()
        atomic_write(folder / "per_user.npz", lambda f: f.write(data))
        record = {**record, "per_user_sha256": _digest(data)}
        record = json.loads(canonical_json(record))  # normalise types so the checksum verifies on reload
        write_json(folder / "record.json", {**record, "checksum": _digest(canonical_json(record).encode())})

    def records(self) -> Iterator[tuple[str, dict]]:
        runs = self.root / "runs"
        for folder in sorted(runs.iterdir()) if runs.exists() else []:
            record = self.load(folder.name)
            if record is not None:
                yield folder.name, record

    @contextlib.contextmanager
    def claim(self, folder: Path, wait: bool = False) -> Iterator[None]:
        """Exclusive lock on a run or stage folder: raises RunBusy if held, or waits with `wait`."""
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunBusy(str(folder)) from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            os.close(fd)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
