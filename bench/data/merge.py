"""Union of datasets (for pre-training on several source domains): items and users are kept
apart by prefixing their external ids with the dataset name; features are stacked likewise."""

from __future__ import annotations

import numpy as np
import torch

from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.features.item_features import ItemFeatures
from bench.hashing import hash_obj


def merge_datasets(parts: list[Dataset]) -> Dataset:
    if len(parts) == 1:
        return parts[0]
    item_offset = np.cumsum([0] + [p.n_items for p in parts[:-1]])
    inter_offset = np.cumsum([0] + [p.n_interactions for p in parts[:-1]])
    items = np.concatenate([p.items + off for p, off in zip(parts, item_offset)])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + off for p, off in zip(parts, inter_offset)])
    has_time = all(p.timestamps is not None for p in parts)
    return Dataset(
        name="+".join(p.name for p in parts),
        item_ids=[f"{p.name}:{i}" for p in parts for i in p.item_ids],
        user_ids=[f"{p.name}:{u}" for p in parts for u in p.user_ids],
        offsets=offsets.astype(np.int64),
        items=items.astype(np.int64),
        timestamps=np.concatenate([p.timestamps for p in parts]) if has_time else None,
        item_text=[t for p in parts for t in (p.item_text or [[] for _ in range(p.n_items)])],
        meta={"merged_from": [p.name for p in parts]},
        content_hash=hash_obj([p.content_hash for p in parts]),
    )


FEATURE_SPACE_KEYS = ("encoder", "encoder_fingerprint", "dim", "image_kind", "tagger", "n_keywords")


def same_feature_space(a: ItemFeatures, b: ItemFeatures, what: str) -> None:
    """Refuse to transfer between feature spaces built with different encoders or taggers."""
    for key in FEATURE_SPACE_KEYS:
        if a.meta.get(key) != b.meta.get(key):
            raise BenchError(
                f"{what}: feature stores differ in {key} ({a.meta.get(key)!r} vs {b.meta.get(key)!r}); "
                "source and target must share one text encoder and tagger"
            )


def merge_features(parts: list[ItemFeatures]) -> ItemFeatures:
    if len(parts) == 1:
        return parts[0]
    for p in parts[1:]:
        same_feature_space(parts[0], p, "merging source datasets")

    def stack(attr: str, mask_attr: str):
        slots = max(getattr(p, attr).shape[1] for p in parts)
        xs, ms = [], []
        for i, p in enumerate(parts):
            x, m = getattr(p, attr), getattr(p, mask_attr)
            x, m = (x, m) if i == 0 else (x[1:], m[1:])  # one padding row, at the top
            pad = slots - x.shape[1]
            xs.append(torch.nn.functional.pad(x, (0, 0, 0, pad)))
            ms.append(torch.nn.functional.pad(m, (0, pad)))
        return torch.cat(xs), torch.cat(ms)

    text, text_mask = stack("text", "text_mask")
    image, image_mask = stack("image", "image_mask")
    meta = {**parts[0].meta, "merged_from": [p.meta.get("dataset") for p in parts]}
    return ItemFeatures(text, text_mask, image, image_mask, meta)
