"""The sentence encoder (all-MiniLM-L6-v2 from its PyPI package, offline) on real strings."""

from __future__ import annotations

import numpy as np
import pytest

from bench.errors import BenchError
from bench.features.text_encoder import DEFAULT_ENCODER, TextEncoder, encoder_fingerprint, packaged_minilm_dir


@pytest.fixture(scope="module")
def encoder(two_threads):
    return TextEncoder(DEFAULT_ENCODER, batch_size=8)


def test_similar_texts_are_closer(encoder):
    texts = [
        "Gorilla Original Gorilla Glue, Waterproof Polyurethane Glue, 8 ounce Bottle, Brown",
        "Loctite Super Glue Gel, 0.14 oz tube, strong adhesive",
        "Fluke 117 Electricians True RMS Multimeter",
        "Digital multimeter for measuring voltage and current",
    ]
    v = encoder.encode(texts, progress=False)
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[0, 3] + 0.2
    assert sim[2, 3] > sim[2, 0] + 0.2 and sim[2, 3] > sim[2, 1] + 0.2


def test_batching_order_and_duplicates_do_not_change_vectors(encoder):
    texts = [
        "nitrile gloves",
        "a much longer string about laboratory glassware and beakers",
        "nitrile gloves",
        "tape",
    ]
    a = encoder.encode(texts, progress=False)
    b = encoder.encode(texts[::-1], progress=False)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(a[0], a[2])
    single = TextEncoder(DEFAULT_ENCODER, batch_size=1)
    single._model, single._tokenizer = encoder._model, encoder._tokenizer  # same weights, no padding
    np.testing.assert_allclose(single.encode(texts, progress=False), a, atol=1e-4)  # padding is masked out


def test_encoder_is_offline_and_fingerprinted(encoder, tmp_path):
    import os

    assert encoder.model_dir == packaged_minilm_dir() and os.environ.get("HF_HUB_OFFLINE") == "1"
    fake = tmp_path / "enc"
    fake.mkdir()
    (fake / "config.json").write_text('{"hidden_size": 8}')
    before = encoder_fingerprint(fake)
    (fake / "config.json").write_text('{"hidden_size": 16}')
    assert encoder_fingerprint(fake) != before != encoder.fingerprint()


def test_missing_or_broken_encoder_dir(tmp_path):
    with pytest.raises(BenchError, match="no such model directory"):
        TextEncoder(tmp_path / "nope")
    with pytest.raises(BenchError, match="has no config.json"):
        TextEncoder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    broken = TextEncoder(tmp_path)
    with pytest.raises(BenchError, match="cannot load text encoder"):
        broken.encode(["x"], progress=False)
