"""Datasets a user adds from raw Amazon dumps (`bench data add`), remembered under the cache home.

Each is built once into the content-hashed dataset cache; a small registry entry records where,
so `load_dataset(name)` finds it later without the raw files (the cached build is a snapshot;
adding the same name again rebuilds it from the raw files as they are then).
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.atomic import write_json
from bench.data.amazon_raw import find_raw_files, read_amazon_raw
from bench.data.catalog import (
    DATASET_FILE,
    DATASETS,
    build_cached,
    check_dataset_name,
    dataset_folder,
    read_cached,
)
from bench.data.dataset import Dataset
from bench.errors import BenchError, DamagedFile, warn
from bench.hashing import file_sha256
from bench.paths import cache_dir
from bench.progress import SILENT, Reporter


def registry_path(cache: Path, name: str) -> Path:
    check_dataset_name(name)
    return cache / "user_datasets" / f"{name}.json"


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


def read_entry(path: Path) -> dict:
    """A registry entry, checked: BenchError naming the file when it is damaged."""
    try:
        entry = json.loads(path.read_bytes())
        if not isinstance(entry, dict) or not isinstance(entry.get("content_hash"), str):
            raise ValueError("not a registry entry")
        check_dataset_name(entry.get("name"))
        if not entry["content_hash"].isalnum():
            raise ValueError("bad content hash")
    except (OSError, ValueError, BenchError) as exc:
        raise BenchError(f"{path}: damaged registry entry ({type(exc).__name__}); delete it and run "
                         f"`bench data add {path.stem} ...` again") from None
    return entry


def user_dataset_entries(cache: Path) -> list[dict]:
    folder = cache / "user_datasets"
    entries = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entries.append(read_entry(p))
        except BenchError as exc:
            warn(str(exc))
    return entries


def load_user_dataset(name: str, cache: Path) -> Dataset | None:
    path = registry_path(cache, name)
    if not path.is_file():
        return None
    entry = read_entry(path)
    file = dataset_folder(cache, name, entry["content_hash"]) / DATASET_FILE
    again = f"run `bench data add {name} --raw-dir {entry.get('raw_dir')} ...` again"
    if not file.is_file():
        raise BenchError(f"user dataset {name!r} ({path}): its cached build {file} is gone; {again}")
    try:
        return read_cached(file, name, entry["content_hash"])
    except DamagedFile as exc:
        raise BenchError(f"{exc}; {again}") from None
