"""The one console every command prints to, and the comma-separated name lists every option takes: its own module so that subcommand modules need not import
bench.cli.main (which imports and mounts them) just to print."""

from __future__ import annotations

import sys

from rich.console import Console

# a fixed width when piped, so captured output (tests, logs) does not wrap at 80 columns
console = Console(width=None if sys.stdout.isatty() else 160)


def split_names(text: str | None) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the comma-separated names every command option takes."""
    return [x.strip() for x in (text or "").split(",") if x.strip()]
