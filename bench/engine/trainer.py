"""One training loop for every model and stage.

Adam/AdamW, gradient-norm clipping, bf16 autocast on cuda, training rows resident on the device
with no host synchronisation inside an epoch (one read of the loss sums per epoch), validation
every epoch with early stopping on a validation metric, and an atomic checkpoint each epoch holding everything needed
to resume (model, optimizer, early-stopping state, every RNG state, the data-order generator).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench import sealed
from bench.engine.batching import ResidentRows, make_rows
from bench.engine.evaluator import EvalConfig, evaluate
from bench.engine.seeding import restore_rng_state, rng_state
from bench.errors import BenchError, DamagedFile, warn
from bench.progress import SILENT, Reporter
from protocols.base import Split

# Bumped whenever the training loop's numbers change for an unchanged config (it keys every run).
NUMERICS_VERSION = 1


class TrainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    optimizer: str = Field("adam", pattern="^(adam|adamw)$")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(256, gt=0)  # rows; a packed row carries up to max_len targets
    sample_mode: str | None = Field(None, pattern="^(packed|prefix)$")  # None: the model's default
    bucket_by_length: bool = False  # batch rows of similar length (much less padding work)
    epochs: int = Field(200, gt=0)
    patience: int = Field(10, gt=0)
    valid_metric: str = "Recall@20"
    clip_grad_norm: float | None = 5.0
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    bf16: bool = True  # autocast on cuda only
    # An earlier stage (pre-training) is seeded with the run's seed by default, so the spread over
    # seeds includes pre-training variance. True: trained once with seed 0 and reused by every
    # seed (faster; tables then say that the ± omits pre-training variance).
    shared_seed: bool = False
    # How steps run on an accelerator. fixed_shape: every batch batch_size x max_len, the partial
    # batch dropped (counted as `dropped_rows` in the history): it changes what an epoch trains,
    # so it enters the run hash when set. capture: "compile" wraps the loss in torch.compile,
    # "cudagraphs" in its reduce-overhead mode (CUDA graphs; wants fixed_shape); where it runs,
    # not what it computes, so never hashed. Both off by default: on CPU neither pays for its
    # compile time with these small models.
    fixed_shape: bool = False
    capture: str = Field("off", pattern="^(off|compile|cudagraphs)$")


@dataclass
class FitResult:
    best_epoch: int = -1
    best_value: float = float("-inf")
    history: list[dict] = field(default_factory=list)  # per epoch: loss, valid metric, seconds

    @property
    def train_seconds(self) -> list[float]:
        return [h["train_s"] for h in self.history]

    @property
    def eval_seconds(self) -> list[float]:
        return [h["eval_s"] for h in self.history]


def loss_function(model, cfg: TrainerConfig) -> Callable:
    if cfg.capture == "off":
        return model.loss
    mode = "reduce-overhead" if cfg.capture == "cudagraphs" else "default"
    return torch.compile(model.loss, mode=mode, dynamic=False if cfg.fixed_shape else None)


def train_epoch(model, optimizer, batches, cfg: TrainerConfig, autocast, loss_fn: Callable | None = None,
                on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """One epoch's optimiser steps with no host synchronisation: the loss is summed on the device
    (in float64, so the sum equals adding each loss's Python float as before) and the first
    non-finite loss is remembered there. -> [3] float64 on the device: the loss sum, the index of
    the first batch whose loss was not finite (-1: none), that loss. The caller reads it once."""
    loss_fn = loss_fn or model.loss
    device = next(model.parameters()).device
    total = torch.zeros((), dtype=torch.float64, device=device)
    bad_at = torch.full((), -1.0, dtype=torch.float64, device=device)
    bad_loss = torch.zeros((), dtype=torch.float64, device=device)
    for b, batch in enumerate(batches):
        with autocast:
            loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        value = loss.detach().double()
        total += value
        first = (bad_at < 0) & ~torch.isfinite(value)
        bad_at = torch.where(first, float(b), bad_at)
        bad_loss = torch.where(first, value, bad_loss)
        if on_step is not None:
            on_step()
    return torch.stack([total, bad_at, bad_loss])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device {name!r} requested but cuda is not available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise BenchError("device 'mps' requested but it is not available")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise BenchError(f"device {name!r}: this machine has {torch.cuda.device_count()} cuda device(s)")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: TrainerConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(
    model,
    split: Split,
    stage: str,
    cfg: TrainerConfig,
    eval_cfg: EvalConfig,
    seed: int,
    max_len: int,
    checkpoint: Path | None = None,
    reporter: Reporter = SILENT,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train `model` in `stage` until early stopping; leaves the best-validation weights loaded.

    The training rows live on the model's device for the whole fit and an epoch's steps never
    wait for the device (see train_epoch): one read per epoch. A non-finite loss therefore stops
    the run at the end of its epoch, naming the first batch that had one.
    `on_epoch(epoch, valid_value)` is called after each validation (e.g. Optuna pruning; it may
    raise to stop the run)."""
    device = next(model.parameters()).device
    mode = cfg.sample_mode or model.sample_mode_for(stage)
    rows = ResidentRows(*make_rows(split.train, max_len, mode), device)
    loss_fn = loss_function(model, cfg)
    optimizer = make_optimizer(model, cfg)
    data_order = torch.Generator().manual_seed(seed)
    result, best_state, bad_epochs, start_epoch = FitResult(), None, 0, 0
    if checkpoint is not None and checkpoint.exists():
        resumed = resume(checkpoint, model, optimizer, data_order, stage)
        if resumed is None:  # damaged (warned, removed): a fresh optimizer, training from epoch 0
            optimizer = make_optimizer(model, cfg)
        else:
            result, best_state, bad_epochs, start_epoch = resumed
            reporter.info(f"resumed {stage} from epoch {start_epoch} ({checkpoint})")
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16 else contextlib.nullcontext()
    )
    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            break
        model.train()
        t0 = time.perf_counter()
        batches, dropped = rows.epoch(cfg.batch_size, data_order, cfg.bucket_by_length, cfg.fixed_shape)
        task = reporter.task(f"{stage} epoch {epoch}", len(batches))
        stats = train_epoch(model, optimizer, batches, cfg, autocast, loss_fn, task.advance)
        loss_sum, bad_at, bad_loss = stats.tolist()  # the epoch's one host synchronisation
        done = len(batches)
        task.close()
        if bad_at >= 0:
            kept = f"; last good checkpoint kept: {checkpoint}" if checkpoint else ""
            raise BenchError(f"non-finite loss ({bad_loss}) in {stage} epoch {epoch} batch {int(bad_at)}{kept}")
        train_s = time.perf_counter() - t0
        valid = evaluate(model, split.valid, max_len, eval_cfg, device)
        value = valid.means.get(cfg.valid_metric)
        if value is None:
            raise BenchError(f"trainer.valid_metric {cfg.valid_metric!r} is not computed; valid: {sorted(valid.means)}")
        result.history.append(
            {"epoch": epoch, "loss": loss_sum / max(done, 1), cfg.valid_metric: value,
             "train_s": train_s, "eval_s": valid.seconds, **({"dropped_rows": dropped} if cfg.fixed_shape else {})}
        )
        if value > result.best_value:
            result.best_value, result.best_epoch, bad_epochs = value, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        reporter.info(
            f"{stage} epoch {epoch}: loss {result.history[-1]['loss']:.4f}  valid {cfg.valid_metric} {value:.4f}"
            f"  (best {result.best_value:.4f} @ {result.best_epoch})  train {train_s:.1f}s eval {valid.seconds:.1f}s"
        )
        if checkpoint is not None:
            state = {
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "result": result, "best_state": best_state, "bad_epochs": bad_epochs,
                "rng": rng_state(), "data_order": data_order.get_state(),
            }
            write_checkpoint(checkpoint, state)
        if on_epoch is not None:
            on_epoch(epoch, value)
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


