"""Write a Dataset and its ItemFeatures in the format the authors' MP4SR code (RecBole 1.0.1) reads.

out_dir/<name>.inter      tab-separated, header user_id:token item_id:token timestamp:float
out_dir/desc_emb.pkl      {item_token: [vector, ...]} text-segment vectors (real slots only)
out_dir/image_emb_<N>.pkl {item_token: [vector, ...]} image-keyword vectors (real slots only)

RecBole reads <data_path>/<dataset>/<dataset>.inter, so name out_dir after the dataset and pass
its parent as data_path. Timestamps are the dataset's own when it has them, else each
interaction's position in its user's sequence (RecBole orders a user's interactions by them).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from bench.data.dataset import Dataset
from bench.features.item_features import ItemFeatures

INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float"


def _slot_dict(item_ids: list[str], x, mask) -> dict[str, list[np.ndarray]]:
    x = x.detach().cpu().float().numpy()
    mask = mask.detach().cpu().numpy().astype(bool)
    return {tok: [x[i + 1, j].copy() for j in np.flatnonzero(mask[i + 1])] for i, tok in enumerate(item_ids)}


def export_mp4sr(
    dataset: Dataset, features: ItemFeatures, out_dir: str | Path, n_keywords: int | None = None, name: str | None = None
) -> dict[str, Path]:
    """Write the three files; returns {"inter": path, "text": path, "image": path}.

    n_keywords defaults to features.meta["n_keywords"] (else 15); name defaults to dataset.name.
    """
    if features.n_items != dataset.n_items:
        raise ValueError(f"features cover {features.n_items} items, dataset {dataset.name!r} has {dataset.n_items}")
    for tok in list(dataset.item_ids) + list(dataset.user_ids):
        if any(c in str(tok) for c in "\t\n\r"):
            raise ValueError(f"id {tok!r} contains a tab or newline; RecBole's .inter cannot hold it")
    if n_keywords is None:
        n_keywords = int((features.meta or {}).get("n_keywords", 15))
    name = name or dataset.name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    lengths = dataset.lengths()
    users = np.repeat(np.arange(dataset.n_users), lengths)
    if dataset.timestamps is not None:
        ts = np.asarray(dataset.timestamps, dtype=np.float64)
    else:
        ts = (np.arange(dataset.n_interactions) - np.repeat(dataset.offsets[:-1], lengths)).astype(np.float64)
    uid = np.asarray(dataset.user_ids, dtype=object)[users]
    iid = np.asarray(dataset.item_ids, dtype=object)[dataset.items - 1]
    paths = {"inter": out / f"{name}.inter", "text": out / "desc_emb.pkl", "image": out / f"image_emb_{n_keywords}.pkl"}
    with open(paths["inter"], "w", encoding="utf-8", newline="\n") as f:
        f.write(INTER_HEADER + "\n")
        f.writelines(f"{u}\t{i}\t{t!r}\n" for u, i, t in zip(uid, iid, ts.tolist()))
    for key, x, mask in (("text", features.text, features.text_mask), ("image", features.image, features.image_mask)):
        with open(paths[key], "wb") as f:
            pickle.dump(_slot_dict(list(dataset.item_ids), x, mask), f, protocol=4)
    return paths


def read_inter(path: str | Path) -> list[tuple[str, str, float]]:
    """Rows of a written .inter file (for round-trip checks)."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
        if header != INTER_HEADER:
            raise ValueError(f"unexpected header {header!r}")
        return [(u, i, float(t)) for u, i, t in (line.rstrip("\n").split("\t") for line in f)]
