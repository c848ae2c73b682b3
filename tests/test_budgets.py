"""Per-model training needs and budget limits (bench/engine/budgets.py), and the baseline switches of
issue 22 (GRU4Rec's padding class, DuoRec's same-target masking) on planted cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from baselines.seqops import nt_xent
from bench.engine.budgets import declared_need, training_limits
from bench.engine.spec import build_spec
from bench.engine.trainer import TrainerConfig
from bench.errors import BenchError
from bench.experiment.suites import cells, load_suite
from bench.nn.model import ModelContext
from bench.plugins import MODELS, get_model_class

CPU = {"*": {"epochs_cap": 50, "patience_cap": 5}, "pretrain": {"epochs_cap": 30, "patience_cap": 5}}


def trainer_of(spec, stage="train"):
    t = spec.trainer[stage]
    return t.epochs, t.patience


def write_suite(tmp_path: Path, models, **budgets) -> Path:
    data = {"name": "budgets", "title": "Budgets", "datasets": ["scientific"], "models": models,
            "seeds": [0], **budgets}
    path = tmp_path / "budgets.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_plain_run_gives_bert4rec_at_least_its_declared_need():
    spec = build_spec("scientific", "leave_one_out", "bert4rec", 0, {})
    need = declared_need(get_model_class("bert4rec"), "train")
    assert need == {"epochs": 200, "patience": 20}
    epochs, patience = trainer_of(spec)
    assert (epochs, patience) == (500, 30)  # its trainer_defaults
    # its row layout is in the spec, so in the run hash (records of the packed default keep theirs)
    assert spec.trainer["train"].sample_mode == "prefix"
    limits = training_limits(spec)["train"]
    assert limits["need"] == need and limits["applied"] == {"epochs": 500, "patience": 30}
    assert limits["below_need"] == []
    # an explicit cut is allowed, and recorded
    cut = build_spec("scientific", "leave_one_out", "bert4rec", 0, {"trainer.epochs": 50})
    assert training_limits(cut)["train"]["below_need"] == ["epochs"]
    # the record keeps a plain spec dict: the same answer from it
    assert training_limits(cut.model_dump()) == training_limits(cut)


def test_every_declared_need_is_met_by_the_models_own_defaults():
    declared = 0
    for name in MODELS.names():
        cls = MODELS.get(name)
        for stage in cls.stages:
            need = declared_need(cls, stage)
            if need is None:
                continue
            declared += 1
            assert set(need) == {"epochs", "patience"}
            defaults = TrainerConfig(**cls.trainer_defaults.get(stage, {}))
            assert defaults.epochs >= need["epochs"] and defaults.patience >= need["patience"], (name, stage)
    assert declared >= 2  # bert4rec, s3rec at least


def test_budget_caps_scale_from_declared_needs(tmp_path):
    path = write_suite(
        tmp_path, ["sasrec", "bert4rec", "s3rec"],
        cpu={"training": CPU, "model_overrides": {"s3rec": {"trainer.pretrain.epochs": 10}}},
        quick={"training": {"*": {"epochs_cap": 3, "patience_cap": 3, "respect_need": False}}},
    )
    suite = load_suite(str(path))
    specs = {c.model: c.spec(suite.protocol) for c in cells(suite, "cpu")}
    assert trainer_of(specs["sasrec"]) == (50, 5)  # capped: no declared need
    assert trainer_of(specs["bert4rec"]) == (200, 20)  # the cap never goes below the need
    assert training_limits(specs["bert4rec"])["train"]["below_need"] == []
    # s3rec: the budget's explicit override wins over the rules and is recorded as below the need
    assert trainer_of(specs["s3rec"], "pretrain") == (10, 100)
    assert trainer_of(specs["s3rec"], "finetune") == (50, 5)
    lim = training_limits(specs["s3rec"])
    assert lim["pretrain"]["below_need"] == ["epochs"] and lim["finetune"]["below_need"] == []
    # a smoke budget caps everyone and says so
    quick = {c.model: c.spec(suite.protocol) for c in cells(suite, "quick")}
    assert trainer_of(quick["bert4rec"]) == (3, 3)
    assert training_limits(quick["bert4rec"])["train"]["below_need"] == ["epochs", "patience"]
    # the full budget is each model's own defaults
    full = {c.model: c.spec(suite.protocol) for c in cells(suite, "full")}
    assert trainer_of(full["bert4rec"]) == (500, 30) and trainer_of(full["sasrec"]) == (200, 10)


def test_a_need_can_depend_on_the_configuration(tmp_path):
    """DuoRec's dot-product setting sits on a plateau before it learns: it needs patience 20; its
    cosine setting declares nothing, so the budget's caps apply to it as to SASRec."""
    cls = get_model_class("duorec")
    assert declared_need(cls, "train") == {"epochs": 100, "patience": 20}
    assert declared_need(cls, "train", cls.Config(similarity="cos")) is None
    path = write_suite(tmp_path, ["duorec"], cpu={"training": CPU},
                       variations={"default": {}, "cos": {"duorec.similarity": "cos", "duorec.tau": 0.1}})
    suite = load_suite(str(path))
    specs = {c.variation: c.spec(suite.protocol) for c in cells(suite, "cpu")}
    assert trainer_of(specs["default"]) == (100, 20)
    assert trainer_of(specs["cos"]) == (50, 5)
    assert training_limits(specs["default"])["train"]["need"] == {"epochs": 100, "patience": 20}
    assert training_limits(specs["cos"])["train"]["need"] is None
    # a plain run of the default setting gets its need
    assert trainer_of(build_spec("scientific", "leave_one_out", "duorec", 0, {})) == (200, 20)


