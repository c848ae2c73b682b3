"""Content baselines (FDSA, SASRecM): feature inputs, modality configs, scoring against hand-built
forwards (tiny, CPU, random features; the real feature store needs the text encoder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import fit_steps
from torch import nn

import baselines.fdsa  # noqa: F401
import baselines.sasrecm  # noqa: F401
from bench.engine.batching import make_rows
from bench.errors import BenchError
from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.plugins import MODELS, get_model_class
from protocols.base import TrainSequences

N_ITEMS = 40
MAX_LEN = 8
DIM = 16
TINY = {"hidden": 32, "ffn": 64}
NAMES = ["fdsa", "sasrecm"]
NO_IMAGE, NO_FEATURES = 5, 6  # items made to lack image features / any features


def features(seed: int = 0) -> ItemFeatures:
    f = ItemFeatures.random(N_ITEMS, dim=DIM, seed=seed)
    f.image_mask[NO_IMAGE] = False
    f.image[NO_IMAGE] = 0.0
    f.text_mask[NO_FEATURES], f.image_mask[NO_FEATURES] = False, False
    f.text[NO_FEATURES], f.image[NO_FEATURES] = 0.0, 0.0
    return f


def make(name: str, feats: ItemFeatures | None = None, seed: int = 0, **cfg):
    cls = get_model_class(name)
    feats = features() if feats is None else feats
    ctx = ModelContext(N_ITEMS, MAX_LEN, np.ones(N_ITEMS + 1), features=feats)
    torch.manual_seed(seed)
    return cls(cls.Config(**{**TINY, **cfg}), ctx)


def train_rows(model, users: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    """Packed rows (bench.engine.batching) of learnable sequences: each item is followed by item % N + 1."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, MAX_LEN + 2, users)
    seqs = [(rng.integers(0, N_ITEMS) + np.arange(n)) % N_ITEMS + 1 for n in lengths]
    train = TrainSequences(np.concatenate([[0], np.cumsum(lengths)]), np.concatenate(seqs))
    inp, tgt = make_rows(train, MAX_LEN, model.sample_mode_for("train"))
    return {"input": inp, "target": tgt, "lengths": (inp > 0).sum(1)}


