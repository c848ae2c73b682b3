"""Atomic file writes: write to a temp file in the same folder, fsync, rename.

Temp files are named .<target>.<host>.<pid>.<random>.tmp, so one left by a killed process is
recognised and removed by the next write of the same target (or by `sweep_temp_files`). A write
that fails for lack of space or permission raises StorageError naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bench.errors import StorageError

STALE_S = 24 * 3600  # another machine's temp file (shared or copied folder) older than this is dead
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_TEMP = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")
# errors of the storage itself (as opposed to errors raised by the caller's write function)
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """A temp file of an atomic write whose writer is gone (killed between create and rename)."""
    m = _TEMP.match(path.name)
    if m is None:
        return False
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except OSError:
        return False
    if m["host"] == _HOST:
        return int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
    return age > STALE_S


def sweep_temp_files(folder: Path, target: str | None = None) -> list[Path]:
    """Remove stale temp files in `folder` (only those of `target` when given); never fails."""
    removed = []
    try:
        candidates = list(folder.glob(f".{target}.*.tmp" if target else ".*.tmp"))
    except OSError:
        return removed
    for p in candidates:
        if is_stale_temp(p):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_temp_files(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            raise StorageError(f"cannot write {path}: {what}; nothing was written there", exc.errno) from None
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode()))
