"""Reader for ReChorus leave-one-out files (`train.csv`, `dev.csv`, `test.csv`: user, item, time).

dev/test rows also carry 99 sampled negatives; full ranking does not use them, so only the first
three columns are read. A user's sequence is all of their rows in time order; rows with the same
timestamp (dates have day resolution) keep the files' order: train, then dev, then test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.dataset import Dataset, from_sequences
from bench.data.text_segments import clean_text
from bench.data.unisrec import read_index, require
from bench.errors import BenchError

SPLIT_FILES = ("train.csv", "dev.csv", "test.csv")


def read_rechorus_rows(path: Path, rank: int) -> list[tuple[int, int, int, int, int]]:
    """-> (user, time, split rank, line number, item) so that sorting gives time order."""
    rows = []
    with open(require(path), encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:3] != ["user_id", "item_id", "time"]:
            raise BenchError(f"{path}:1: expected header 'user_id<TAB>item_id<TAB>time', got {header[:3]}")
        for lineno, line in enumerate(f, 2):
            parts = line.split("\t", 3)
            try:
                user, item, time = int(parts[0]), int(parts[1]), int(parts[2])
            except (ValueError, IndexError):
                raise BenchError(f"{path}:{lineno}: malformed row {line.strip()[:80]!r}") from None
            rows.append((user, time, rank, lineno, item))
    return rows


def read_item_text(path: Path, item_index: dict[str, int]) -> list[list[str]]:
    """`ASIN \\t text` (one string: title, category and brand run together, so one segment)."""
    texts: list[list[str]] = [[] for _ in item_index]
    with open(require(path), encoding="utf-8") as f:
        f.readline()
        for lineno, line in enumerate(f, 2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise BenchError(f"{path}:{lineno}: expected 'item<TAB>text', got {line.strip()[:80]!r}")
            if parts[0] in item_index and clean_text(parts[1]):
                texts[item_index[parts[0]] - 1] = [clean_text(parts[1])]
    return texts


def read_rechorus(folder: Path, prefix: str, name: str) -> Dataset:
    item_index = read_index(folder / f"{prefix}.item2index")  # ASIN -> id, 1-based like the csv files
    n_items = len(item_index)
    if sorted(item_index.values()) != list(range(1, n_items + 1)):
        raise BenchError(f"{folder / f'{prefix}.item2index'}: ids are not exactly 1..{n_items}")
    rows = []
    for rank, file in enumerate(SPLIT_FILES):
        rows += read_rechorus_rows(folder / file, rank)
    bad = next((r for r in rows if not 1 <= r[4] <= n_items), None)
    if bad:
        raise BenchError(f"{folder / SPLIT_FILES[bad[2]]}:{bad[3]}: item id {bad[4]} outside 1..{n_items}")
    rows.sort()
    users = sorted({r[0] for r in rows})
    seqs, stamps, start = [], [], 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or rows[end][0] != rows[start][0]:
            seqs.append(np.array([r[4] for r in rows[start:end]], dtype=np.int64))
            stamps.append(np.array([r[1] for r in rows[start:end]], dtype=np.int64))
            start = end
    item_names = sorted(item_index, key=item_index.__getitem__)
    ds = from_sequences(
        name,
        item_names,
        [str(u) for u in users],
        seqs,
        timestamps=np.concatenate(stamps),
        item_text=read_item_text(folder / f"{prefix}.text", item_index),
        item_images=[[] for _ in item_names],
    )
    ds.meta.update(
        {
            "text_segments": "one segment: ReChorus text (title category brand, unseparated)",
            "items_without_text": sum(not t for t in ds.item_text),
            "image_sources": {"none": n_items},
            "time_range": [int(ds.timestamps.min()), int(ds.timestamps.max())],
        }
    )
    return ds
