"""The results store: one folder per run, keyed by the hash of its fully resolved spec.

A record is complete only when record.json exists and both its own checksum and the checksum
of its per-user arrays verify; both files are written atomically, arrays first. A per-run file
lock (released by the OS if the process dies) keeps two processes off the same run.

A pre-trained stage is one sealed file (bench.sealed: weights and fit result, checksummed, no
pickle); a damaged one is discarded with a warning and the stage is trained again.
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
import torch

from bench import sealed
from bench.atomic import atomic_write, sweep_temp_files, write_json
from bench.errors import BenchError, DamagedFile, warn
from bench.hashing import canonical_json

STAGE_FILE = "stage.safetensors"
LEGACY_STAGE_FILES = ("weights.pt", "result.pt")  # before sealed files: read only to migrate them
FIT_RESULT_KEYS = {"best_epoch", "best_value", "history"}


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
        if not (folder / "record.json").exists():
            return None  # not run, or interrupted before its record: nothing to say
        try:
            record = json.loads((folder / "record.json").read_bytes())
            arrays = (folder / "per_user.npz").read_bytes()
            claimed = record.pop("checksum", None)
            if claimed != _digest(canonical_json(record).encode()):
                raise ValueError("record checksum mismatch")
            if record.get("per_user_sha256") != _digest(arrays):
                raise ValueError("per_user.npz does not match the record's checksum")
        except (OSError, ValueError, AttributeError) as exc:
            _warn_once(folder, f"run {folder}: damaged record ({type(exc).__name__}: {str(exc)[:80]}); "
                               "treated as not run, so it runs again")
            return None
        return record

    def is_complete(self, run_hash: str) -> bool:
        return self.load(run_hash) is not None

    def per_user(self, run_hash: str) -> dict[str, dict[str, np.ndarray]]:
        """{'valid': {metric: array}, 'test': {...}} from a complete run (arrays checked against
        the record's checksum; no pickled objects are ever read)."""
        record = self.load(run_hash)
        path = self.run_dir(run_hash) / "per_user.npz"
        try:
            data = path.read_bytes()
            if record is None or record.get("per_user_sha256") != _digest(data):
                raise ValueError("not a complete run, or its arrays do not match the record's checksum")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                out: dict[str, dict[str, np.ndarray]] = {}
                for key in z.files:
                    split, _, metric = key.partition("/")
                    out.setdefault(split, {})[metric] = z[key]
        except (OSError, ValueError) as exc:
            raise BenchError(f"{path}: cannot read per-user metrics ({exc}); run the run again with "
                             f"--force") from None
        return out

    def tidy(self, run_hash: str) -> None:
        """Remove what a process killed after completing the run left behind (resume checkpoints,
        temp files), if nobody holds the run and the folder is writable; never fails."""
        folder = self.run_dir(run_hash)
        leftovers = [*folder.glob("*.ckpt"), *folder.glob(".*.tmp")]
        if not leftovers:
            return
        try:
            with self.claim(folder):
                for p in folder.glob("*.ckpt"):
                    p.unlink(missing_ok=True)
                sweep_temp_files(folder)
        except (RunBusy, OSError):
            pass

    def load_stage(self, folder: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(weights, fit result) of a stored stage, verified; None if absent or damaged (warned,
        removed). Call while holding the stage's claim. Stages stored before sealed files
        (weights.pt / result.pt) are read with torch's weights-only loader and migrated."""
        path = folder / STAGE_FILE
        legacy = [folder / name for name in LEGACY_STAGE_FILES]
        try:
            if path.exists():
                tree = sealed.read(path, "stage")
                found = _check_stage(tree.get("weights") if isinstance(tree, dict) else None,
                                     tree.get("result") if isinstance(tree, dict) else None, path)
            elif all(p.exists() for p in legacy):
                path = legacy[0]
                try:
                    weights = torch.load(legacy[0], map_location="cpu", weights_only=True)
                    result = torch.load(legacy[1], map_location="cpu", weights_only=True)
                except Exception as exc:  # noqa: BLE001 - unpickling refused or file damaged
                    raise DamagedFile(path, f"unreadable stored stage ({type(exc).__name__})") from None
                found = _check_stage(weights, result, path)
                try:
                    self.save_stage(folder, *found)
                    for p in legacy:
                        p.unlink()
                except (BenchError, OSError):
                    pass  # a read-only store: keep using the older files
            else:
                return None
        except (DamagedFile, OSError) as exc:
            warn(f"{exc}; discarded, the stage is trained again")
            for p in (folder / STAGE_FILE, *legacy):
                with contextlib.suppress(OSError):
                    p.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):  # left by a kill between saving the stage and removing it
            (folder / "resume.ckpt").unlink(missing_ok=True)
        sweep_temp_files(folder)
        return found

    def save_stage(self, folder: Path, weights: dict[str, torch.Tensor], result: dict) -> None:
        sealed.write(folder / STAGE_FILE, {"weights": weights, "result": result}, "stage")

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


_warned: set[Path] = set()


def _warn_once(path: Path, message: str) -> None:
    if path not in _warned:
        _warned.add(path)
        warn(message)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_stage(weights, result, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    ok = (isinstance(weights, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in weights.items())
          and isinstance(result, dict) and set(result) == FIT_RESULT_KEYS
          and type(result["best_epoch"]) is int and isinstance(result["best_value"], float)
          and isinstance(result["history"], list) and all(isinstance(h, dict) for h in result["history"]))
    if not ok:
        raise DamagedFile(path, "stored stage has an unexpected structure")
    return weights, result