def history(items: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    seq = torch.zeros(1, MAX_LEN, dtype=torch.long)
    seq[0, : len(items)] = torch.tensor(items)
    return seq, torch.tensor([len(items)])


def mlp_by_hand(model, feats: ItemFeatures, m: str) -> torch.Tensor:
    """[n_items + 1, H] MLP vectors computed from the ItemFeatures (not the model's buffers)."""
    lin1, lin2 = [layer for layer in model.features.mlp[m] if isinstance(layer, nn.Linear)]
    y = torch.relu(lin2(torch.relu(lin1(feats.mean(m)))))
    has = (feats.text_mask if m == "text" else feats.image_mask).any(1)
    return y * has[:, None]


# --- registry and config ------------------------------------------------------------------------


def test_registered_with_labels_defaults_and_validated_modalities():
    from msm4sr.config import MSM4SRConfig

    for name, label in [("fdsa", "FDSA"), ("sasrecm", "SASRecM")]:
        cls = get_model_class(name)
        assert name in MODELS and cls.label == label and cls.stages == ("train",)
        c = cls.Config()
        assert (c.hidden, c.layers, c.heads, c.ffn, c.dropout) == (64, 2, 2, 256, 0.2)
        assert (c.mlp_hidden, c.modalities) == (64, ("text", "image"))
        for field, spec in cls.Config.search_space().items():
            assert field in cls.Config.model_fields and spec[0] in {"float", "int", "categorical"}
        assert cls.Config(modalities=["image", "text"]).modalities == ("text", "image")
        for bad in [{"modalities": ()}, {"modalities": ("text", "text")}, {"modalities": ("audio",)},
                    {"feature_params": {"n_keywords": 5}}, {"not_a_field": 1}]:  # fmt: skip
            with pytest.raises(ValueError):
                cls.Config(**bad)
        # the same feature-store entry as MSM4SR with the same keyword count / store parameters
        params = {"n_keywords": 10, "feature_params": {"tagger": "clip"}}
        assert cls.needs_features(cls.Config(**params)) == {"n_keywords": 10, "tagger": "clip"}
        assert cls.needs_features(cls.Config(**params)) == get_model_class("msm4sr").needs_features(
            MSM4SRConfig(**params)
        )


def test_bad_features_raise():
    for name in NAMES:
        cls = get_model_class(name)
        with pytest.raises(BenchError, match="needs item features"):
            cls(cls.Config(), ModelContext(N_ITEMS, MAX_LEN, np.ones(N_ITEMS + 1)))
        with pytest.raises(BenchError, match="cover"):
            cls(cls.Config(), ModelContext(N_ITEMS + 1, MAX_LEN, np.ones(N_ITEMS + 2), features=features()))
        f = features()
        f.meta["n_keywords"] = 10
        with pytest.raises(BenchError, match="keywords"):
            make(name, f)
        make(name, f, modalities=("text",))  # the keyword count does not matter without images
        make(name, f, modalities=("image",), n_keywords=10)
        f.image_mask[:] = False  # a store built without image vectors
        with pytest.raises(BenchError, match="no item has image"):
            make(name, f, modalities=("image",), n_keywords=10)


# --- training and scoring -----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_and_scores_all_items(name):
    model = make(name)
    batch = train_rows(model)
    losses = fit_steps(model, batch, 30)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert losses[0] == pytest.approx(np.log(N_ITEMS), rel=0.1)  # CE over the N real items only
    model.eval()
    with torch.no_grad():
        scores = model.score(batch["input"][:7], batch["lengths"][:7])
    assert scores.shape == (7, N_ITEMS + 1) and torch.isfinite(scores).all()


@pytest.mark.parametrize("name", NAMES)
def test_modalities_create_their_own_parameters_and_buffers(name):
    params, buffers = {}, {}
    for mods in [("text",), ("image",), ("text", "image")]:
        model = make(name, modalities=mods)
        params[mods] = {k for k, _ in model.named_parameters()}
        buffers[mods] = {k for k, _ in model.named_buffers()}
        for m in ("text", "image"):
            assert any(k.startswith(f"features.mlp.{m}.") for k in params[mods]) == (m in mods)
            assert (f"features.feat_{m}" in buffers[mods]) == (m in mods)
    assert params[("text",)] != params[("image",)]
    assert params[("text",)] | params[("image",)] == params[("text", "image")]
    # a modality not configured never matters: text-only models on features differing only in images
    other = features()
    other.image = torch.randn_like(other.image)
    seq, lengths = history([1, 2, 3])
    a, b = make(name, modalities=("text",)).eval(), make(name, other, modalities=("text",)).eval()
    with torch.no_grad():
        assert torch.equal(a.score(seq, lengths), b.score(seq, lengths))


@pytest.mark.parametrize("name", NAMES)
def test_feature_tables_never_enter_the_state_dict(name):
    model = make(name)
    state = model.state_dict()
    assert not [k for k in state if "feat_" in k or "has_" in k]
    assert torch.equal(model.features.feat_text, features().mean("text"))
    other = make(name, features(seed=1), seed=1)
    other.load_state_dict(state)  # strict: the same keys whatever the features
    assert torch.equal(other.features.feat_text, features(seed=1).mean("text"))
    assert not torch.equal(other.features.feat_text, model.features.feat_text)


def test_missing_modality_gives_a_zero_vector():
    model = make("sasrecm").eval()
    with torch.no_grad():
        image, text = model.features("image"), model.features("text")
    assert not image[NO_IMAGE].any() and text[NO_IMAGE].any()
    assert not image[NO_FEATURES].any() and not text[NO_FEATURES].any()
    assert not image[0].any() and not text[0].any()  # the padding item


# --- features matter where they should, and nowhere else ----------------------------------------


def perturb_item(model, item: int) -> None:
    with torch.no_grad():
        model.features.feat_text[item] += 0.5


def test_sasrecm_feature_change_moves_only_that_items_row_and_column():
    model, k = make("sasrecm").eval(), 11
    seq, lengths = history([1, 2, 3, 4])
    with torch.no_grad():
        table, scores = model.item_vectors(), model.score(seq, lengths)
        perturb_item(model, k)
        table2, scores2 = model.item_vectors(), model.score(seq, lengths)
        others = torch.arange(N_ITEMS + 1) != k
        assert torch.equal(table[others], table2[others]) and not torch.equal(table[k], table2[k])
        assert torch.equal(scores[:, others], scores2[:, others]) and scores[0, k] != scores2[0, k]
        # in the history, the item's new vector changes the user's whole representation
        seq_k, lengths_k = history([1, k, 3])
        before = model.score(seq_k, lengths_k)
        perturb_item(model, k)
        assert (before[0, others] != model.score(seq_k, lengths_k)[0, others]).float().mean() > 0.9


def test_fdsa_feature_change_matters_only_through_histories_holding_the_item():
    model, k = make("fdsa").eval(), 11
    seq, lengths = history([1, 2, 3, 4])
    seq_k, lengths_k = history([1, k, 3])
    with torch.no_grad():
        a, b = model.score(seq, lengths), model.score(seq_k, lengths_k)
        perturb_item(model, k)
        assert torch.equal(a, model.score(seq, lengths))  # the candidates are ID embeddings only
        assert (b != model.score(seq_k, lengths_k)).float().mean() > 0.9


def test_fdsa_attention_weights_sum_to_one_over_present_modalities():
    ids = torch.arange(N_ITEMS + 1).view(1, -1)
    model = make("fdsa").eval()
    with torch.no_grad():
        merged, w = model.merged_features(ids)
    w = w[0]
    assert w.shape == (N_ITEMS + 1, 2)
    present = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    present[[0, NO_FEATURES]] = False
    assert torch.allclose(w[present].sum(-1), torch.ones(int(present.sum())))
    assert not w[~present].any() and not merged[0, ~present].any()
    assert w[NO_IMAGE].tolist() == [1.0, 0.0]  # the missing image takes no weight
    assert ((w[present] > 0) & (w[present] < 1)).any()  # both modalities really share weight
    with torch.no_grad():  # one modality: its vector, unweighted
        single = make("fdsa", modalities=("image",)).eval()
        merged1, w1 = single.merged_features(ids)
        assert torch.equal(merged1[0], single.features("image"))


# --- score() against a forward built by hand (dropout off) --------------------------------------

ITEMS = [3, NO_IMAGE, 17, NO_FEATURES, 9]


def test_sasrecm_score_matches_a_hand_forward():
    feats = features()
    model = make("sasrecm", feats, dropout=0.0, mlp_dropout=0.0).eval()
    seq, lengths = history(ITEMS)
    with torch.no_grad():
        table = model.item_emb.weight + mlp_by_hand(model, feats, "text") + mlp_by_hand(model, feats, "image")
        h = model.encoder(table[seq])[0, len(ITEMS) - 1]
        expect = h @ table.T  # the content table, not the ID table, on the output side
        got = model.score(seq, lengths)[0]
    assert torch.allclose(got, expect, atol=1e-5)
    assert not torch.allclose(got, h @ model.item_emb.weight.T, atol=1e-3)


def test_fdsa_score_matches_a_hand_forward():
    feats = features()
    model = make("fdsa", feats, dropout=0.0, mlp_dropout=0.0).eval()
    seq, lengths = history(ITEMS)
    with torch.no_grad():
        v = torch.stack([mlp_by_hand(model, feats, m)[seq[0]] for m in ("text", "image")], 1)  # [L, 2, H]
        has = torch.stack([feats.text_mask.any(1), feats.image_mask.any(1)], 1)[seq[0]]
        e = model.attention.score(v).squeeze(-1).exp() * has
        w = e / e.sum(-1, keepdim=True).clamp(min=1e-30)
        f = (w.unsqueeze(-1) * v).sum(1)
        last = len(ITEMS) - 1
        a = model.item_encoder(model.item_emb.weight[seq])[0, last]
        b = model.feature_encoder(f[None])[0, last]
        h = F.layer_norm(model.concat(torch.cat([a, b])), (TINY["hidden"],), model.out_norm.weight,
                         model.out_norm.bias, 1e-12)  # fmt: skip
        expect = h @ model.item_emb.weight.T
        got = model.score(seq, lengths)[0]
    assert torch.allclose(got, expect, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_packed_loss_is_ce_of_every_prefix_score(name):
    """With dropout off, loss() equals the mean CE (over the real items) of score() on each prefix
    of each row: targets at every position, the causal encoder, and no padding class."""
    model = make(name, dropout=0.0, mlp_dropout=0.0).eval()
    batch = train_rows(model, users=3)
    inp, tgt = batch["input"], batch["target"]
    terms = []
    with torch.no_grad():
        for r, t in zip(*torch.nonzero(tgt > 0, as_tuple=True)):
            prefix = torch.where(torch.arange(inp.size(1)) <= t, inp[r], 0)
            s = model.score(prefix[None], torch.tensor([int(t) + 1]))[0, 1:]
            terms.append(F.cross_entropy(s[None], tgt[r, t][None] - 1))
        assert len(terms) > 10
        assert torch.allclose(model.loss(batch), torch.stack(terms).mean(), atol=1e-5)


def test_every_content_model_asks_the_store_the_same_way():
    """One FeatureInputs mixin: equal settings read one store entry; text-only skips image tagging;
    ID-only models read no features."""
    content = ["fdsa", "sasrecm", "unisrec", "vqrec", "msm4sr"]
    both = {"modalities": ["text", "image"], "n_keywords": 10, "feature_params": {"tagger": "clip"}}
    text = {"modalities": ["text"], "feature_params": {"encoder": "x"}}
    for name in content:
        cls = get_model_class(name)
        assert cls.needs_features(cls.Config(**both)) == {"n_keywords": 10, "tagger": "clip"}, name
        assert cls.needs_features(cls.Config(**text)) == {"image_kind": "none", "tagger": None, "encoder": "x"}, name
    for name in ["sasrec", "gru4rec", "pop"]:
        cls = get_model_class(name)
        assert cls.needs_features(cls.Config()) is None
