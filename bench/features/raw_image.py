"""Raw image embeddings as the image channel (the ablation "keywords vs raw image features").

Precomputed CLIP image vectors (512-d) do not live in the sentence encoder's space or size. To
keep ItemFeatures' one width d, they are L2-normalised, centred and projected onto their top-d
principal components (PCA on the dataset's own images; deterministic), or zero-padded when the
raw width is at most d, then L2-normalised again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.dataset import Dataset
from bench.features.images import clip_feature_row, image_source, load_clip_image_features
from bench.features.vocab import unit_rows

MAX_IMAGES = 10


def fit_to_width(x: np.ndarray, d: int) -> tuple[np.ndarray, str]:
    x = unit_rows(x)
    if x.shape[1] <= d:
        return unit_rows(np.pad(x, ((0, 0), (0, d - x.shape[1])))), "zero_pad"
    centred = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    k = min(d, vt.shape[0])
    signs = np.sign(vt[:k, np.argmax(np.abs(vt[:k]), axis=1)].diagonal())  # fix SVD's sign freedom
    proj = centred @ (vt[:k].T * signs)
    return unit_rows(np.pad(proj, ((0, 0), (0, d - k))).astype(np.float32)), f"pca_{k}"


def raw_image_vectors(ds: Dataset, data_root: Path, d: int) -> tuple[list[list[np.ndarray]], str]:
    """Per item, per image, a d-wide vector (items whose images are not precomputed get none)."""
    refs = [
        [r for r in item[:MAX_IMAGES] if image_source(r) == "clip_features"]
        for item in (ds.item_images or [])
    ]
    rows = [clip_feature_row(r) for item in refs for r in item]
    out: list[list[np.ndarray]] = [[] for _ in range(ds.n_items)]
    if not rows:
        return out, "none"
    fitted, how = fit_to_width(load_clip_image_features(ds, data_root)[rows], d)
    k = 0
    for i, item in enumerate(refs):
        for _ in item:
            out[i].append(fitted[k])
            k += 1
    return out, how
