"""Image references of a Dataset (`item_images`) and which source each one is.

A reference is either a row of a precomputed CLIP image-embedding file ("clip_features:<row>"),
a local image file path, or a URL (recorded from metadata, never fetched at run time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.dataset import Dataset
from bench.data.scientific import CLIP_FEATURE_PREFIX
from bench.errors import BenchError


def image_source(ref: str) -> str:
    if ref.startswith(CLIP_FEATURE_PREFIX):
        return "clip_features"
    if ref.startswith(("http://", "https://")):
        return "url"
    return "local_file"


def clip_feature_row(ref: str) -> int:
    return int(ref[len(CLIP_FEATURE_PREFIX) :])


def load_clip_image_features(ds: Dataset, data_root: Path) -> np.ndarray:
    """The dataset's precomputed CLIP image embeddings, [rows, dim] float32 (raw, no header)."""
    spec = ds.meta.get("image_features")
    if not spec:
        raise BenchError(f"dataset {ds.name!r} has no precomputed CLIP image features")
    path = data_root / spec["file"]
    if not path.is_file():
        raise BenchError(f"missing data file: {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % spec["dim"]:
        raise BenchError(
            f"{path}: size {raw.size * 4} bytes is not a whole number of {spec['dim']}-float rows"
        )
    return raw.reshape(-1, spec["dim"])


def load_rgb(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read image {path}: {exc}") from None


def center_crop_tensor(img: Image.Image, size: int, resize_to: int, mean, std) -> np.ndarray:
    """Resize the shorter side to `resize_to`, crop the centre `size` square, normalise -> [3, s, s]."""
    w, h = img.size
    scale = resize_to / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    x = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return x.transpose(2, 0, 1)
