"""`export_mp4sr` writes what the authors' MP4SR/RecBole code reads, and it round-trips."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from bench.data.dataset import from_sequences
from bench.data.export_mp4sr import INTER_HEADER, export_mp4sr, read_inter
from bench.features.item_features import ItemFeatures


def _toy(timestamps: bool):
    seqs = [np.array([1, 3, 2]), np.array([4, 1]), np.array([2, 5, 4, 3])]
    kw = {}
    if timestamps:
        kw["timestamps"] = np.array([10, 20, 30, 5, 7, 1, 2, 3, 4], dtype=np.int64) * 1000
    return from_sequences("toy", ["A1", "B2", "C3", "D4", "E5"], ["u1", "u2", "u3"], seqs, **kw)


@pytest.mark.parametrize("timestamps", [False, True])
def test_export_round_trips(tmp_path, timestamps):
    ds = _toy(timestamps)
    feats = ItemFeatures.random(5, dim=8, slots_t=4, slots_v=3, seed=2)
    feats.image_mask[3] = False  # an item without images
    feats.image[3] = 0.0
    paths = export_mp4sr(ds, feats, tmp_path / "toy", n_keywords=15)
    assert paths["inter"].name == "toy.inter" and paths["image"].name == "image_emb_15.pkl"
    assert paths["inter"].read_text().splitlines()[0] == INTER_HEADER

    rows = read_inter(paths["inter"])
    assert len(rows) == ds.n_interactions
    back = {}
    for u, i, t in rows:
        back.setdefault(u, []).append((t, i))
    for uidx, user in enumerate(ds.user_ids):
        got = [i for _, i in sorted(back[user])]  # RecBole orders by timestamp
        assert got == [ds.item_ids[k - 1] for k in ds.sequence(uidx)]
    ts = [t for _, _, t in rows]
    assert ts == (ds.timestamps.astype(float).tolist() if timestamps else [0.0, 1.0, 2.0, 0.0, 1.0, 0.0, 1.0, 2.0, 3.0])

    for key, x, mask in (("text", feats.text, feats.text_mask), ("image", feats.image, feats.image_mask)):
        with open(paths[key], "rb") as f:
            table = pickle.load(f)
        assert set(table) == set(ds.item_ids)
        for idx, tok in enumerate(ds.item_ids):
            vecs = table[tok]
            real = mask[idx + 1].nonzero().flatten().tolist()
            assert len(vecs) == len(real)
            for v, j in zip(vecs, real):
                assert isinstance(v, np.ndarray) and v.shape == (8,)
                np.testing.assert_array_equal(v, x[idx + 1, j].numpy())
    with open(paths["image"], "rb") as f:
        assert pickle.load(f)["C3"] == []


def test_authors_loader_layout(tmp_path):
    """The authors' loader: mapped[i-1, :len(feat), :] = feat for every item token."""
    ds = _toy(False)
    feats = ItemFeatures.random(5, dim=8, seed=4)
    paths = export_mp4sr(ds, feats, tmp_path)
    with open(paths["text"], "rb") as f:
        table = pickle.load(f)
    width = max(len(v) for v in table.values())
    mapped = np.zeros((5, width, 8))
    for i, tok in enumerate(ds.item_ids):
        mapped[i, : len(table[tok]), :] = table[tok]
    expected = np.zeros_like(mapped)  # real slots packed to the front, in slot order
    for i in range(5):
        real = feats.text[i + 1][feats.text_mask[i + 1]].numpy()
        expected[i, : len(real)] = real
    assert width == int(feats.text_mask.sum(1).max())
    np.testing.assert_array_equal(mapped, expected)


def test_export_rejects_mismatched_features(tmp_path):
    with pytest.raises(ValueError):
        export_mp4sr(_toy(False), ItemFeatures.random(6, dim=8), tmp_path)
