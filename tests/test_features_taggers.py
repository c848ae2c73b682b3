"""Image taggers: clip_features on the real CLIP image embeddings, efficientnet on real photos
(scikit-image's CC0 samples), a local CLIP model directory, and user keyword files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.cli.data import show_keywords
from bench.data.catalog import load_dataset
from bench.data.dataset import from_sequences
from bench.errors import BenchError
from bench.features.taggers import TAGGERS, make_tagger
from bench.features.vocab import load_detic_vocabulary


@pytest.fixture(scope="module")
def scientific_mm(data_root, cache):
    return load_dataset("scientific_mm", data_root, cache)


@pytest.fixture(scope="module")
def clip_keywords(scientific_mm, data_root):
    return make_tagger("clip_features").tag(scientific_mm, data_root, 15)


def photo_dataset(tmp_path, names=("chelsea", "coffee")):
    """Items whose images are real photos written as local jpg files."""
    import skimage.data as skimage_data  # test dependency: scikit-image (its CC0 sample photos)
    from PIL import Image

    refs = []
    for name in names:
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(skimage_data, name)()).convert("RGB").save(path, quality=95)
        refs.append([str(path)])
    refs.append(["http://example.com/not-fetched.jpg"])
    ids = [*names, "url_only"]
    return from_sequences(
        "photos", ids, ["u"], [np.arange(1, len(ids) + 1)], item_text=[[n] for n in ids], item_images=refs
    )


def test_detic_vocabulary(data_root):
    vocab = load_detic_vocabulary(data_root)
    assert len(vocab.names) == 1203 + 365 and vocab.embeddings.shape == (1568, 512)
    assert vocab.names[0] == "aerosol can" and "person" in vocab.names
    np.testing.assert_allclose(np.linalg.norm(vocab.embeddings, axis=1), 1.0, atol=1e-4)


def test_clip_features_keywords_shape_and_determinism(clip_keywords, scientific_mm, data_root):
    keywords, counts = clip_keywords
    assert counts == {"tagged": 1585, "skipped_other_sources": 0}
    assert len(keywords) == 1585 and all(len(item) == 1 and len(item[0]) == 15 for item in keywords)
    assert all(len(set(item[0])) == 15 for item in keywords)  # duplicates across LVIS/O365 merged
    assert len({tuple(item[0]) for item in keywords}) > 1000  # images differ, so do their keywords
    again, _ = make_tagger("clip_features").tag(scientific_mm, data_root, 5)
    assert [item[0] for item in again] == [item[0][:5] for item in keywords]  # top 5 = first 5 of top 15


@pytest.mark.parametrize("title_word, keyword", [("tape", "tape"), ("glove", "glove"), ("bottle", "bottle")])
def test_clip_features_keywords_are_plausible(clip_keywords, scientific_mm, title_word, keyword):
    """Items whose title names an object get that object among their image keywords far more
    often than items in general: the image embedding really is matched to the vocabulary."""
    keywords, _ = clip_keywords
    has = [any(keyword in k for k in item[0]) for item in keywords]
    titled = [i for i in range(scientific_mm.n_items) if title_word in scientific_mm.item_text[i][0].lower()]
    assert len(titled) >= 10
    rate_titled = sum(has[i] for i in titled) / len(titled)
    rate_all = sum(has) / len(has)
    assert rate_titled > 0.5 and rate_titled > 1.5 * rate_all, (rate_titled, rate_all)


def test_show_keywords_rows(data_root, cache):
    rows = show_keywords("scientific_mm", 5, data_root, cache)
    assert [r["item"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["title"].startswith("Shoe GOO") and len(rows[1]["keywords"][0].split(", ")) >= 15
    assert "shoe" in rows[1]["keywords"][0]


def test_efficientnet_on_real_photos(tmp_path, data_root):
    ds = photo_dataset(tmp_path)
    keywords, counts = make_tagger("efficientnet").tag(ds, data_root, 5)
    assert counts == {"tagged": 2, "skipped_url": 1}
    cat, coffee, url_only = keywords
    assert len(cat[0]) == 5 and len(set(cat[0])) == 5
    assert any(("cat" in k or "mau" in k) for k in cat[0][:2]), cat
    assert coffee[0][0] in {"espresso", "tea cup", "coffee mug", "cup"}, coffee
    assert url_only == []


def make_tiny_clip(folder):
    """A randomly initialised, tiny CLIP in transformers' format with a byte-level tokenizer: it
    exercises the loading and scoring path (real CLIP weights cannot be shipped or fetched)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {
        c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])
    }
    text = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)


def test_clip_model_dir_tagger(tmp_path, data_root):
    make_tiny_clip(tmp_path / "clip")
    vocab_file = tmp_path / "vocab.txt"
    names = ["cat", "dog", "coffee cup", "glue bottle", "tape", "glove", "multimeter", "beaker"]
    vocab_file.write_text("\n".join(names) + "\n")
    ds = photo_dataset(tmp_path)
    tagger = make_tagger("clip", model_dir=tmp_path / "clip", vocab_file=vocab_file)
    keywords, counts = tagger.tag(ds, data_root, 3)
    assert counts == {"tagged": 2, "skipped_url": 1}
    assert all(len(item[0]) == 3 and set(item[0]) <= set(names) for item in keywords[:2])
    assert tagger.tag(ds, data_root, 3)[0] == keywords


def test_clip_tagger_errors(tmp_path):
    with pytest.raises(BenchError, match="CLIP model directory not found"):
        make_tagger("clip", model_dir=tmp_path / "missing", vocab_file=tmp_path / "v.txt")
    (tmp_path / "v.txt").write_text("cat\n")
    (tmp_path / "notclip").mkdir()
    tagger = make_tagger("clip", model_dir=tmp_path / "notclip", vocab_file=tmp_path / "v.txt")
    with pytest.raises(BenchError, match="cannot load CLIP model"):
        tagger.load()
    with pytest.raises(BenchError, match="vocabulary file not found"):
        make_tagger("clip", model_dir=tmp_path, vocab_file=tmp_path / "none.txt")


def test_keyword_file_tagger(tmp_path, data_root):
    ds = from_sequences("k", ["A", "B", "C"], ["u"], [np.array([1, 2, 3])], item_text=[["a"], ["b"], ["c"]])
    tsv = tmp_path / "kw.tsv"
    tsv.write_text("A\tred, box, lid\nA\tblue box\nB\tglove\nZ\tunknown item\n")
    keywords, counts = make_tagger("keywords", path=tsv).tag(ds, data_root, 2)
    assert keywords == [[["red", "box"], ["blue box"]], [["glove"]], []]
    assert counts == {"tagged": 3, "unknown_items_in_file": 1}
    js = tmp_path / "kw.json"
    js.write_text(json.dumps({"C": [["x", "y"]]}))
    assert make_tagger("keywords", path=js).tag(ds, data_root, 15)[0] == [[], [], [["x", "y"]]]
    tsv.write_text("A\tok\nB has no tab\n")
    with pytest.raises(BenchError, match=r"kw\.tsv:2: expected"):
        make_tagger("keywords", path=tsv).tag(ds, data_root, 2)


def test_tagger_registry():
    assert set(TAGGERS.names()) == {"clip_features", "efficientnet", "clip", "keywords"}
    with pytest.raises(BenchError, match="unknown image tagger 'clip_feature'.*Did you mean 'clip_features'"):
        make_tagger("clip_feature")
    with pytest.raises(BenchError, match="bad options"):
        make_tagger("efficientnet", size=3)
