"""Registered datasets: each names its input files and how to build the canonical Dataset.

`load_dataset` caches the built Dataset under a content hash of the inputs' checksums, the
build parameters and the reader code version, with a manifest beside it. The cache is a sealed
file (bench.sealed: no pickle, checksummed); a damaged one is discarded and rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import sealed
from bench.atomic import write_json
from bench.data.dataset import Dataset
from bench.data.rechorus import SPLIT_FILES, read_rechorus
from bench.data.scientific import (
    DECOREC_FILES,
    LCREC_FILES,
    UNISREC_FILES,
    build_scientific,
    build_scientific_mm,
)
from bench.errors import BenchError, DamagedFile, warn
from bench.hashing import file_sha256, hash_obj
from bench.registry import Registry

READER_VERSION = "2"  # bump when a reader's output changes for the same inputs
DATASET_FILE = "dataset.safetensors"  # sealed; an older dataset.pkl is never read (rebuilt instead)
MEMO_FORMAT = "bench-sha256-memo-1"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_dataset_name(name: object) -> str:
    """A dataset name is an identifier: it becomes part of cache paths, so '../x' never resolves."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BenchError(f"dataset name {name!r}: use letters, digits, '_' and '-' only "
                         "(at most 100 characters, not starting with '-')")
    return name


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
    """sha256 of each input, memoised on (size, mtime) so repeated loads don't re-read files.
    The memo is rewritten only when it gained an entry, and failing to write it is not an error."""
    memo_path = cache / "file_sha256.json"
    memo = read_memo(memo_path)
    known = len(memo)
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
    if len(memo) != known:
        try:
            write_json(memo_path, {"format": MEMO_FORMAT, "entries": memo, "sha256": _memo_digest(memo)})
        except (BenchError, OSError) as exc:
            warn(f"checksum memo not saved ({exc}); input checksums are recomputed next time")
    return out


def _memo_digest(entries: dict) -> str:
    return hash_obj({"format": MEMO_FORMAT, "entries": entries}, 64)


