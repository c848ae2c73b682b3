"""The device-resident training epoch: the same batches and numbers as the per-step host loop it
replaced, and no host synchronisation inside an epoch (counted on CPU; CUDA's sync debug mode
where a GPU exists)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from bench.engine.batching import ResidentRows, iterate_batches, make_rows
from bench.engine.evaluator import EvalConfig
from bench.engine.seeding import seed_everything
from bench.engine.spec import build_spec
from bench.engine.trainer import TrainerConfig, fit, make_optimizer, train_epoch
from bench.errors import BenchError
from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.plugins import get_model_class
from protocols.base import TrainSequences

# Calls that make the host wait for the device: explicit reads, and ops whose output size depends
# on the data (the host must see the data to allocate the result).
EXPLICIT = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"}
DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "argwhere", "nonzero_static"}


class SyncCounter(TorchFunctionMode):
    """Counts every torch call that would synchronise with a CUDA device, by name. `host` holds
    tensors that live on the host even when the model is on a GPU (Adam's step counters, read with
    .item() by torch.optim when not capturable): reading those waits for nothing."""

    def __init__(self, host=lambda: ()):
        super().__init__()
        self.host = host  # -> those tensors now (an optimizer creates its state at its first step)
        self.explicit: dict[str, int] = {}
        self.data_dependent: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in EXPLICIT and args and any(args[0] is t for t in self.host()):
            pass
        elif name in EXPLICIT:
            self.explicit[name] = self.explicit.get(name, 0) + 1
        elif name in DATA_DEPENDENT or (name in ("__getitem__", "__setitem__") and _bool_index(args[1])):
            self.data_dependent[name] = self.data_dependent.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _context(n_items=40, max_len=8, features=False):
    g = np.random.default_rng(0)
    lengths = g.integers(3, 12, size=60)
    items = g.integers(1, n_items + 1, size=int(lengths.sum()))
    train = TrainSequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), items.astype(np.int64))
    feats = ItemFeatures.random(n_items, dim=16, seed=0) if features else None
    if feats is not None:
        feats.meta["n_keywords"] = 15
    return ModelContext(n_items, max_len, train.item_counts(n_items), feats), train


def _model(name, ctx, seed=0):
    seed_everything(seed)
    cls = get_model_class(name)
    return cls(cls.Config(), ctx)


def _reference_epoch(model, optimizer, inp, tgt, cfg, generator) -> float:
    """The loop fit() ran before the resident epoch: host batches, one .item() per step."""
    loss_sum = 0.0
    for batch in iterate_batches(inp, tgt, cfg.batch_size, generator, cfg.bucket_by_length):
        loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        loss_sum += loss.item()
    return loss_sum


@pytest.mark.parametrize("bucket", [False, True])
def test_resident_batches_are_the_host_batches(bucket):
    _, train = _context()
    inp, tgt = make_rows(train, 8, "packed")
    host = list(iterate_batches(inp, tgt, 7, torch.Generator().manual_seed(3), bucket))
    resident, dropped = ResidentRows(inp, tgt, torch.device("cpu")).epoch(7, torch.Generator().manual_seed(3), bucket)
    assert dropped == 0 and len(host) == len(resident)
    for h, r in zip(host, resident):
        assert h.keys() == r.keys()
        for k in h:
            assert torch.equal(h[k], r[k]), k


def test_fixed_shape_batches_are_full_and_count_what_they_drop():
    _, train = _context()
    inp, tgt = make_rows(train, 8, "packed")
    batches, dropped = ResidentRows(inp, tgt, torch.device("cpu")).epoch(
        16, torch.Generator().manual_seed(0), True, fixed_shape=True)
    assert {tuple(b["input"].shape) for b in batches} == {(16, 8)}
    assert dropped == len(inp) % 16 and len(batches) == len(inp) // 16
    # the rows kept are distinct rows of the data, targets aligned with their inputs
    kept = torch.cat([b["input"] for b in batches])
    assert len(torch.unique(kept, dim=0)) == len(torch.unique(inp, dim=0)) or dropped > 0


@pytest.mark.parametrize("name,stage", [("sasrec", None), ("msm4sr", "pretrain"), ("msm4sr", "finetune")])
def test_resident_epoch_equals_the_per_step_loop(name, stage):
    """Same seed, same data order, same dropout draws: the epoch loss and every weight after two
    epochs are bit for bit those of the loop it replaced (CPU, one thread: multi-threaded
    reductions need not repeat bit for bit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _bitwise_two_epochs(name, stage)
    finally:
        torch.set_num_threads(threads)


def _bitwise_two_epochs(name, stage):
    ctx, train = _context(features=name == "msm4sr")
    cfg = TrainerConfig(batch_size=16, bucket_by_length=True)
    ends = []
    for resident in (False, True):
        model = _model(name, ctx)
        if stage:
            model.set_stage(stage)
        inp, tgt = make_rows(train, 8, model.sample_mode_for(stage or "train"))
        optimizer, order = make_optimizer(model, cfg), torch.Generator().manual_seed(5)
        torch.manual_seed(11)
        model.train()
        losses = []
        rows = ResidentRows(inp, tgt, torch.device("cpu"))
        for _ in range(2):
            if resident:
                batches, _ = rows.epoch(cfg.batch_size, order, cfg.bucket_by_length)
                losses.append(train_epoch(model, optimizer, batches, cfg, contextlib.nullcontext())[0].item())
            else:
                losses.append(_reference_epoch(model, optimizer, inp, tgt, cfg, order))
        ends.append((losses, {k: v.clone() for k, v in model.state_dict().items()}))
    assert ends[0][0] == ends[1][0]
    for k, v in ends[0][1].items():
        assert torch.equal(v, ends[1][1][k]), k


# Host reads per step that the models' own losses make on the GPU path (msm4sr.fast, a CPU-only
# path, switched off as on cuda; bench.nn.static's shape-static forms, as on any accelerator): none.
# The trainer adds none either (test below with a host-free loss).
MODEL_READS_PER_STEP = {
    ("sasrec", None): ({}, {}),
    ("msm4sr", "pretrain"): ({}, {}),
    ("msm4sr", "finetune"): ({}, {}),
}


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_msm4sr_static_losses_equal_the_selecting_ones(stage, monkeypatch):
    """Without dropout (eval mode) the accelerator's every-position losses are the CPU's
    real-positions-only losses to float rounding, gradients included (fine-tuning with
    restricted classes: items 3 and 7 are never classes)."""
    from bench.nn import static

    ctx, train = _context(features=True)
    classes = np.ones(ctx.n_items + 1, dtype=bool)
    classes[[3, 7]] = False
    ctx.train_classes = classes
    model = _model("msm4sr", ctx)
    model.set_stage(stage)
    model.eval()
    inp, tgt = make_rows(train, 8, model.sample_mode_for(stage))
    tgt = torch.as_tensor(tgt)
    if stage == "finetune":
        tgt = torch.where((tgt == 3) | (tgt == 7), 0, tgt)  # targets are always classes
    batch = {"input": torch.as_tensor(inp), "target": tgt, "lengths": (torch.as_tensor(inp) > 0).sum(1)}
    results = []
    for on in (False, True):
        monkeypatch.setattr(static, "STATIC_ON_CPU", on)
        model.zero_grad(set_to_none=True)
        loss = model.loss(batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-4, atol=1e-6, msg=name)


def _count_epoch(model, train, mode, batch_size=16):
    cfg = TrainerConfig(batch_size=batch_size)
    rows = ResidentRows(*make_rows(train, 8, mode), torch.device("cpu"))
    warm, _ = rows.epoch(cfg.batch_size, torch.Generator().manual_seed(1))
    batches, _ = rows.epoch(cfg.batch_size, torch.Generator().manual_seed(0))
    optimizer = make_optimizer(model, cfg)
    model.train()
    train_epoch(model, optimizer, warm, cfg, contextlib.nullcontext())  # creates Adam's state
    with SyncCounter(lambda: _adam_steps(optimizer)) as counter:
        stats = train_epoch(model, optimizer, batches, cfg, contextlib.nullcontext())
    assert len(batches) > 3 and stats.shape == (3,)
    return counter, len(batches), stats


def test_trainer_epoch_reads_nothing_from_the_device():
    """A loss that needs no host read: the whole epoch (steps, clipping, Adam, loss sums and the
    non-finite check) makes no read at all; the counter does see the caller's one read after."""
    ctx, train = _context()
    torch.manual_seed(0)
    counter, n, stats = _count_epoch(_Toy(ctx.n_items), train, "packed")
    assert counter.explicit == {} and counter.data_dependent == {}, (n, counter.explicit, counter.data_dependent)
    with SyncCounter() as counter:
        values = stats.tolist()
    assert counter.explicit == {"tolist": 1} and values[1] == -1.0  # no non-finite loss


@pytest.mark.parametrize("name,stage", list(MODEL_READS_PER_STEP))
def test_models_host_reads_per_step_are_known(name, stage, monkeypatch):
    from bench.nn import static
    from msm4sr import fast

    monkeypatch.setattr(fast, "supported", lambda *a: False)  # as on cuda
    monkeypatch.setattr(static, "STATIC_ON_CPU", True)
    ctx, train = _context(features=name == "msm4sr")
    model = _model(name, ctx)
    if stage:
        model.set_stage(stage)
    counter, n, _ = _count_epoch(model, train, model.sample_mode_for(stage or "train"))
    explicit, data_dependent = MODEL_READS_PER_STEP[(name, stage)]
    assert counter.explicit == {k: v * n for k, v in explicit.items()}
    assert counter.data_dependent == {k: v * n for k, v in data_dependent.items()}


def _adam_steps(*optimizers) -> list[torch.Tensor]:
    steps = [s["step"] for o in optimizers for s in o.state.values()]
    assert all(t.device.type == "cpu" and t.dim() == 0 for t in steps)
    return steps


def test_fit_reads_the_device_once_per_epoch(small_split, monkeypatch):
    """Over a whole fit (validation stubbed out), the only host reads are one per epoch."""
    from types import SimpleNamespace

    import bench.engine.trainer as trainer

    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: SimpleNamespace(means={"Recall@20": 0.1}, seconds=0.0))
    model = _model("sasrec", ModelContext(small_split.n_items, 20, small_split.train.item_counts(small_split.n_items)))
    made = []
    monkeypatch.setattr(trainer, "make_optimizer", lambda *a: made.append(make_optimizer(*a)) or made[-1])
    with SyncCounter(lambda: _adam_steps(*made)) as counter:
        result = fit(model, small_split, "train", TrainerConfig(epochs=3, batch_size=64), EvalConfig(), 0, 20)
    assert len(result.history) == 3
    # per epoch: the one read of the loss sums, and the batch widths computed from the host copy
    # of the row lengths (ResidentRows.epoch, a host tensor: no device involved)
    assert counter.explicit == {"tolist": 3, "numpy": 3}


