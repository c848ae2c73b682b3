"""benchmarks/recbole_crosseval.py maps RecBole's GRU4Rec weights onto the harness's GRU4Rec:
items are re-indexed by RecBole's token table, so the same model scores the same items."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.gru4rec import GRU4Rec
from bench.nn.model import ModelContext

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recbole_crosseval.py"


def _script():
    spec = importlib.util.spec_from_file_location("recbole_crosseval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ctx(n_items: int) -> ModelContext:
    return ModelContext(n_items, 10, np.ones(n_items + 1, dtype=np.int64))


def test_recbole_weights_score_the_same_items(tmp_path):
    torch.manual_seed(0)
    n = 9
    ours = GRU4Rec(GRU4Rec.Config(), _ctx(n)).eval()
    # RecBole's ids: [PAD] first, then items in order of first appearance (a permutation)
    tokens = np.concatenate([[0], np.random.default_rng(0).permutation(np.arange(1, n + 1))])
    state = {k: v.numpy() for k, v in ours.state_dict().items()}
    np.savez(tmp_path / "w.npz", item_tokens=tokens, **{
        "item_embedding.weight": state["item_emb.weight"][tokens],  # RecBole row i holds item tokens[i]
        "gru_layers.weight_ih_l0": state["gru.weight_ih_l0"], "gru_layers.weight_hh_l0": state["gru.weight_hh_l0"],
        "dense.weight": state["dense.weight"], "dense.bias": state["dense.bias"],
    })
    loaded = _script().load_recbole_gru4rec(tmp_path / "w.npz", _ctx(n))
    history = torch.tensor([[3, 5, 1, 0], [9, 0, 0, 0]])
    lengths = torch.tensor([3, 1])
    with torch.no_grad():
        assert torch.equal(loaded.score(history, lengths), ours.score(history, lengths))
    with pytest.raises(SystemExit, match="not exactly this dataset"):
        _script().load_recbole_gru4rec(tmp_path / "w.npz", _ctx(n + 1))
