"""Vectors of strings already encoded, per encoder, so stores that share strings (scientific and
its subset scientific_mm, keyword vs raw-image variants of one dataset) encode each string once."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from bench.atomic import atomic_write
from bench.features.text_encoder import TextEncoder


def string_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cache_file(cache: Path, fingerprint: str) -> Path:
    return cache / "features" / f"strings-{fingerprint}.npz"


def read_vectors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path) as z:
            return dict(zip(z["keys"].tolist(), z["vectors"]))
    except (OSError, ValueError, KeyError):
        return {}  # a damaged cache only costs re-encoding


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
        keys = np.array(list(known))
        vectors = np.stack(list(known.values())).astype(np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, keys=keys, vectors=vectors)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
    out = np.stack([known[string_key(t)] for t in texts]) if texts else np.zeros((0, encoder.dim), np.float32)
    return out, len(missing)
