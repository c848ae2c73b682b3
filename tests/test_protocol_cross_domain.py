"""cross_domain: pre-training on source datasets, transfer to a target, refusal to mix encoders."""

import numpy as np
import pytest
import torch

from bench.data.catalog import load_dataset
from bench.data.merge import merge_datasets, merge_features, same_feature_space
from bench.engine.runner import RunEnv, execute
from bench.engine.spec import build_spec, parse_overrides
from bench.errors import BenchError
from bench.features.item_features import ItemFeatures


def test_merge_keeps_domains_apart(scientific, data_root, cache):
    office = load_dataset("office", data_root, cache)
    merged = merge_datasets([scientific, office])
    assert merged.n_items == scientific.n_items + office.n_items
    assert merged.n_users == scientific.n_users + office.n_users
    u = scientific.n_users  # office's first user, its items shifted past scientific's
    np.testing.assert_array_equal(merged.sequence(u), office.sequence(0) + scientific.n_items)
    assert merged.item_ids[scientific.n_items].startswith("office:")


def test_features_from_other_encoder_refused():
    a, b = ItemFeatures.random(5, dim=8), ItemFeatures.random(7, dim=8, slots_t=6)
    a.meta.update(encoder="minilm"), b.meta.update(encoder="minilm")
    merged = merge_features([a, b])
    assert merged.text.shape == (5 + 7 + 1, 6, 8)
    torch.testing.assert_close(merged.text[6:, :6], b.text[1:])
    b.meta["encoder"] = "bert-base"
    with pytest.raises(BenchError, match="feature stores differ in encoder"):
        same_feature_space(a, b, "transfer")


class RandomFeatureEnv(RunEnv):
    """Real datasets and splits, synthetic features of one shared space (no text encoding)."""

    def features_of(self, ds, params):
        feats = ItemFeatures.random(ds.n_items, dim=16, seed=ds.n_items)
        feats.meta.update(encoder="synthetic", n_keywords=params["n_keywords"])
        return feats


def test_pretrain_on_source_then_transfer(data_root, tmp_path):
    env = RandomFeatureEnv(data_root, tmp_path)
    base = ["protocol.source=scientific_mm", "protocol.target=office", "protocol.max_users=150",
            "trainer.pretrain.epochs=1", "trainer.finetune.epochs=1", "trainer.batch_size=64"]
    records = {}
    for mode in ("transductive", "inductive", "zero_shot"):
        spec = build_spec("ignored", "cross_domain", "msm4sr", 0, parse_overrides(base + [f"protocol.mode={mode}"]))
        assert spec.dataset == "office"
        assert spec.model_params["id_embeddings"] is (mode == "transductive")
        _, records[mode], _ = execute(spec, env)
    assert records["zero_shot"]["history"].keys() == {"pretrain"}  # nothing trained on the target
    assert set(records["transductive"]["history"]) == {"pretrain", "finetune"}
    # one pre-training on the source, shared by all three modes
    assert len(list((tmp_path / "store" / "stages").iterdir())) == 1
    assert records["inductive"]["label"] == "MSM4SR [inductive]"
    pop = build_spec("x", "cross_domain", "pop", 0, parse_overrides(base))
    assert execute(pop, env)[1]["label"] == "Pop [target only]"


@pytest.mark.parametrize("mode", ["transductive", "inductive", "zero_shot"])
def test_every_model_drops_ids_outside_transductive_mode(mode):
    """UniSRec spells it mode=inductive, MSM4SR id_embeddings=False; a model left with its ID table in
    zero-shot would add untrained random ID vectors to every item."""
    base = ["protocol.source=office", "protocol.target=scientific", f"protocol.mode={mode}"]
    unisrec = build_spec("x", "cross_domain", "unisrec", 0, parse_overrides(base)).model_params
    msm4sr = build_spec("x", "cross_domain", "msm4sr", 0, parse_overrides(base)).model_params
    assert unisrec["mode"] == ("transductive" if mode == "transductive" else "inductive")
    assert msm4sr["id_embeddings"] is (mode == "transductive")
