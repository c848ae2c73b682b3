"""Where data is read from and where everything the harness writes goes.

The data root is only ever read (it may be read-only); caches and the results store live
under a separate home directory.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_ROOT = "../shared/data"  # relative to the working directory (the repo checkout)
DEFAULT_HOME = ".bench"


def data_root(explicit: str | Path | None = None) -> Path:
    """--data-root, else $BENCH_DATA_ROOT, else ../shared/data."""
    value = explicit or os.environ.get("BENCH_DATA_ROOT") or DEFAULT_DATA_ROOT
    return Path(value).expanduser().resolve()


def bench_home(explicit: str | Path | None = None) -> Path:
    """--home, else $BENCH_HOME, else ./.bench (caches and the results store)."""
    value = explicit or os.environ.get("BENCH_HOME") or DEFAULT_HOME
    return Path(value).expanduser().resolve()


def cache_dir(home: Path) -> Path:
    return home / "cache"


def store_dir(home: Path) -> Path:
    return home / "store"
