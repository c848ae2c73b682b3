"""Progress reporting for long encodes: a rich bar on a terminal, periodic log lines otherwise
(so CI logs and redirected output get a few readable lines instead of carriage-return noise).

The bar counts units of work (e.g. tokens for a text encode) and, when given `items`, also the
items done: the ETA is the remaining work at the rate of the work done so far, so it stays honest
when items differ in cost (long strings last)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(
        self,
        total: int,
        description: str,
        every_seconds: float = 10.0,
        enabled: bool = True,
        unit: str = "items",
        items: int | None = None,
    ):
        self.total, self.description, self.done = total, description, 0
        self.unit, self.items, self.items_done = unit, items, 0
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

    def advance(self, n: int, items: int = 0) -> None:
        self.done += n
        self.items_done += items
        if self.bar is not None:
            self.bar.update(self.task, advance=n)
        elif self.enabled and time.perf_counter() - self.last_line >= self.every:
            self.last_line = time.perf_counter()
            self.log_line()

    def eta_seconds(self) -> float | None:
        """Remaining work at the rate of the work done so far (None before any is done)."""
        elapsed = time.perf_counter() - self.start
        if self.done <= 0 or elapsed <= 0:
            return None
        return (self.total - self.done) * elapsed / self.done

    def log_line(self) -> None:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        items = f"{self.items_done}/{self.items} items, " if self.items is not None else ""
        eta = self.eta_seconds()
        left = f", ETA {eta:.0f}s" if eta is not None and self.done < self.total else ""
        print(
            f"{self.description}: {items}{self.done}/{self.total} {self.unit} ({rate:.0f} {self.unit}/s, "
            f"{elapsed:.0f}s{left})",
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
