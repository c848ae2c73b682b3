"""Reader for UniSRec/RecBole atomic files (`.inter` leave-one-out rows, `.item2index`, `.text`).

Each row is a window (history truncated to 50, target); rows of one user are consecutive
prefixes, so the full ordered sequence is the first item of the shortest row followed by every
row's target in order. Each row is then checked against the rebuilt sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.dataset import Dataset, from_sequences
from bench.errors import BenchError


def require(path: Path) -> Path:
    if not path.is_file():
        raise BenchError(f"missing data file: {path}")
    return path


def read_index(path: Path) -> dict[str, int]:
    """`key <TAB> int` lines -> {key: int}: a one-to-one map, so a key or an id given twice is an
    error (it would silently hand one item's text and image to another)."""
    out: dict[str, int] = {}
    line_of_id: dict[int, int] = {}
    with open(require(path), encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[1].strip().lstrip("-").isdigit():
                raise BenchError(f"{path}:{lineno}: expected 'key<TAB>integer', got {line.strip()[:80]!r}")
            key, value = parts[0], int(parts[1])
            if key in out:
                raise BenchError(f"{path}:{lineno}: key {key[:80]!r} listed twice (first with id {out[key]})")
            if value in line_of_id:
                raise BenchError(f"{path}:{lineno}: id {value} given twice (first on line {line_of_id[value]})")
            out[key], line_of_id[value] = value, lineno
    if not out:
        raise BenchError(f"{path}: file is empty")
    return out


def read_inter(path: Path, n_items: int) -> dict[int, list[tuple[list[int], int]]]:
    """`user \\t history \\t target` rows (with a header) -> {user: [(history, target), ...]}."""
    rows: dict[int, list[tuple[list[int], int]]] = {}
    with open(require(path), encoding="utf-8") as f:
        header = f.readline()
        if not header.startswith("user_id"):
            raise BenchError(f"{path}:1: expected a 'user_id:token ...' header, got {header.strip()[:80]!r}")
        for lineno, line in enumerate(f, 2):
            parts = line.rstrip("\n").split("\t")
            try:
                if len(parts) != 3:
                    raise ValueError("expected 3 tab-separated fields")
                history, target = [int(x) for x in parts[1].split()], int(parts[2])
                if not history:
                    raise ValueError("empty history")
            except ValueError as exc:
                raise BenchError(f"{path}:{lineno}: malformed row ({exc}): {line.strip()[:80]!r}") from None
            if min(history + [target]) < 0 or max(history + [target]) >= n_items:
                raise BenchError(f"{path}:{lineno}: item id outside 0..{n_items - 1}")
            rows.setdefault(int(parts[0]), []).append((history, target))
    return rows


def rebuild_sequence(rows: list[tuple[list[int], int]]) -> list[int]:
    """Rows in chronological order of their target -> the full sequence, each row checked."""
    seq = [rows[0][0][0]] + [target for _, target in rows]
    for end, (history, _) in enumerate(rows, 1):
        if seq[max(0, end - len(history)) : end] != history:
            raise ValueError(f"row with target position {end} does not extend the previous rows")
    return seq


def read_text(path: Path, item_index: dict[str, int]) -> list[list[str]]:
    texts: list[list[str]] = [[] for _ in item_index]
    with open(require(path), encoding="utf-8") as f:
        f.readline()  # header
        for lineno, line in enumerate(f, 2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise BenchError(f"{path}:{lineno}: expected 'item<TAB>text', got {line.strip()[:80]!r}")
            if parts[0] in item_index:
                texts[item_index[parts[0]]] = [parts[1].strip()]
    return texts


def read_unisrec(folder: Path, prefix: str, name: str) -> Dataset:
    item_index = read_index(folder / f"{prefix}.item2index")
    user_index = read_index(folder / f"{prefix}.user2index")
    n_items = len(item_index)
    for index, kind in ((item_index, "item2index"), (user_index, "user2index")):
        if sorted(index.values()) != list(range(len(index))):
            raise BenchError(f"{folder / f'{prefix}.{kind}'}: ids are not exactly 0..{len(index) - 1}")
    splits = {part: read_inter(folder / f"{prefix}.{part}.inter", n_items) for part in ("train", "valid", "test")}
    item_names = sorted(item_index, key=item_index.__getitem__)
    user_names = sorted(user_index, key=user_index.__getitem__)
    seqs = []
    for u in range(len(user_names)):
        # the train file lists a user's prefixes newest first
        rows = splits["train"].get(u, [])[::-1] + splits["valid"].get(u, []) + splits["test"].get(u, [])
        if not splits["test"].get(u):
            raise BenchError(f"{folder / f'{prefix}.test.inter'}: no row for user {u} ({user_names[u]})")
        try:
            seqs.append(np.asarray(rebuild_sequence(rows), dtype=np.int64) + 1)  # shift: 0 is padding
        except ValueError as exc:
            raise BenchError(f"{folder}/{prefix}.*.inter: user {u} ({user_names[u]}): {exc}") from None
    text_path = folder / f"{prefix}.text"
    texts = read_text(text_path, item_index) if text_path.exists() else None
    return from_sequences(name, item_names, user_names, seqs, item_text=texts)