def read_memo(path: Path) -> dict[str, str]:
    """The verified memo entries; {} when absent, of the older unsealed layout, or damaged (warned)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warn(f"{path}: unreadable checksum memo ({type(exc).__name__}); discarded, checksums recomputed")
        return {}
    if isinstance(data, dict) and "format" not in data:
        return {}  # the older layout had no checksum of its own: recompute rather than trust it
    entries = data.get("entries") if isinstance(data, dict) else None
    ok = (isinstance(entries, dict) and data.get("format") == MEMO_FORMAT
          and all(isinstance(k, str) and isinstance(v, str) and _HEX64.match(v) for k, v in entries.items())
          and data.get("sha256") == _memo_digest(entries))
    if not ok:
        warn(f"{path}: damaged checksum memo; discarded, input checksums recomputed")
        return {}
    return entries


def load_dataset(name: str, root: Path, cache: Path) -> Dataset:
    """A registered dataset, else one added with `add_raw_dataset` under this cache."""
    check_dataset_name(name)
    if name not in DATASETS:
        found = load_user_dataset(name, cache)
        if found is not None:
            return found
    source = DATASETS.get(name)  # raises with the valid names
    missing = [rel for rel in source.files if not (root / rel).is_file()]
    if missing:  # a fresh machine: point at the command that downloads them
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BenchError(f"missing data file: {root / missing[0]}{more} (dataset {name!r}, data root {root}); "
                         f"download with `bench data fetch {name} --data-root {root}`, or set --data-root / "
                         f"BENCH_DATA_ROOT")
    checksums = input_checksums(root, source.files, cache)
    files = [root / rel for rel in source.files]
    return build_cached(name, source.params, checksums, lambda: source.build(root), cache, files)


def dataset_folder(cache: Path, name: str, content_hash: str) -> Path:
    return cache / "datasets" / f"{name}-{content_hash}"


def build_cached(
    name: str, params: dict, checksums: dict[str, str], build: Callable[[], Dataset], cache: Path,
    files: list[Path] | None = None,
) -> Dataset:
    """Load the Dataset cached under the hash of (inputs, params, reader version), else build it.
    `files` (default: the checksummed paths) are searched for the culprit of a UTF-8 error."""
    content_hash = hash_obj({"name": name, "params": params, "inputs": checksums, "reader": READER_VERSION})
    folder = dataset_folder(cache, name, content_hash)
    path = folder / DATASET_FILE
    if path.exists():
        try:
            return read_cached(path, name, content_hash)
        except DamagedFile as exc:
            warn(f"{exc}; discarded, rebuilding it from the data files")
    start = time.perf_counter()
    try:
        ds = build()
    except UnicodeDecodeError as exc:
        raise BenchError(locate_bad_utf8(exc, files or [Path(p) for p in checksums], name)) from None
    ds.content_hash = content_hash
    ds.validate()
    try:
        write_cached(path, ds)
        _write_manifest(folder, name, content_hash, checksums, params, ds, start)
    except (BenchError, OSError) as exc:  # a cache: the dataset itself is fine
        warn(f"dataset cache not saved ({exc}); it is rebuilt next time")
    return ds


def _write_manifest(folder, name, content_hash, checksums, params, ds, start) -> None:
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


def locate_bad_utf8(exc: UnicodeDecodeError, files: list[Path], name: str) -> str:
    """'file:line: not UTF-8 text ...' for the input holding the undecodable bytes."""
    obj = exc.object if isinstance(exc.object, bytes) else b""
    lo = max(0, exc.start - 32)
    needle = obj[lo : exc.end + 32]
    for f in files if needle else []:
        try:
            data = f.read_bytes()
        except OSError:
            continue
        at = data.find(needle)
        if at >= 0:
            bad = at + exc.start - lo
            line = data.count(b"\n", 0, bad) + 1
            return f"{f}:{line}: not UTF-8 text ({exc.reason} at byte {bad}); fix or re-download the file"
    return f"dataset {name!r}: an input file is not UTF-8 text ({exc}); check the files of its data folder"


def write_cached(path: Path, ds: Dataset) -> None:
    tree = {f.name: getattr(ds, f.name) for f in dataclasses.fields(ds)}
    sealed.write(path, tree, "dataset")


def _list_of(value, kind, what: str) -> list:
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise ValueError(f"{what} is not a list of {kind.__name__}")
    return value


def read_cached(path: Path, name: str | None = None, content_hash: str | None = None) -> Dataset:
    """The cached Dataset, verified (checksum, structure, and the name / hash expected if given)."""
    tree = sealed.read(path, "dataset")
    try:
        if not isinstance(tree, dict) or set(tree) != {f.name for f in dataclasses.fields(Dataset)}:
            raise ValueError("unexpected fields")
        ds = Dataset(**tree)
        check_dataset_name(ds.name)
        _list_of(ds.item_ids, str, "item_ids")
        _list_of(ds.user_ids, str, "user_ids")
        for arr, what in ((ds.offsets, "offsets"), (ds.items, "items")):
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu" or arr.ndim != 1:
                raise ValueError(f"{what} is not a 1-d integer array")
        if len(ds.offsets) != ds.n_users + 1 or np.any(np.diff(ds.offsets) < 0):
            raise ValueError("offsets do not match the users")
        if ds.timestamps is not None and (not isinstance(ds.timestamps, np.ndarray)
                                          or ds.timestamps.shape != ds.items.shape):
            raise ValueError("timestamps do not match the items")
        for field_name in ("item_text", "item_images"):
            per_item = getattr(ds, field_name)
            if per_item is not None:
                if len(_list_of(per_item, list, field_name)) != ds.n_items:
                    raise ValueError(f"{field_name} does not have one entry per item")
                for entry in per_item:
                    _list_of(entry, str, field_name)
        if not isinstance(ds.meta, dict) or not isinstance(ds.content_hash, str):
            raise ValueError("meta / content_hash of the wrong type")
        ds.validate()
    except (ValueError, TypeError, BenchError) as exc:
        raise DamagedFile(path, f"damaged dataset file ({exc})") from None
    if (name is not None and ds.name != name) or (content_hash is not None and ds.content_hash != content_hash):
        raise DamagedFile(path, f"holds dataset {ds.name}-{ds.content_hash}, not the one its folder names")
    return ds


# User-added datasets (`bench data add`, bench.data.user_datasets builds them): a registry entry
# under the cache home names the cached build. Reading entries lives here, beside load_dataset,
# so that the catalog never imports the module that builds on it.


def registry_path(cache: Path, name: str) -> Path:
    check_dataset_name(name)
    return cache / "user_datasets" / f"{name}.json"


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
