"""Reader for datasets in RecBole's atomic format (https://recbole.io/atomic_files.html).

A folder holding `<name>.inter` (tab-separated, first line `field:type` headers, e.g.
`user_id:token	item_id:token	rating:float	timestamp:float`) and optionally `<name>.item`
(`item_id:token` plus text fields such as `title:token_seq`, `categories:token_seq`, `brand:token`).
Rows become each user's sequence ordered by timestamp (ties, or no timestamp column: file
order); every row is kept, as RecBole does, unless k_core > 1 asks for filtering. Item text: the
`.item` file's token and token_seq fields other than ids, in column order, one segment each
(a `description` field is split into sentences).
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from bench.data.amazon_raw import sequences_of
from bench.data.dataset import Dataset, from_sequences
from bench.data.text_segments import MAX_SEGMENTS, assemble_segments, clean_text, split_sentences
from bench.errors import BenchError

TYPES = ("token", "token_seq", "float", "float_seq")
USER, ITEM, TIME = "user_id", "item_id", "timestamp"  # RecBole's default USER_ID_FIELD etc.


def find_atomic_files(folder: Path) -> tuple[Path, Path | None]:
    """(<name>.inter, <name>.item or None): the folder's name first, else its only .inter file."""
    if not folder.is_dir():
        raise BenchError(f"atomic dataset folder not found: {folder}")
    inter = folder / f"{folder.name}.inter"
    if not inter.is_file():
        found = sorted(folder.glob("*.inter"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise BenchError(f"{folder}: expected {folder.name}.inter or exactly one *.inter file (found {names})")
        inter = found[0]
    item = inter.with_suffix(".item")
    return inter, item if item.is_file() else None


def read_table(path: Path) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """(header as (field, type) pairs, rows as strings); fields are tab-separated, unquoted."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False,
                         na_filter=False, encoding="utf-8")
    except pd.errors.ParserError as exc:
        raise BenchError(f"{path}: not a tab-separated atomic file ({str(exc).strip()})") from None
    except pd.errors.EmptyDataError:
        raise BenchError(f"{path}: empty file (an atomic file starts with a field:type header)") from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not UTF-8 text ({exc.reason})") from None
    header = []
    for column in df.columns:
        field, _, kind = str(column).rpartition(":")
        if not field or kind not in TYPES:
            raise BenchError(f"{path}: header column {column!r} is not field:type with type one of "
                             f"{', '.join(TYPES)} (e.g. user_id:token)")
        header.append((field, kind))
    return header, df


def column(path: Path, header: list[tuple[str, str]], field: str, kinds: tuple[str, ...]) -> int:
    fields = [f for f, _ in header]
    if field not in fields:
        raise BenchError(f"{path}: no {field} column (header: {', '.join(f'{f}:{k}' for f, k in header)})")
    index = fields.index(field)
    if header[index][1] not in kinds:
        raise BenchError(f"{path}: column {field} has type {header[index][1]}, expected {' or '.join(kinds)}")
    return index


def item_texts(path: Path, item_names: list[str], text_fields: list[str] | None) -> tuple[list[list[str]], list[str]]:
    header, df = read_table(path)
    id_col = column(path, header, ITEM, ("token",))
    if text_fields is None:
        text_fields = [f for f, k in header if k in ("token", "token_seq") and f != ITEM and not f.endswith("_id")]
    for field in text_fields:
        column(path, header, field, ("token", "token_seq"))
    by_item = {}
    columns = [df.columns[[f for f, _ in header].index(f)] for f in text_fields]
    ids = df[df.columns[id_col]]
    for row, item in enumerate(ids):
        fields, sentences = [], []
        for field, col in zip(text_fields, columns):
            value = df[col].iat[row]
            if field == "description":
                sentences += split_sentences(value)
            else:
                fields.append(clean_text(value))
        by_item[item] = assemble_segments(fields, sentences, MAX_SEGMENTS)
    return [by_item.get(item, []) for item in item_names], text_fields


def read_recbole_atomic(folder: Path, name: str, k_core_min: int = 1, text_fields: list[str] | None = None) -> Dataset:
    inter, item_file = find_atomic_files(folder)
    header, df = read_table(inter)
    u = df[df.columns[column(inter, header, USER, ("token",))]].to_numpy()
    i = df[df.columns[column(inter, header, ITEM, ("token",))]].to_numpy()
    for values, field in ((u, USER), (i, ITEM)):
        empty = np.flatnonzero(values == "")
        if len(empty):
            raise BenchError(f"{inter}:{empty[0] + 2}: empty {field}")
    has_time = TIME in [f for f, _ in header]
    if has_time:
        import pandas as pd

        raw_time = df[df.columns[column(inter, header, TIME, ("float",))]]
        times = pd.to_numeric(raw_time, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(times))
        if len(bad):
            raise BenchError(f"{inter}:{bad[0] + 2}: timestamp {raw_time.iat[bad[0]]!r} is not a number")
    else:
        times = np.zeros(len(df))
    user_codes, user_names = _factorize(u)
    item_codes, item_names = _factorize(i)
    cols = {"user": user_codes, "item": item_codes, "time": times, "line": np.arange(len(df)) + 2}
    items, users, seqs, timestamps, n_rows = sequences_of(cols, user_names, item_names, k_core_min, inter,
                                                          dedupe=False)
    texts, used_fields = item_texts(item_file, items, text_fields) if item_file else (None, [])
    ds = from_sequences(name, items, users, seqs, timestamps=timestamps if has_time else None, item_text=texts,
                        item_images=[[] for _ in items])
    ds.meta.update({
        "source": f"RecBole atomic {inter.name}" + (f" + {item_file.name}" if item_file else ""),
        "k_core": k_core_min,
        "rows_before_k_core": n_rows,
        "order": "timestamp, ties in file order" if has_time else "file order (no timestamp column)",
        "text_fields": used_fields,
        "items_without_text": sum(not t for t in texts) if texts else len(items),
        "image_sources": dict(Counter({"none": len(items)})),
    })
    return ds


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    codes, names = pd.factorize(values)
    return codes.astype(np.int64), np.asarray(names, dtype=object)
