"""Datasets a user adds from raw Amazon dumps (`bench data add`), remembered under the cache home.

Each is built once into the content-hashed dataset cache; a small registry entry records where,
so `load_dataset(name)` finds it later without the raw files (the cached build is a snapshot;
adding the same name again rebuilds it from the raw files as they are then).
This module builds and registers; reading the registry is bench.data.catalog's (load_dataset).
"""

from __future__ import annotations

from pathlib import Path

from bench.atomic import write_json
from bench.data.amazon_raw import find_raw_files, read_amazon_raw
from bench.data.catalog import DATASETS, build_cached, check_dataset_name, registry_path
from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.hashing import file_sha256
from bench.paths import cache_dir
from bench.progress import SILENT, Reporter


def check_name(name: str) -> None:
    check_dataset_name(name)
    if name in DATASETS:
        raise BenchError(f"dataset name {name!r} is a built-in dataset; choose another name")


def add_raw_dataset(
    name: str,
    raw_dir: str | Path,
    category: str,
    home: str | Path,
    k_core: int = 5,
    image_dir: str | Path | None = None,
    skip_bad_lines: bool = False,
    reporter: Reporter = SILENT,
) -> Dataset:
    """Build a Dataset from raw Amazon files, cache it and register `name` under `home`."""
    check_name(name)
    if k_core < 1:
        raise BenchError(f"k_core must be >= 1, got {k_core}")
    raw_dir, cache = Path(raw_dir).expanduser().resolve(), cache_dir(Path(home).expanduser().resolve())
    image_dir = Path(image_dir).expanduser().resolve() if image_dir else None
    if image_dir is not None and not image_dir.is_dir():
        raise BenchError(f"image folder not found: {image_dir}")
    files = find_raw_files(raw_dir, category)
    checksums = {str(p): file_sha256(p) for p in (files.interactions, files.meta)}
    if image_dir is not None:  # which images exist matters, not their bytes (they are read later)
        checksums[str(image_dir)] = ",".join(sorted(p.name for p in image_dir.glob("*.jpg")))
    params = {
        "category": category,
        "k_core": k_core,
        "image_dir": str(image_dir) if image_dir else None,
        "skip_bad_lines": skip_bad_lines,
    }
    def build() -> Dataset:
        task = reporter.task(f"reading {files.interactions.name}", total=1000)  # permille of its bytes

        def progress(fraction: float) -> None:
            task.advance(round(fraction * 1000) - task.done)

        try:
            return read_amazon_raw(raw_dir, category, name, k_core, image_dir, skip_bad_lines, progress)
        finally:
            task.close()

    ds = build_cached(name, params, checksums, build, cache)
    write_json(
        registry_path(cache, name),
        {
            "name": name,
            "description": f"user-added: {ds.meta.get('source', category)}, {k_core}-core",
            "raw_dir": str(raw_dir),
            "params": params,
            "content_hash": ds.content_hash,
            "counts": {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions},
        },
    )
    return ds


def add_atomic_dataset(
    name: str,
    folder: str | Path,
    home: str | Path,
    k_core: int = 1,
    text_fields: list[str] | None = None,
) -> Dataset:
    """Build a Dataset from a RecBole atomic folder (<name>.inter, optional <name>.item), cache it and
    register `name` under `home`."""
    from bench.data.recbole_atomic import find_atomic_files, read_recbole_atomic

    check_name(name)
    if k_core < 1:
        raise BenchError(f"k_core must be >= 1, got {k_core}")
    folder, cache = Path(folder).expanduser().resolve(), cache_dir(Path(home).expanduser().resolve())
    inter, item = find_atomic_files(folder)
    checksums = {str(p): file_sha256(p) for p in (inter, item) if p is not None}
    params = {"format": "recbole_atomic", "k_core": k_core, "text_fields": text_fields}
    ds = build_cached(name, params, checksums, lambda: read_recbole_atomic(folder, name, k_core, text_fields), cache)
    write_json(
        registry_path(cache, name),
        {
            "name": name,
            "description": f"user-added: {ds.meta.get('source', inter.name)}" + (f", {k_core}-core" if k_core > 1 else ""),
            "raw_dir": str(folder),
            "params": params,
            "content_hash": ds.content_hash,
            "counts": {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions},
        },
    )
    return ds
