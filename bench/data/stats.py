"""Summary statistics of a Dataset."""

from __future__ import annotations

import numpy as np

from bench.data.dataset import Dataset


def dataset_stats(ds: Dataset) -> dict[str, float | int | str]:
    lengths = ds.lengths()
    return {
        "dataset": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "mean_seq_len": round(float(lengths.mean()), 3),
        "median_seq_len": float(np.median(lengths)),
        "density": round(ds.n_interactions / (ds.n_users * ds.n_items), 6),
    }


def modality_coverage(ds: Dataset, features) -> dict:
    """Per modality: items with at least one real slot in the feature store, and the share of
    interactions whose item has one (what a content model actually sees)."""
    out: dict = {"items": ds.n_items}
    for modality, mask in (("text", features.text_mask), ("image", features.image_mask)):
        has = mask[1:].any(1).numpy() if mask is not None and mask.numel() else np.zeros(ds.n_items, bool)
        out[modality] = {"items": int(has.sum()),
                         "interaction_share": round(float(has[ds.items - 1].mean()), 4) if ds.n_interactions else 0.0}
    return out