def test_rules_apply_to_the_values_before_the_budget(tmp_path):
    path = write_suite(tmp_path, ["sasrec"], overrides={"trainer.epochs": 20, "trainer.patience": 3},
                       cpu={"training": CPU})
    suite = load_suite(str(path))
    (cell,) = cells(suite, "cpu")
    assert trainer_of(cell.spec(suite.protocol)) == (20, 3)  # caps only ever lower a value


def test_main_suite_moved_bert4rec_exception_into_the_model():
    suite = load_suite("main")
    assert "bert4rec" not in suite.cpu.model_overrides
    spec = next(c for c in cells(suite, "cpu") if c.model == "bert4rec").spec(suite.protocol)
    assert trainer_of(spec) == (200, 20)
    assert trainer_of(next(c for c in cells(suite, "cpu") if c.model == "gru4rec").spec(suite.protocol)) == (50, 5)


def test_unknown_stage_in_training_rules_is_one_clear_error(tmp_path):
    path = write_suite(tmp_path, ["sasrec"], cpu={"training": {"pretrian": {"epochs_cap": 3}}})
    suite = load_suite(str(path))
    with pytest.raises(BenchError, match="pretrian"):
        cells(suite, "cpu")


# --- switches -------------------------------------------------------------------------------------


def test_gru4rec_pad_class_puts_the_padding_item_in_the_softmax():
    torch.manual_seed(0)
    ctx = ModelContext(n_items=7, max_len=4, train_item_counts=None)
    cls = get_model_class("gru4rec")
    batch = {"input": torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]),
             "target": torch.tensor([[2, 3, 6, 0], [5, 7, 0, 0]]), "lengths": torch.tensor([3, 2])}
    losses = {}
    for pad in (False, True):
        torch.manual_seed(0)  # the same weights for both
        model = cls(cls.Config(embedding=8, hidden=8, dropout=0.0, pad_class=pad), ctx)
        logits = model.encode(batch["input"]) @ model.item_emb.weight.T  # [B, L, 8 columns]
        keep = batch["target"] > 0
        cols = logits[keep] if pad else logits[keep][:, 1:]
        expected = F.cross_entropy(cols, batch["target"][keep] - (0 if pad else 1))
        losses[pad] = model.loss(batch)
        assert torch.allclose(losses[pad], expected, atol=1e-6)
    assert losses[True] > losses[False]  # one more class in the denominator, same weights


def test_nt_xent_groups_drop_same_label_negatives():
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.1], [0.8, 0.0], [0.1, 1.0]])
    distinct = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(nt_xent(a, b, groups=distinct), nt_xent(a, b))
    shared = torch.tensor([5, 5, 2, 5, 5, 2])  # rows 0 and 1 share a label
    z = torch.cat([a, b])
    logits = z @ z.T
    # anchor 0: positive view 3; views 1 and 4 share its label and leave its negatives
    row0 = torch.logsumexp(logits[0, [2, 3, 5]], 0) - logits[0, 3]
    got = nt_xent(a, b, groups=shared)
    full = torch.stack([
        torch.logsumexp(logits[k, [j for j in range(6) if j != k and (shared[j] != shared[k] or j == (k + 3) % 6)]], 0)
        - logits[k, (k + 3) % 6]
        for k in range(6)
    ]).mean()
    assert torch.allclose(got, full, atol=1e-6)
    assert row0 < torch.logsumexp(logits[0, [1, 2, 3, 4, 5]], 0) - logits[0, 3]


def test_duorec_same_target_masking_leaves_only_the_positive():
    torch.manual_seed(0)
    ctx = ModelContext(n_items=9, max_len=5, train_item_counts=None)
    cls = get_model_class("duorec")
    batch = {"input": torch.tensor([[1, 2, 0], [3, 4, 5], [6, 0, 0], [2, 7, 8]]),
             "target": torch.tensor([[0, 9, 0], [0, 0, 9], [9, 0, 0], [0, 0, 9]]),
             "lengths": torch.tensor([2, 3, 1, 3])}
    for mask, zero in ((True, True), (False, False)):
        model = cls(cls.Config(hidden=16, ffn=16, mask_same_target=mask, positive_bank=0), ctx)
        loss = model.loss(batch)
        assert torch.isfinite(loss)
        # every row's next item is 9: with masking no negative is left, so InfoNCE is exactly 0
        assert (float(model.loss_parts["cl"]) == 0.0) is zero


def test_duorec_identical_inputs_are_not_each_others_negatives():
    ctx = ModelContext(n_items=9, max_len=5, train_item_counts=None)
    cls = get_model_class("duorec")
    model = cls(cls.Config(hidden=16, ffn=16, mask_same_input=True, positive_bank=0), ctx)
    batch = {"input": torch.tensor([[1, 2, 0], [1, 2, 0], [3, 0, 0]]),
             "target": torch.tensor([[0, 4, 0], [0, 5, 0], [6, 0, 0]]), "lengths": torch.tensor([2, 2, 1])}
    sem = torch.tensor([[7, 0], [8, 0], [1, 2]])  # view 5 is the same sequence as rows 0 and 1
    got = model.not_negatives(batch, sem, torch.tensor([4, 5, 6]))
    same = {(0, 1), (0, 5), (1, 5)}
    for i in range(6):
        for j in range(6):
            assert bool(got[i, j]) == (i == j or (min(i, j), max(i, j)) in same), (i, j)
