"""A model's numbers may only change together with its numerics version (which keys every run).

Each registered model is built on a fixed synthetic context and seed; its training loss (every
stage) and scores are fingerprinted. A fingerprint that moves while the version stays the same
fails: bump the model's `numerics_version` (old cells are then re-run, never silently reused)
and record the new fingerprint with BENCH_UPDATE_FINGERPRINTS=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.engine.batching import make_rows
from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.plugins import MODELS, get_model_class
from protocols.base import TrainSequences

FILE = Path(__file__).with_name("numerics_fingerprints.json")
N_ITEMS, MAX_LEN = 40, 8
# loose enough for reordered float arithmetic, tight enough for any real change of the maths
RTOL = 1e-4
# the few settings that the tiny context cannot hold at their defaults
SMALL = {"vqrec": {"n_codes": 4, "code_bits": 3}}


def _context() -> tuple[ModelContext, TrainSequences]:
    g = np.random.default_rng(0)
    lengths = g.integers(3, 12, size=24)
    items = g.integers(1, N_ITEMS + 1, size=int(lengths.sum()))
    train = TrainSequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), items.astype(np.int64))
    feats = ItemFeatures.random(N_ITEMS, dim=16, seed=0)
    feats.meta["n_keywords"] = 15
    return ModelContext(N_ITEMS, MAX_LEN, train.item_counts(N_ITEMS), feats), train


def fingerprint(name: str, **config) -> dict[str, float]:
    ctx, train = _context()
    cls = get_model_class(name)
    torch.manual_seed(0)
    model = cls(cls.Config(**{**SMALL.get(name, {}), **config}), ctx)
    out = {}
    for stage in getattr(model, "stages", cls.stages):
        model.set_stage(stage)
        inp, tgt = make_rows(train, MAX_LEN, model.sample_mode_for(stage))
        batch = {"input": inp[:16], "target": tgt[:16], "lengths": (inp[:16] > 0).sum(1)}
        if model.trainable:
            torch.manual_seed(1)
            model.train()
            out[f"loss:{stage}"] = float(model.loss(batch))
        model.eval()
        with torch.no_grad():
            scores = model.score(inp[:8], (inp[:8] > 0).sum(1))[:, 1:].double()
        out[f"scores:{stage}"] = float(scores.mean())
        out[f"scores_sd:{stage}"] = float(scores.std())
    return out


NAMES = sorted(MODELS.names())


@pytest.mark.parametrize("name", NAMES)
def test_outputs_change_only_with_a_version_bump(name):
    stored = json.loads(FILE.read_text()) if FILE.exists() else {}
    version = get_model_class(name).numerics_version
    now = fingerprint(name)
    if os.environ.get("BENCH_UPDATE_FINGERPRINTS"):
        stored[name] = {"version": version, "fingerprint": now}
        FILE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
        return
    assert name in stored, f"no fingerprint for {name}: record it with BENCH_UPDATE_FINGERPRINTS=1"
    old = stored[name]
    if old["version"] != version:
        pytest.fail(f"{name}: numerics_version {old['version']} -> {version}; record the new fingerprint "
                    "with BENCH_UPDATE_FINGERPRINTS=1")
    assert old["fingerprint"].keys() == now.keys()
    for key, value in now.items():
        assert value == pytest.approx(old["fingerprint"][key], rel=RTOL, abs=1e-6), (
            f"{name} {key} changed ({old['fingerprint'][key]} -> {value}) without a numerics_version bump"
        )


def test_every_model_is_fingerprinted_and_fingerprints_see_a_change():
    assert set(json.loads(FILE.read_text())) == set(NAMES)
    # the fingerprint is sensitive: a changed hyper-parameter moves it
    base, changed = fingerprint("sasrec"), fingerprint("sasrec", layers=1)
    assert any(abs(changed[k] - base[k]) > RTOL * abs(base[k]) + 1e-6 for k in base)