def write_checkpoint(path: Path, state: dict) -> None:
    """A sealed checkpoint (bench.sealed: tensors + plain data, checksummed, no pickle)."""
    sealed.write(path, {**state, "result": dict(vars(state["result"]))}, "checkpoint")


def resume(checkpoint: Path, model, optimizer, data_order: torch.Generator, stage: str):
    """Restore model, optimizer, RNG and data-order states from a verified checkpoint and return
    (result, best_state, bad_epochs, next epoch). A damaged checkpoint, or one that does not fit
    this model, is reported in one warning line and removed; the states are then left as they
    were (None is returned), so training starts from epoch 0 exactly as a fresh run would."""
    try:
        state = sealed.read(checkpoint, "checkpoint")
    except (DamagedFile, OSError) as exc:
        return _discard(checkpoint, str(exc), stage)
    before = ({k: v.detach().clone() for k, v in model.state_dict().items()}, rng_state(), data_order.get_state())
    try:
        epoch, bad_epochs, best_state = state["epoch"], state["bad_epochs"], state["best_state"]
        if not all(type(x) is int and x >= 0 for x in (epoch, bad_epochs)):
            raise ValueError("epoch counters are not non-negative integers")
        if best_state is not None and not all(isinstance(v, torch.Tensor) for v in best_state.values()):
            raise ValueError("best_state is not a dict of tensors")
        result = FitResult(**state["result"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_state(state["rng"])
        data_order.set_state(state["data_order"])
    except Exception as exc:  # noqa: BLE001 - any mismatch: put the fresh states back, start over
        model.load_state_dict(before[0])
        restore_rng_state(before[1])
        data_order.set_state(before[2])
        return _discard(checkpoint, f"{checkpoint}: checkpoint does not fit this run ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:120] if str(exc) else ''})", stage)
    return result, best_state, bad_epochs, epoch + 1


def _discard(checkpoint: Path, why: str, stage: str) -> None:
    warn(f"{why}; discarded, {stage} starts again from epoch 0")
    try:
        checkpoint.unlink()
    except OSError:
        pass
    return None
