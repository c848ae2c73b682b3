"""Progress display: rich bars on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger("bench")


class Reporter:
    """`task(name, total)` -> handle with advance(); `info(msg)` for one-off lines."""

    def __init__(self, interactive: bool | None = None, log_every_s: float = 10.0):
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.log_every_s = log_every_s
        self.console = Console(stderr=True)
        self._progress: Progress | None = None

    def __enter__(self) -> Reporter:
        if self.interactive:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"), console=self.console, transient=True,
            )
            self._progress.start()
        elif not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.stop()

    def info(self, msg: str) -> None:
        if self._progress:
            self._progress.console.print(msg)
        else:
            log.info(msg)

    def task(self, name: str, total: int) -> Task:
        return Task(self, name, total)


class Task:
    def __init__(self, reporter: Reporter, name: str, total: int):
        self.r, self.name, self.total, self.done = reporter, name, total, 0
        self._last_log = time.monotonic()
        self._id = reporter._progress.add_task(name, total=total, status="") if reporter._progress else None

    def advance(self, n: int = 1, status: str = "") -> None:
        self.done += n
        if self._id is not None:
            self.r._progress.update(self._id, advance=n, status=status)
        elif time.monotonic() - self._last_log >= self.r.log_every_s:
            self._last_log = time.monotonic()
            log.info("%s: %d/%d %s", self.name, self.done, self.total, status)

    def close(self) -> None:
        if self._id is not None:
            self.r._progress.remove_task(self._id)


SILENT = Reporter(interactive=False, log_every_s=float("inf"))
