"""Runs one resolved spec end to end: data -> split -> stages of training -> evaluation -> record.

Earlier stages (e.g. pre-training) are stored under the hash of their own spec and seed and reused
by every later run that shares them, whatever its fine-tuning settings.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.atomic import write_json
from bench.data.catalog import load_dataset
from bench.data.dataset import Dataset
from bench.data.merge import merge_datasets, merge_features, same_feature_space
from bench.data.stats import modality_coverage
from bench.data.transforms import DataConfig, apply_data_options
from bench.engine.budgets import training_limits
from bench.engine.candidates import for_split
from bench.engine.evaluator import evaluate
from bench.engine.metrics import mean_metrics
from bench.engine.provenance import provenance
from bench.engine.seeding import seed_everything
from bench.engine.spec import RunSpec, hashed_spec
from bench.engine.store import ResultStore
from bench.engine.trainer import FitResult, fit, resolve_device
from bench.errors import BenchError, warn
from bench.hashing import hash_obj
from bench.nn.model import ModelContext, SeqRecModel
from bench.paths import cache_dir, store_dir
from bench.plugins import get_model_class
from bench.progress import SILENT, Reporter
from protocols import MAIN_TEST, PROTOCOLS, Protocol, Split, StagePlan

PRETRAIN_SEED = 0  # the seed of an earlier stage shared by every run seed (trainer.<stage>.shared_seed)


def stage_seed(spec: RunSpec, stage: str) -> int:
    """The seed an earlier stage trains with: the run's own unless the stage is shared."""
    return PRETRAIN_SEED if spec.trainer[stage].shared_seed else spec.seed


@dataclass
class RunEnv:
    """Where data comes from and results go, plus per-process caches of loaded data."""

    data_root: Path
    home: Path
    reporter: Reporter = SILENT
    on_epoch: Callable[[int, float], None] | None = None  # called in the final stage (e.g. pruning)
    _datasets: dict = field(default_factory=dict)
    _splits: dict = field(default_factory=dict)
    _features: dict = field(default_factory=dict)
    _said: set = field(default_factory=set)  # datasets whose "no images" note was given

    @property
    def store(self) -> ResultStore:
        return ResultStore(store_dir(self.home))

    def dataset(self, name: str, options: DataConfig | None = None) -> Dataset:
        """A dataset as read, or derived from it by run-level data options (spec.data)."""
        key = (name, hash_obj(options.model_dump()) if options is not None else None)
        if key not in self._datasets:
            self._datasets[key] = (apply_data_options(self.dataset(name), options) if options is not None
                                   else load_dataset(name, self.data_root, cache_dir(self.home)))
        return self._datasets[key]

    def split(self, spec: RunSpec) -> Split:
        key = (spec.dataset, spec.protocol, hash_obj(spec.protocol_params), hash_obj(spec.data.model_dump()))
        if key not in self._splits:
            self._splits[key] = self.protocol(spec).split(self.dataset(spec.dataset, spec.data))
        split = self._splits[key]
        split.test_unlocked = False  # every run starts locked
        return split

    def protocol(self, spec: RunSpec) -> Protocol:
        protocol_cls = PROTOCOLS.get(spec.protocol)
        return protocol_cls(protocol_cls.Config(**spec.protocol_params))

    def features(self, dataset: str, params: dict):
        return self.features_of(self.dataset(dataset), params)

    def features_of(self, ds: Dataset, params: dict):
        """Item features of a dataset; a merged dataset gets its parts' features stacked."""
        from bench.features.store import load_item_features

        if ds.meta.get("data_options"):  # derived by data options: same items, same features
            return self.features_of(self.dataset(ds.name), params)
        key = (ds.content_hash, hash_obj(params))
        if key not in self._features:
            if params.get("image_kind") == "none" and not any(ds.item_images or []) and ds.name not in self._said:
                self._said.add(ds.name)  # once per process: a text-only model on image-less data is fine
                self.reporter.info(f"{ds.name}: no item has an image; text-only models read its item text")
            parts = ds.meta.get("merged_from")
            self._features[key] = (
                merge_features([self.features_of(self.dataset(p), params) for p in parts]) if parts
                else load_item_features(ds, self.data_root, cache_dir(self.home), **params)
            )
        return self._features[key]


def run_hash(spec: RunSpec, env: RunEnv) -> str:
    split = env.split(spec)
    return hash_obj({"spec": hashed_spec(spec), "dataset": env.dataset(spec.dataset, spec.data).content_hash,
                     "protocol": split.definition})


