"""Progress reporting for long encodes: a rich bar on a terminal, periodic log lines otherwise
(so CI logs and redirected output get a few readable lines instead of carriage-return noise)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, description: str, every_seconds: float = 10.0, enabled: bool = True):
        self.total, self.description, self.done = total, description, 0
        self.every, self.start, self.last_line = every_seconds, time.perf_counter(), time.perf_counter()
        self.bar = None
        if enabled and total > 0 and sys.stderr.isatty():
            from rich.errors import LiveError
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(transient=True)
            try:
                self.bar.start()
                self.task = self.bar.add_task(description, total=total)
            except LiveError:  # inside `bench run`, whose own display is live: log lines instead
                self.bar = None
        self.enabled = enabled

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
        elif self.enabled and time.perf_counter() - self.last_line >= self.every:
            self.last_line = time.perf_counter()
            self.log_line()

    def log_line(self) -> None:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        print(
            f"{self.description}: {self.done}/{self.total} ({rate:.0f}/s, {elapsed:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.enabled and self.total > 0:
            self.log_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
