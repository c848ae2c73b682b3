"""The training loop on a real slice: learning, early stopping, resume, NaN handling."""

import math

import pytest
import torch

from bench import sealed
from bench.engine.batching import make_rows
from bench.engine.evaluator import EvalConfig
from bench.engine.seeding import seed_everything
from bench.engine.trainer import TrainerConfig, fit
from bench.errors import BenchError
from bench.nn.model import ModelContext
from bench.plugins import get_model_class


def make_sasrec(split, seed=0, **cfg):
    seed_everything(seed)
    cls = get_model_class("sasrec")
    ctx = ModelContext(split.n_items, 20, split.train.item_counts(split.n_items))
    return cls(cls.Config(**cfg), ctx)


def test_sasrec_learns_and_beats_chance(small_split):
    model = make_sasrec(small_split)
    result = fit(model, small_split, "train", TrainerConfig(epochs=6, batch_size=32, lr=3e-3), EvalConfig(), 0, 20)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.5
    chance = 20 / small_split.n_items
    assert result.best_value > 3 * chance


def test_early_stopping_respects_patience(small_split):
    model = make_sasrec(small_split)
    cfg = TrainerConfig(epochs=50, batch_size=64, lr=1e-7, patience=2)  # too small a step to improve
    result = fit(model, small_split, "train", cfg, EvalConfig(), 0, 20)
    assert len(result.history) <= result.best_epoch + 3


def test_resume_matches_uninterrupted_run(small_split, tmp_path):
    cfg = TrainerConfig(epochs=4, batch_size=64)
    straight = make_sasrec(small_split)
    r1 = fit(straight, small_split, "train", cfg, EvalConfig(), 0, 20, tmp_path / "a.ckpt")
    part = make_sasrec(small_split)
    fit(part, small_split, "train", cfg.model_copy(update={"epochs": 2}), EvalConfig(), 0, 20, tmp_path / "b.ckpt")
    torch.manual_seed(123)  # the resumed run must not depend on the state the process is in
    resumed = make_sasrec(small_split, seed=99)
    r2 = fit(resumed, small_split, "train", cfg, EvalConfig(), 0, 20, tmp_path / "b.ckpt")
    assert [h["epoch"] for h in r2.history] == [0, 1, 2, 3]
    # bit for bit: the checkpoint restores weights, optimizer moments and every RNG state exactly
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    assert [h["Recall@20"] for h in r1.history] == [h["Recall@20"] for h in r2.history]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_nan_loss_stops_with_clear_message(small_split, tmp_path):
    model = make_sasrec(small_split)
    real_loss = model.loss
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        return real_loss(batch) * (float("nan") if calls["n"] > 30 else 1.0)

    model.loss = flaky
    per_epoch = math.ceil(len(make_rows(small_split.train, 20, "packed")[0]) / 16)
    calls["n"] = 30 - per_epoch - 1 if per_epoch < 30 else -per_epoch + 5  # the NaN comes in epoch 1
    with pytest.raises(BenchError, match=r"non-finite loss \(nan\) in train epoch 1 batch \d+; last good checkpoint kept"):
        fit(model, small_split, "train", TrainerConfig(epochs=3, batch_size=16), EvalConfig(), 0, 20, tmp_path / "c.ckpt")
    assert (tmp_path / "c.ckpt").exists()
    assert sealed.read(tmp_path / "c.ckpt", "checkpoint")["epoch"] == 0
