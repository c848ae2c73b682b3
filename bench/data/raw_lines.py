"""Streaming, line-numbered reading of (gzipped) JSON-lines files with one-line error messages.

Amazon review dumps are large, so they are read line by line; a corrupt line or a truncated
download is reported with the file and line number, or skipped and counted if asked.
"""

from __future__ import annotations

import ast
import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError


@dataclass
class LineStats:
    read: int = 0
    skipped: int = 0
    first_skipped: str = ""  # "file:line" of the first skipped line, for the report


def open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
    )


PROGRESS_EVERY = 100_000  # lines between progress callbacks


def fraction_read(f, size: int) -> float:
    """How far through the file (on-disk bytes, compressed for .gz) a text stream has read."""
    raw = getattr(f.buffer, "fileobj", None) or f.buffer  # GzipFile -> the underlying file
    return raw.tell() / max(size, 1)


def _lines(f, path: Path, progress: Callable[[float], None] | None) -> Iterator[tuple[int, str]]:
    size = path.stat().st_size
    for lineno, line in enumerate(f, 1):
        if progress is not None and lineno % PROGRESS_EVERY == 0:
            progress(fraction_read(f, size))
        yield lineno, line
    if progress is not None:
        progress(1.0)


def parse_record(line: str, allow_python_literal: bool) -> dict:
    """One JSON object; Amazon 2014 metadata lines are Python literals (single quotes)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        if not allow_python_literal:
            raise
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise ValueError(f"neither JSON nor a Python literal ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object, got {type(obj).__name__}")
    return obj


def read_records(
    path: Path,
    stats: LineStats,
    skip_bad_lines: bool = False,
    allow_python_literal: bool = False,
    wanted: Callable[[str], bool] | None = None,
    progress: Callable[[float], None] | None = None,
) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) for each non-blank line; `wanted` may reject a raw line before
    it is parsed (parsing Python literals is slow and a category's metadata file is large)."""
    lineno = 0
    try:
        with open_text(path) as f:
            for lineno, line in _lines(f, path, progress):
                if not line.strip() or (wanted is not None and not wanted(line)):
                    continue
                try:
                    record = parse_record(line, allow_python_literal)
                except ValueError as exc:  # JSONDecodeError is a ValueError
                    if not skip_bad_lines:
                        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                        raise BenchError(
                            f"{path}:{lineno}: bad record ({msg}); fix the file or pass skip_bad_lines to skip such lines"
                        ) from None
                    stats.skipped += 1
                    stats.first_skipped = stats.first_skipped or f"{path}:{lineno}"
                    continue
                stats.read += 1
                yield lineno, record
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BenchError(
            f"{path}:{lineno + 1}: truncated or corrupt gzip file ({exc}); download it again"
        ) from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}:{lineno + 1}: not UTF-8 text ({exc.reason})") from None


def read_csv_rows(
    path: Path, stats: LineStats, progress: Callable[[float], None] | None = None
) -> Iterator[tuple[int, list[str]]]:
    """Comma-separated rows of a ratings file (Amazon's ratings-only files use no quoting);
    the caller judges each row, so it can report or skip it with its line number."""
    lineno = 0
    try:
        with open_text(path) as f:
            for lineno, line in _lines(f, path, progress):
                if line.strip():
                    stats.read += 1
                    yield lineno, line.rstrip("\r\n").split(",")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BenchError(
            f"{path}:{lineno + 1}: truncated or corrupt gzip file ({exc}); download it again"
        ) from None
