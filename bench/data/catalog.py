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
from bench.data.rechorus import SPLIT_FILES, read_rechorus
from bench.data.scientific import (
    DECOREC_FILES,
    LCREC_FILES,
    UNISREC_FILES,
    build_scientific,
    build_scientific_mm,
)
from bench.errors import BenchError
from bench.hashing import file_sha256, hash_obj
from bench.registry import Registry

READER_VERSION = "2"  # bump when a reader's output changes for the same inputs


@dataclass(frozen=True)
class DatasetSource:
    name: str
    description: str
    files: tuple[str, ...]  # relative to the data root
    build: Callable[[Path], Dataset]
    params: dict = field(default_factory=dict)


DATASETS: Registry[DatasetSource] = Registry("dataset")
OFFICE = "amazon14_office_rechorus"


def register(source: DatasetSource) -> None:
    DATASETS.add(source.name, source)


register(
    DatasetSource(
        name="scientific",
        description="Amazon 2018 Industrial_and_Scientific (UniSRec 5-core) + LC-Rec descriptions + CLIP image features",
        files=UNISREC_FILES + LCREC_FILES + DECOREC_FILES,
        build=build_scientific,
    )
)
register(
    DatasetSource(
        name="scientific_mm",
        description="Industrial_and_Scientific subset where every item has text and a CLIP image (DecoRec)",
        files=DECOREC_FILES + LCREC_FILES,
        build=build_scientific_mm,
    )
)
register(
    DatasetSource(
        name="office",
        description="Amazon 2014 Office_Products 5-core (ReChorus), time-ordered",
        files=tuple(f"{OFFICE}/{f}" for f in ("Office.item2index", "Office.text", *SPLIT_FILES)),
        build=lambda root: read_rechorus(root / OFFICE, "Office", "office"),
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
            raise BenchError(
                f"missing data file: {path} (data root: {root}; set --data-root or BENCH_DATA_ROOT)"
            )
        st = path.stat()
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_sha256(path)
        out[rel] = memo[key]
    write_json(memo_path, memo)
    return out


def load_dataset(name: str, root: Path, cache: Path) -> Dataset:
    """A registered dataset, else one added with `add_raw_dataset` under this cache."""
    if name not in DATASETS:
        from bench.data.user_datasets import load_user_dataset  # late: it builds on this module

        found = load_user_dataset(name, cache)
        if found is not None:
            return found
    source = DATASETS.get(name)  # raises with the valid names
    checksums = input_checksums(root, source.files, cache)
    return build_cached(name, source.params, checksums, lambda: source.build(root), cache)


def dataset_folder(cache: Path, name: str, content_hash: str) -> Path:
    return cache / "datasets" / f"{name}-{content_hash}"


def build_cached(
    name: str, params: dict, checksums: dict[str, str], build: Callable[[], Dataset], cache: Path
) -> Dataset:
    """Load the Dataset cached under the hash of (inputs, params, reader version), else build it."""
    content_hash = hash_obj({"name": name, "params": params, "inputs": checksums, "reader": READER_VERSION})
    folder = dataset_folder(cache, name, content_hash)
    if (folder / "dataset.pkl").exists():
        return read_cached(folder / "dataset.pkl")
    start = time.perf_counter()
    ds = build()
    ds.content_hash = content_hash
    ds.validate()
    write_pickle(folder / "dataset.pkl", ds)
    write_json(
        folder / "manifest.json",
        {
            "name": name,
            "content_hash": content_hash,
            "inputs": checksums,
            "params": params,
            "reader_version": READER_VERSION,
            "counts": {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions},
            "meta": ds.meta,
            "build_seconds": round(time.perf_counter() - start, 3),
        },
    )
    return ds


def read_cached(path: Path) -> Dataset:
    with open(path, "rb") as f:
        return pickle.load(f)
