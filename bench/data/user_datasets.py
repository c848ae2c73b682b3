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
from bench.data.catalog import DATASETS, build_cached, dataset_folder, read_cached
from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.hashing import file_sha256
from bench.paths import cache_dir
from bench.progress import SILENT, Reporter


def registry_path(cache: Path, name: str) -> Path:
    return cache / "user_datasets" / f"{name}.json"


def check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise BenchError(f"dataset name {name!r}: use letters, digits, '_' and '-' only")
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


def user_dataset_entries(cache: Path) -> list[dict]:
    folder = cache / "user_datasets"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def load_user_dataset(name: str, cache: Path) -> Dataset | None:
    path = registry_path(cache, name)
    if not path.is_file():
        return None
    entry = json.loads(path.read_text())
    pkl = dataset_folder(cache, name, entry["content_hash"]) / "dataset.pkl"
    if not pkl.is_file():
        raise BenchError(f"user dataset {name!r}: its cached build {pkl} is gone; run `bench data add` again")
    return read_cached(pkl)