def test_non_finite_loss_is_named_at_the_end_of_its_epoch(small_split):
    model = _model("sasrec", ModelContext(small_split.n_items, 20, small_split.train.item_counts(small_split.n_items)))
    real, calls = model.loss, {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        return real(batch) * (float("inf") if calls["n"] in (4, 6) else 1.0)

    model.loss = flaky
    with pytest.raises(BenchError, match=r"non-finite loss \(inf\) in train epoch 0 batch 3$"):
        fit(model, small_split, "train", TrainerConfig(epochs=2, batch_size=64), EvalConfig(), 0, 20)


def test_fixed_shape_fit_records_dropped_rows(small_split, monkeypatch):
    from types import SimpleNamespace

    import bench.engine.trainer as trainer

    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: SimpleNamespace(means={"Recall@20": 0.1}, seconds=0.0))
    model = _model("sasrec", ModelContext(small_split.n_items, 20, small_split.train.item_counts(small_split.n_items)))
    n_rows = len(make_rows(small_split.train, 20, "packed")[0])
    result = fit(model, small_split, "train", TrainerConfig(epochs=2, batch_size=48, fixed_shape=True),
                 EvalConfig(), 0, 20)
    assert [h["dropped_rows"] for h in result.history] == [n_rows % 48] * 2
    with pytest.raises(BenchError, match="trainer.capture"):
        build_spec("scientific", "leave_one_out", "sasrec", 0, {"trainer.capture": "graphs"})


