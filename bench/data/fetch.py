"""`bench data fetch`: download the built-in datasets' files from their public sources.

The sources (repository, commit, path, file, sha256) are in sources.yaml beside this module.
Each file is streamed from `<base>/<repo>/<commit>/<path><file>` (raw GitHub by default; `--mirror`
or $BENCH_DATA_MIRROR: another base URL, or a local folder laid out like a data root), hashed while
it streams, and renamed into the data root only when its sha256 matches; anything else leaves no
file behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bench.atomic import atomic_write
from bench.errors import BenchError
from bench.hashing import file_sha256
from bench.progress import SILENT, Reporter

MIRROR_ENV = "BENCH_DATA_MIRROR"
CHUNK = 1 << 16
TIMEOUT_S = 60  # per socket operation: a stalled server fails the download instead of hanging it


@dataclass(frozen=True)
class SourceFile:
    folder: str  # under the data root
    name: str
    repo: str
    commit: str
    path: str  # folder inside the repository, ending in "/"
    sha256: str

    def url(self, base: str) -> str:
        rel = f"{self.repo}/{self.commit}/{self.path}{self.name}"
        return base.rstrip("/") + "/" + urllib.parse.quote(rel, safe="/+")


def load_sources() -> dict:
    import yaml

    return yaml.safe_load(resources.files("bench.data").joinpath("sources.yaml").read_text())


def fetchable_names(sources: dict | None = None) -> list[str]:
    sources = sources or load_sources()
    return [*sources["datasets"], *sources["folders"], "all"]


def files_for(name: str, sources: dict | None = None) -> list[SourceFile]:
    """The files behind a built-in dataset name, a data-root folder name, or "all"."""
    sources = sources or load_sources()
    if name == "all":
        folders = list(sources["folders"])
    elif name in sources["datasets"]:
        folders = sources["datasets"][name]
    elif name in sources["folders"]:
        folders = [name]
    else:
        raise BenchError(f"nothing to fetch for {name!r}; valid: {', '.join(fetchable_names(sources))}")
    out = []
    for folder in folders:
        f = sources["folders"][folder]
        out += [SourceFile(folder, fn, f["repo"], f["commit"], f["path"], sha) for fn, sha in f["files"].items()]
    return out


def mirror_url(explicit: str | None = None, sources: dict | None = None) -> str:
    return explicit or os.environ.get(MIRROR_ENV) or (sources or load_sources())["base_url"]


def download_verified(url: str, dest: Path, sha256: str) -> int:
    """Stream url into dest (atomic), hashing as it goes; a sha256 mismatch, a short body or a
    network error raises BenchError and leaves no file at dest. Returns the byte count."""
    digest, size = hashlib.sha256(), 0

    def write(out) -> None:
        nonlocal size
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            expected_len = resp.headers.get("Content-Length")
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if expected_len is not None and size != int(expected_len):
            raise BenchError(f"download of {url} ended early ({size} of {expected_len} bytes); nothing was "
                             f"written, run the command again")
        if digest.hexdigest() != sha256:
            raise BenchError(f"sha256 mismatch for {url}: expected {sha256}, got {digest.hexdigest()}; "
                             f"the download was deleted")

    try:
        atomic_write(dest, write)
    except BenchError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        why = getattr(exc, "reason", None) or type(exc).__name__
        raise BenchError(f"download of {url} failed ({why}); nothing was written, run the command again") from None
    return size


def fetch(
    name: str,
    root: Path,
    mirror: str | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> list[tuple[Path, str]]:
    """Download the files of `name` into root; [(path, "downloaded" | "present")]. Files already
    there with the right sha256 are kept; one with another sha256 is an error unless force."""
    sources = load_sources()
    files = files_for(name, sources)
    base = mirror_url(mirror, sources)
    results = []
    for f in files:
        dest = root / f.folder / f.name
        if dest.is_file():
            if file_sha256(dest) == f.sha256:
                results.append((dest, "present"))
                continue
            if not force:
                raise BenchError(f"{dest} exists with another sha256 than its source's; pass --force to replace it")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"cannot write into the data root {root}: {exc.strerror}; pass --data-root") from None
        if not os.access(dest.parent, os.W_OK):
            raise BenchError(f"cannot write into {dest.parent} (read-only); pass another --data-root")
        url = f.url(base) if "://" in base else (Path(base).resolve() / f.folder / f.name).as_uri()
        size = download_verified(url, dest, f.sha256)
        reporter.info(f"wrote {dest} ({size:,} bytes, sha256 ok)")
        results.append((dest, "downloaded"))
    return results
