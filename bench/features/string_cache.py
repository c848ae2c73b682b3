"""Vectors of strings already encoded, per encoder, so stores that share strings (scientific and
its subset scientific_mm, keyword vs raw-image variants of one dataset) encode each string once."""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write
from bench.errors import BenchError, warn
from bench.features.text_encoder import TextEncoder


def string_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cache_file(cache: Path, fingerprint: str) -> Path:
    return cache / "features" / f"strings-{fingerprint}.npz"


def _sha(keys: np.ndarray, vectors: np.ndarray) -> str:
    h = hashlib.sha256(f"{keys.dtype}|{keys.shape}|{vectors.dtype}|{vectors.shape}|".encode())
    h.update(np.ascontiguousarray(keys).tobytes())
    h.update(np.ascontiguousarray(vectors).tobytes())
    return h.hexdigest()


def write_vectors(path: Path, known: dict[str, np.ndarray]) -> None:
    keys = np.array(list(known), dtype="U40")
    vectors = np.stack(list(known.values())).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, keys=keys, vectors=vectors, sha256=np.array(_sha(keys, vectors)))
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def read_vectors(path: Path) -> dict[str, np.ndarray]:
    """The cached vectors, checked (no pickled objects; checksum, shapes); a damaged cache is
    discarded with a warning and only costs re-encoding. One written before checksums is
    checked for structure and rewritten with one."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            keys, vectors = z["keys"], z["vectors"]
            sha = str(z["sha256"]) if "sha256" in z.files else None
        if (keys.ndim != 1 or keys.dtype.kind != "U" or vectors.ndim != 2 or vectors.dtype != np.float32
                or len(keys) != len(vectors) or len(set(keys.tolist())) != len(keys)):
            raise ValueError("unexpected arrays")
        if sha is not None and sha != _sha(keys, vectors):
            raise ValueError("checksum mismatch")
    except Exception as exc:  # noqa: BLE001 - truncated / garbled zip or arrays: damaged
        warn(f"string vector cache {path}: damaged ({type(exc).__name__}: {str(exc)[:80]}); discarded, "
             "strings are encoded again")
        with contextlib.suppress(OSError):
            path.unlink()
        return {}
    known = dict(zip(keys.tolist(), vectors))
    if sha is None and known:
        with contextlib.suppress(BenchError, OSError):
            write_vectors(path, known)
    return known


def encode_with_cache(
    encoder: TextEncoder, texts: list[str], cache: Path, fingerprint: str, progress: bool, description: str
) -> tuple[np.ndarray, int]:
    """-> ([len(texts), dim] vectors, how many distinct strings had to be encoded now)."""
    path = cache_file(cache, fingerprint)
    known = read_vectors(path)
    missing = sorted({t for t in texts if string_key(t) not in known})
    if missing:
        for text, vector in zip(missing, encoder.encode(missing, progress=progress, description=description)):
            known[string_key(text)] = vector
        try:
            write_vectors(path, known)
        except BenchError as exc:  # a cache: encoding again next time is the only cost
            warn(f"string vector cache not saved ({exc})")
    out = np.stack([known[string_key(t)] for t in texts]) if texts else np.zeros((0, encoder.dim), np.float32)
    return out, len(missing)
