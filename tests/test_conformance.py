"""Every registered model keeps the model contract (bench.nn.model.SeqRecModel), taken from the
registry rather than a hand-kept list, so a new model is checked the moment it registers:

- it trains: two optimiser steps per stage on a tiny slice of the real data (stages chained as
  the runner chains them), a finite scalar loss, weights that move, the batch left untouched;
- it scores every item: [B, n_items + 1], finite for every real item;
- its state_dict survives the harness's checkpoint format and gives identical scores;
- it refuses what it cannot do with a BenchError: the strict cold-item training classes when its
  loss cannot honour them (honours_train_classes), and item features it needs but lacks (unless
  it declares a fallback, features_optional). A model that says it honours the training classes
  must: its loss drops when classes are left out.

Content models get random item features over the real items (the real feature store needs the
text encoder). Sizes are shrunk by overrides so the whole file stays well under a minute.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import sealed
from bench.engine.batching import make_rows
from bench.engine.spec import GROUPS, build_spec
from bench.engine.trainer import TrainerConfig, make_optimizer
from bench.errors import BenchError
from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.plugins import MODELS, get_model_class

MAX_LEN = 20  # small_split's max_len
ROWS = 32
# applied where a model's config has the field: small layers, few experts / codes / clustering rounds
TINY = {"hidden": 32, "ffn": 64, "layers": 1, "embedding": 32, "mlp_hidden": 32, "pool_hidden": 32,
        "n_experts": 2, "n_attributes": 16, "kmeans_iters": 3, "n_codes": 4, "code_bits": 3,
        "opq_iters": 2, "pq_iters": 2}
NAMES = MODELS.names()


def tiny_config(cls):
    fields = cls.Config.model_fields
    return cls.Config(**{k: v for k, v in TINY.items() if k in fields})


def features_for(cls, cfg, n_items: int) -> ItemFeatures | None:
    if cls.needs_features(cfg) is None:
        return None
    feats = ItemFeatures.random(n_items, dim=16, seed=0)
    if hasattr(cfg, "n_keywords"):
        feats.meta["n_keywords"] = cfg.n_keywords  # as the store records the keyword count it built
    return feats


def rows(train, mode: str) -> dict[str, torch.Tensor]:
    """The first ROWS training rows as the trainer lays them out, trailing padding columns trimmed."""
    inp, tgt = make_rows(train, MAX_LEN, mode)
    inp, tgt = inp[:ROWS], tgt[:ROWS]
    lengths = (inp > 0).sum(1)
    width = int(lengths.max())
    return {"input": inp[:, :width], "target": tgt[:, :width], "lengths": lengths}


def context(split, feats, train_classes=None) -> ModelContext:
    return ModelContext(split.n_items, MAX_LEN, split.train.item_counts(split.n_items), feats,
                        train_classes=train_classes)


def two_steps(model, batch) -> None:
    """Two steps of the trainer's own optimiser; the loss is a finite scalar, the batch is not
    written into, and some trainable weight moves."""
    kept = {k: v.clone() for k, v in batch.items()}
    before = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    assert before, "a trainable model without trainable parameters"
    opt = make_optimizer(model, TrainerConfig(lr=1e-2))
    model.train()
    for _ in range(2):
        loss = model.loss(batch)
        assert loss.ndim == 0 and torch.isfinite(loss), loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k in batch:
        assert torch.equal(batch[k], kept[k]), f"loss() wrote into batch[{k!r}]"
    moved = [k for k, p in model.named_parameters() if k in before and not torch.equal(p.detach(), before[k])]
    assert moved, "no weight moved in two optimiser steps"


def trained(cls, cfg, ctx, train):
    """Every stage the config runs, one instance per stage carrying the transferable weights, as
    bench.engine.runner.train_stages chains them."""
    state, model = None, None
    for stage in cls.stages_for(cfg):
        torch.manual_seed(0)
        model = cls(cfg, ctx)
        model.set_stage(stage)
        if state is not None:
            model.load_transferable(state)
        if not model.trainable:
            break
        two_steps(model, rows(train, model.sample_mode_for(stage)))
        state = model.transferable_state()
    return model


def test_the_registry_holds_every_model_package():
    assert {"sasrec", "msm4sr", "pop"} <= set(NAMES) and len(NAMES) >= 13


@pytest.mark.parametrize("name", NAMES)
def test_trains_scores_every_item_and_round_trips(name, small_split):
    cls = get_model_class(name)
    assert cls.label, "a model needs a table label"
    for field, space in cls.Config.search_space().items():
        assert space[0] in {"float", "int", "categorical", "loguniform"}, field
        if field.split(".", 1)[0] in GROUPS:  # a run-level setting: a valid override of this model's runs
            value = space[1][0] if space[0] == "categorical" else space[1]
            spec = build_spec("scientific", "leave_one_out", name, 0, {field: value})
            if field.count(".") == 2 and field.startswith("trainer."):  # trainer.<stage>.<key>
                _, stage, key = field.split(".")
                assert getattr(spec.trainer[stage], key) == value, field
        else:
            assert field in cls.Config.model_fields, field
    with pytest.raises(ValueError):
        cls.Config(not_a_field=1)
    cfg = tiny_config(cls)
    ctx = context(small_split, features_for(cls, cfg, small_split.n_items))
    model = trained(cls, cfg, ctx, small_split.train)

    batch = rows(small_split.train, "packed")
    history, lengths = batch["input"], batch["lengths"]
    model.eval()
    with torch.no_grad():
        scores = model.score(history, lengths)
    assert scores.shape == (ROWS, small_split.n_items + 1)
    assert torch.isfinite(scores[:, 1:]).all()

    # the checkpoint format the trainer and the store write; a fresh instance, other initial weights
    state = sealed.loads(sealed.dumps(model.state_dict(), "checkpoint"), "checkpoint")
    torch.manual_seed(1)
    twin = cls(cfg, ctx)
    twin.set_stage(model.stage)
    twin.load_state_dict(state)
    twin.eval()
    with torch.no_grad():
        assert torch.equal(twin.score(history, lengths), scores)


@pytest.mark.parametrize("name", NAMES)
def test_refuses_what_it_cannot_do(name, small_split):
    cls = get_model_class(name)
    cfg = tiny_config(cls)
    feats = features_for(cls, cfg, small_split.n_items)
    if feats is not None and not cls.features_optional:
        with pytest.raises(BenchError):
            cls(cfg, context(small_split, None))
    elif feats is not None:  # a declared fallback: it builds, and says what it used instead
        assert cls(cfg, context(small_split, None)) is not None

    # strict cold items: the items absent from the batch are left out of the training classes
    stage = cls.stages_for(cfg)[-1]
    probe = torch.manual_seed(0) and cls(cfg, context(small_split, feats))
    probe.set_stage(stage)
    batch = rows(small_split.train, probe.sample_mode_for(stage))
    classes = np.ones(small_split.n_items + 1, dtype=bool)
    classes[1:] = np.isin(np.arange(1, small_split.n_items + 1), torch.cat([batch["input"], batch["target"]]).numpy())
    assert classes[1:].any() and not classes[1:].all()
    strict = context(small_split, feats, classes)
    if not cls.honours_train_classes:
        with pytest.raises(BenchError, match="new items out of training"):
            cls(cfg, strict)
        return
    model = cls(cfg, strict)
    model.set_stage(stage)
    model.load_state_dict(probe.state_dict())  # the same weights; only the classes differ
    if not model.trainable:
        return
    losses = []
    for m in (model, probe):
        m.train()
        torch.manual_seed(2)  # the same dropout and augmentation draws for both
        losses.append(m.loss(batch).item())
    assert losses[0] < losses[1], f"{name} says it honours train_classes, yet its loss ignores them: {losses}"