def execute(spec: RunSpec, env: RunEnv, force: bool = False, wait: bool = False) -> tuple[str, dict, bool]:
    """Run `spec` unless already complete. Returns (run hash, record, whether it ran now).

    If another process holds the run: raise RunBusy, or with `wait` block until it finishes and
    take its record (running it here if that process died before completing it)."""
    key = run_hash(spec, env)
    store = env.store
    if not force and (record := store.load(key)) is not None:
        store.tidy(key)  # checkpoints a kill between saving the record and removing them left behind
        return key, record, False
    with store.claim(store.run_dir(key), wait=wait):
        if not force and (record := store.load(key)) is not None:
            return key, record, False
        record = _run(spec, env, key)
    return key, record, True


@dataclass
class StageData:
    """What one stage trains and validates on: a dataset (hash), its split and the model context."""

    dataset_hash: str
    split: Split
    ctx: ModelContext


def _stage_data(env: RunEnv, ds: Dataset, split: Split, max_len: int, feature_params: dict | None) -> StageData:
    features = env.features_of(ds, feature_params) if feature_params is not None else None
    if features is not None and feature_params.get("image_kind") != "none" and not bool(features.image_mask.any()):
        # an image channel of all-padding slots would train a dead input and be compared as if it had images
        raise BenchError(f"dataset {ds.name} has no item images: the image modality cannot be used there; "
                         "set <model>.modalities=[text]")
    ctx = ModelContext(ds.n_items, max_len, split.train.item_counts(ds.n_items), features,
                       train_classes=split.train_classes)
    return StageData(ds.content_hash, split, ctx)


@dataclass
class Trained:
    """A model after all its stages, with what the evaluation and the record need."""

    model: SeqRecModel
    fits: dict[str, FitResult]
    device: torch.device
    stages: tuple[str, ...]
    plan: StagePlan


def train_stages(spec: RunSpec, env: RunEnv, run_dir: Path | None = None) -> Trained:
    """Every stage of `spec`'s model, earlier stages shared through the store. The final stage
    resumes from `run_dir` checkpoints when given. Never touches the test split."""
    ds, split, protocol = env.dataset(spec.dataset, spec.data), env.split(spec), env.protocol(spec)
    model_cls = get_model_class(spec.model)
    config = model_cls.Config(**spec.model_params)
    max_len = spec.protocol_params["max_len"]
    feature_params = model_cls.needs_features(config)
    target = _stage_data(env, ds, split, max_len, feature_params)
    plan = protocol.stage_plan()
    source = None
    if plan.pretrain_on:  # earlier stages train on other datasets (e.g. cross-domain sources)
        source_ds = merge_datasets([env.dataset(name, spec.data) for name in plan.pretrain_on])
        source = _stage_data(env, source_ds, protocol.pretrain_split(source_ds), max_len, feature_params)
        if feature_params is not None:
            same_feature_space(source.ctx.features, target.ctx.features, f"{spec.model} cross-domain transfer")
    stages = model_cls.stages_for(config)
    device = resolve_device(spec.trainer[stages[-1]].device)
    fits: dict[str, FitResult] = {}
    state, model = None, None
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        data = source if (source is not None and not last) else target
        seed_everything(spec.seed if last else stage_seed(spec, stage))
        model = model_cls(config, data.ctx).to(device)
        model.set_stage(stage)
        if state is not None:
            model.load_transferable(state)
        if not model.trainable:
            break
        if not last:
            fits[stage] = _shared_stage(model, spec, env, data, stage, max_len)
        elif plan.final_stage_trains or i == 0:  # a single-stage model always trains on the target
            checkpoint = run_dir / f"{stage}.ckpt" if run_dir is not None else None
            fits[stage] = fit(model, split, stage, spec.trainer[stage], spec.evaluation, spec.seed, max_len,
                              checkpoint, env.reporter, env.on_epoch)
        state = model.transferable_state()
    return Trained(model, fits, device, stages, plan)


