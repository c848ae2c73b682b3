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
