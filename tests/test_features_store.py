"""The feature store: layout of ItemFeatures, caching by content hash (second load reads one
file and encodes nothing), refusal of a store built with another encoder, and the raw-CLIP
image channel."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bench import sealed
from bench.data.dataset import from_sequences
from bench.errors import BenchError
from bench.features.raw_image import fit_to_width
from bench.features.store import load_feature_file, load_item_features
from bench.features.text_encoder import TextEncoder


@pytest.fixture()
def tiny(tmp_path):
    """Three real Scientific-like items: one with two images' keywords, one without text, one
    with one image; the keywords come from a user file."""
    ds = from_sequences(
        "tiny",
        ["A", "B", "C"],
        ["u1", "u2"],
        [np.array([1, 2, 3]), np.array([3, 1])],
        item_text=[
            ["Nitrile exam gloves, blue", "Safety gloves"],
            [],
            ["Digital multimeter", "Fluke", "Measures voltage."],
        ],
        item_images=[["a1.jpg", "a2.jpg"], [], ["c.jpg"]],
    )
    ds.content_hash = "tiny-test"
    kw = tmp_path / "kw.tsv"
    kw.write_text("A\tglove, hand, blue\nA\tbox, package\nC\tmultimeter, dial, probe\n")
    return ds, kw


def build(ds, kw, cache, **extra):
    return load_item_features(
        ds, "unused", cache, tagger="keywords", tagger_options={"path": kw}, progress=False, **extra
    )


def test_layout_and_values(tiny, tmp_path, two_threads):
    ds, kw = tiny
    f = build(ds, kw, tmp_path / "cache")
    assert f.text.shape == (4, 3, 384) and f.image.shape == (4, 2, 384) and f.dim == 384 and f.n_items == 3
    assert f.text_mask.tolist() == [[False] * 3, [True, True, False], [False] * 3, [True] * 3]
    assert f.image_mask.tolist() == [[False, False], [True, True], [False, False], [True, False]]
    assert float(f.text[0].abs().sum()) == 0 and float(f.image[2].abs().sum()) == 0
    norms = f.text.norm(dim=-1)[f.text_mask]
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    enc = TextEncoder()
    expected = enc.encode(["Digital multimeter", "glove, hand, blue"], progress=False)
    assert np.allclose(f.text[3, 0].numpy(), expected[0], atol=1e-5)
    assert np.allclose(f.image[1, 0].numpy(), expected[1], atol=1e-5)  # keywords joined ", "
    assert (
        f.meta["encoder"] == "all-MiniLM-L6-v2"
        and f.meta["tagger"] == "keywords"
        and f.meta["n_keywords"] == 15
    )
    assert f.meta["items_with_text"] == 2 and f.meta["items_with_image"] == 2


def test_second_load_is_cached_and_fast(tiny, tmp_path, monkeypatch):
    ds, kw = tiny
    first = build(ds, kw, tmp_path / "cache")

    def no_encoding(*args, **kwargs):
        raise AssertionError("a cached store must not encode")

    monkeypatch.setattr(TextEncoder, "encode", no_encoding)
    start = time.perf_counter()
    again = build(ds, kw, tmp_path / "cache")
    assert time.perf_counter() - start < 2.0
    assert torch.equal(again.text, first.text) and torch.equal(again.image_mask, first.image_mask)
    assert len(list((tmp_path / "cache" / "features").glob("tiny-*.safetensors"))) == 1
    # another N is another store; the strings' vectors are reused, only new strings are encoded
    monkeypatch.undo()
    other = build(ds, kw, tmp_path / "cache", n_keywords=2)
    assert (
        other.meta["text_strings_encoded_now"] == 0 and other.meta["keyword_strings_encoded_now"] == 2
    )  # "box, package" already had 2
    assert len(list((tmp_path / "cache" / "features").glob("tiny-*.safetensors"))) == 2


def test_store_of_another_encoder_is_refused(tiny, tmp_path, capfd):
    ds, kw = tiny
    f = build(ds, kw, tmp_path / "cache")
    path = next((tmp_path / "cache" / "features").glob("tiny-*.safetensors"))
    with pytest.raises(
        BenchError, match=r"built with encoder='all-MiniLM-L6-v2' but encoder='bert-base' is expected"
    ):
        load_feature_file(path, {"encoder": "bert-base"})
    # a cached store whose recorded encoder differs from the one asked for is not used: it is
    # discarded with a warning naming it and rebuilt
    payload = sealed.read(path, "features")
    payload["meta"]["encoder_fingerprint"] = "0000"
    sealed.write(path, payload, "features")
    rebuilt = build(ds, kw, tmp_path / "cache")
    assert f"warning: feature store {path}" in capfd.readouterr().err
    assert rebuilt.meta["encoder_fingerprint"] == f.meta["encoder_fingerprint"] != "0000"


def test_bad_options(tiny, tmp_path):
    ds, kw = tiny
    with pytest.raises(BenchError, match="image_kind 'pixels'"):
        build(ds, kw, tmp_path / "c", image_kind="pixels")
    with pytest.raises(BenchError, match="n_keywords must be >= 1"):
        build(ds, kw, tmp_path / "c", n_keywords=0)


def test_raw_clip_image_channel(data_root, tmp_path):
    """Raw CLIP image vectors as the image slots, fitted to the text width d."""
    refs = [[f"clip_features:{r}"] for r in range(6)] + [[]]
    ds = from_sequences(
        "rawclip",
        [f"I{i}" for i in range(7)],
        ["u"],
        [np.arange(1, 8)],
        item_text=[[f"item {i}"] for i in range(7)],
        item_images=refs,
        meta={
            "image_features": {
                "file": "amazon18_scientific_decorec_clip/Scientific.feat3CLS",
                "dim": 512,
                "dtype": "float32",
            }
        },
    )
    ds.content_hash = "rawclip-test"
    f = load_item_features(ds, data_root, tmp_path / "cache", image_kind="raw_clip", progress=False)
    assert f.image.shape == (8, 1, 384) and f.image_mask[:, 0].tolist() == [False] + [True] * 6 + [False]
    assert f.meta["tagger"] is None and f.meta["raw_projection"] == "pca_6"
    norms = f.image[1:7, 0].norm(dim=-1)
    assert torch.allclose(norms, torch.ones(6), atol=1e-5)
    # PCA keeps the images' geometry: similarities of the projected vectors follow the raw ones
    raw = np.fromfile(
        data_root / "amazon18_scientific_decorec_clip/Scientific.feat3CLS", dtype=np.float32
    ).reshape(-1, 512)[:6]
    raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    centred = raw - raw.mean(0)
    proj = f.image[1:7, 0].numpy()
    assert np.corrcoef((centred @ centred.T).ravel(), (proj @ proj.T).ravel())[0, 1] > 0.99


def test_fit_to_width_pads_or_projects():
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    padded, how = fit_to_width(x, 12)
    assert how == "zero_pad" and padded.shape == (20, 12) and np.allclose(padded[:, 8:], 0)
    projected, how = fit_to_width(x, 4)
    assert how == "pca_4" and projected.shape == (20, 4)
    assert np.allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    again, _ = fit_to_width(x, 4)
    assert np.array_equal(projected, again)  # deterministic (SVD signs fixed)


def test_check_features_for_a_checkpoint(tiny, tmp_path):
    from bench.features.store import CHECKED_KEYS, check_features

    ds, kw = tiny
    f = build(ds, kw, tmp_path / "cache")
    recorded = {k: f.meta[k] for k in CHECKED_KEYS}
    check_features(f, recorded)  # same settings: accepted
    with pytest.raises(BenchError, match="features: built with n_keywords=15 but n_keywords=10 is expected"):
        check_features(f, dict(recorded, n_keywords=10))