def _run(spec: RunSpec, env: RunEnv, key: str) -> dict:
    started = time.perf_counter()
    ds, split = env.dataset(spec.dataset, spec.data), env.split(spec)
    max_len = spec.protocol_params["max_len"]
    env.reporter.info(f"run {key}: {spec.model} on {spec.dataset} / {spec.protocol}, seed {spec.seed}")
    trained = train_stages(spec, env, env.store.run_dir(key))
    model, fits, device = trained.model, trained.fits, trained.device
    cand_dir = cache_dir(env.home) / "candidates"
    valid = evaluate(model, split.valid, max_len, spec.evaluation, device,
                     candidates=for_split(split, "valid", split.valid, ds.content_hash, cand_dir))
    split.unlock_test()
    test_sets = split.test_sets()
    test_cases = test_sets.pop(MAIN_TEST)
    test = evaluate(model, test_cases, max_len, spec.evaluation, device,
                    candidates=for_split(split, "test", test_cases, ds.content_hash, cand_dir))
    # the split's other test sets are scored beside the main one (full ranking only)
    extra = {f"test:{name}": evaluate(model, cases, max_len, spec.evaluation, device)
             for name, cases in test_sets.items()}
    record = _record(spec, key, ds, split, model, fits, valid, test, time.perf_counter() - started)
    feature_params = type(model).needs_features(model.config)
    if feature_params is not None:  # what the content model saw of each modality (table captions)
        record["dataset"]["coverage"] = modality_coverage(ds, env.features_of(ds, feature_params))
    # tables of transfer runs must say what transferred and what trained on the target alone
    record["label"] += trained.plan.label_suffix(len(trained.stages))
    per_user = {"valid": valid.per_user, "test": test.per_user, **{p: r.per_user for p, r in extra.items()}}
    record["metrics"].update({p: r.means for p, r in extra.items()})
    if test.sampled is not None:
        per_user["test_sampled"] = test.sampled
        record["metrics"]["test_sampled"] = mean_metrics(test.sampled)
        record["metrics"]["valid_sampled"] = mean_metrics(valid.sampled)
    env.store.save(key, record, per_user)
    for ckpt in env.store.run_dir(key).glob("*.ckpt"):
        ckpt.unlink()  # resume checkpoints are no longer needed once the record is complete
    return record


def _shared_stage(model: SeqRecModel, spec: RunSpec, env: RunEnv, data: StageData, stage: str, max_len: int) -> FitResult:
    """Train an earlier stage once per stage spec; later runs load its weights."""
    split = data.split
    stage_key = hash_obj({
        "model": spec.model, "stage": stage, "stage_spec": model.stage_spec(stage),
        "trainer": hashed_spec(spec)["trainer"][stage], "dataset": data.dataset_hash,
        "protocol": split.definition, "eval": hashed_spec(spec)["evaluation"], "seed": stage_seed(spec, stage),
    })
    folder = env.store.stage_dir(stage_key)
    with env.store.claim(folder, wait=True):  # another process training this stage: wait, then reuse
        stored = env.store.load_stage(folder)  # verified; None if absent or damaged (then retrained)
        if stored is not None and _load_stage_weights(model, stored[0], folder):
            env.reporter.info(f"{stage}: reusing stored stage {stage_key}")
            return FitResult(**stored[1])
        result = fit(model, split, stage, spec.trainer[stage], spec.evaluation, stage_seed(spec, stage), max_len,
                     folder / "resume.ckpt", env.reporter)
        env.store.save_stage(folder, model.transferable_state(), dict(vars(result)))
        write_json(folder / "spec.json", {"stage_key": stage_key, "model": spec.model, "stage": stage,
                                          "stage_spec": model.stage_spec(stage)})
        (folder / "resume.ckpt").unlink(missing_ok=True)
    return result


def _load_stage_weights(model: SeqRecModel, weights: dict, folder: Path) -> bool:
    """Load a stored stage's weights; if they do not fit the model, put its fresh weights back,
    warn, and return False (the stage is trained again)."""
    fresh = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        model.load_transferable(weights)
        return True
    except (RuntimeError, ValueError, KeyError) as exc:
        model.load_state_dict(fresh)
        warn(f"{folder}: stored stage does not fit this model ({str(exc).splitlines()[0][:120]}); "
             f"trained again")
        return False


def _record(spec, key, ds, split, model, fits, valid, test, seconds) -> dict:
    final = fits.get(model.stages_for(model.config)[-1])
    timings = {
        stage: {
            "epochs": len(f.history),
            "s_per_epoch": sum(f.train_seconds) / max(len(f.history), 1),
            "eval_s_per_epoch": sum(f.eval_seconds) / max(len(f.history), 1),
        }
        for stage, f in fits.items()
    }
    peak = {"rss_mb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return {
        "status": "complete",
        "run_hash": key,
        "label": model.label or spec.model,
        "spec": spec.model_dump(),
        "dataset": {"name": ds.name, "content_hash": ds.content_hash, "users": ds.n_users, "items": ds.n_items},
        "protocol": split.definition,
        "metrics": {"valid": valid.means, "test": test.means},
        "best_epoch": final.best_epoch if final else None,
        # per stage: the model's declared need, the epochs/patience applied, which fall below it
        "training_limits": training_limits(spec),
        "history": {stage: f.history for stage, f in fits.items()},
        "timings": {**timings, "final_eval_s": {"valid": valid.seconds, "test": test.seconds}, "total_s": seconds},
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_memory": peak,
        "provenance": provenance(),
    }
