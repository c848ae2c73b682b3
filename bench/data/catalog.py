"""Registered datasets: each names its input files and how to build the canonical Dataset.

`load_dataset` caches the built Dataset under a content hash of the inputs' checksums, the
build parameters and the reader code version, with a manifest beside it.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.atomic import write_json, write_pickle
from bench.data.dataset import Dataset
from bench.data.unisrec import read_unisrec
from bench.errors import BenchError
from bench.hashing import file_sha256, hash_obj
from bench.registry import Registry

READER_VERSION = "1"  # bump when a reader's output changes for the same inputs


@dataclass(frozen=True)
class DatasetSource:
    name: str
    description: str
    files: tuple[str, ...]  # relative to the data root
    build: Callable[[Path], Dataset]
    params: dict = field(default_factory=dict)


DATASETS: Registry[DatasetSource] = Registry("dataset")


def register(source: DatasetSource) -> None:
    DATASETS.add(source.name, source)


register(
    DatasetSource(
        name="scientific",
        description="Amazon 2018 Industrial_and_Scientific (UniSRec processing, 5-core)",
        files=tuple(
            f"amazon18_scientific_unisrec/Scientific.{ext}"
            for ext in ("item2index", "user2index", "test.inter", "valid.inter", "text")
        ),
        build=lambda root: read_unisrec(root / "amazon18_scientific_unisrec", "Scientific", "scientific"),
    )
)


def input_checksums(root: Path, files: tuple[str, ...], cache: Path) -> dict[str, str]:
    """sha256 of each input, memoised on (size, mtime) so repeated loads don't re-read files."""
    memo_path = cache / "file_sha256.json"
    memo = json.loads(memo_path.read_text()) if memo_path.exists() else {}
    out = {}
    for rel in files:
        path = root / rel
        if not path.is_file():
            raise BenchError(f"missing data file: {path} (data root: {root}; set --data-root or BENCH_DATA_ROOT)")
        st = path.stat()
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_sha256(path)
        out[rel] = memo[key]
    write_json(memo_path, memo)
    return out


def load_dataset(name: str, root: Path, cache: Path) -> Dataset:
    source = DATASETS.get(name)
    checksums = input_checksums(root, source.files, cache)
    content_hash = hash_obj({"name": name, "params": source.params, "inputs": checksums, "reader": READER_VERSION})
    folder = cache / "datasets" / f"{name}-{content_hash}"
    if (folder / "dataset.pkl").exists():
        with open(folder / "dataset.pkl", "rb") as f:
            return pickle.load(f)
    start = time.perf_counter()
    ds = source.build(root)
    ds.content_hash = content_hash
    ds.validate()
    write_pickle(folder / "dataset.pkl", ds)
    write_json(
        folder / "manifest.json",
        {
            "name": name,
            "content_hash": content_hash,
            "inputs": checksums,
            "params": source.params,
            "reader_version": READER_VERSION,
            "counts": {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions},
            "build_seconds": round(time.perf_counter() - start, 3),
        },
    )
    return ds