def test_step_options_are_trainer_fields_hashed_only_when_they_change_the_numbers():
    """capture (where the step runs) never moves the run hash; fixed_shape (what an epoch trains)
    does once set; left at their defaults, the hash is the one runs had before the fields existed."""
    from bench.engine.spec import hashed_spec, spec_key

    base = build_spec("scientific", "leave_one_out", "sasrec", 0, {})
    captured = build_spec("scientific", "leave_one_out", "sasrec", 0, {"trainer.capture": "cudagraphs"})
    fixed = build_spec("scientific", "leave_one_out", "sasrec", 0, {"trainer.fixed_shape": True})
    assert spec_key(base) == spec_key(captured) != spec_key(fixed)
    assert "capture" not in hashed_spec(base)["trainer"]["train"] and "fixed_shape" not in hashed_spec(base)["trainer"]["train"]


class _Toy(torch.nn.Module):
    """A next-item model whose loss never needs the host (dense CE with ignore_index)."""

    def __init__(self, n_items):
        super().__init__()
        self.emb = torch.nn.Embedding(n_items + 1, 16, padding_idx=0)
        self.out = torch.nn.Linear(16, n_items + 1)

    def loss(self, batch):
        logits = self.out(self.emb(batch["input"]))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["target"].flatten(), ignore_index=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the CPU counting tests above still run)")
@pytest.mark.parametrize("fixed_shape", [False, True])
def test_cuda_epoch_passes_sync_debug_mode_error(fixed_shape):
    ctx, train = _context()
    device = torch.device("cuda")
    model = _Toy(ctx.n_items).to(device)
    cfg = TrainerConfig(batch_size=16, bucket_by_length=True)
    rows = ResidentRows(*make_rows(train, 8, "packed"), device)
    optimizer = make_optimizer(model, cfg)
    for _ in range(2):  # the first epoch warms the allocator and optimizer state
        batches, _ = rows.epoch(cfg.batch_size, torch.Generator().manual_seed(0), True, fixed_shape)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            stats = train_epoch(model, optimizer, batches, cfg, contextlib.nullcontext())
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert stats.tolist()[1] == -1.0
