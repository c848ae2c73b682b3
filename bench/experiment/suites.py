"""Declarative experiment suites: a base spec plus named variations, expanded into cells.

A suite (bench/suites/<name>.yaml) names datasets, a protocol, models, seeds and overrides,
plus named variations (each a set of overrides, e.g. an ablation switch) and/or sweeps (one key
over a list of values, each value a variation). Cells are variation x model x dataset x seed,
in that order; every cell is one run of the runner, stored under its run hash, so rerunning a
suite only executes the cells whose record is missing and `--shard k/N` (cells i with
i % N == k - 1) splits the work across machines writing to one store. A suite runs as an
Experiment (bench/experiment/experiment.py), here or on Ray.

`include: <file>.yaml` (or a list) merges shared blocks, e.g. the budgets of bench/suites/_budgets.yaml,
beneath the suite: paths relative to the including file, mappings merged key by key, the including
file winning; a cycle is refused. Files starting with '_' are not suites.

Override precedence (later wins): suite overrides, the suite's per-dataset overrides (e.g. a
cross-domain suite's source for each target), the suite's per-model overrides, tuned parameters
(params_from), the variation, the budget's training limits (bench.engine.budgets: caps relative to each
model's declared need), the budget's overrides, the budget's per-model ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench import defaults
from bench.engine.budgets import StageLimit, check_rules, limit_overrides
from bench.engine.metrics import DEFAULT_METRICS
from bench.engine.spec import RunSpec, build_spec, first_error
from bench.errors import BenchError

__all__ = ["Suite", "Cell", "cells", "list_suites", "load_suite", "select"]

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
BUDGETS = ("quick", "cpu", "full")
INCLUDE = "include"  # a suite key: shared blocks (e.g. budgets) from other files, see resolve_includes


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seeds: list[int] | None = None  # None: the suite's seeds
    datasets: list[str] | None = None
    # epochs/patience caps per stage ('*': every stage), relative to each model's declared need
    # (bench.engine.budgets); applied before `overrides`, which still win
    training: dict[str, StageLimit] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)
    model_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # per variation, e.g. a longer fine-tuning where one variant is still improving at the cap
    variation_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Significance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test: Literal["ttest", "wilcoxon", "seed_ttest"] = "ttest"
    correction: Literal["holm", "none"] = "holm"
    alpha: float = Field(0.05, gt=0, lt=1)
    # the family a correction runs over: the reference vs every other row, separately for each
    # (dataset, metric), or one family over every comparison of the table
    family: Literal["per_dataset_metric", "table"] = "per_dataset_metric"


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    variation: str | None = None


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    description: str = ""
    protocol: str = defaults.PROTOCOL
    datasets: list[str]
    models: list[str]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    overrides: dict[str, Any] = Field(default_factory=dict)
    model_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    dataset_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # a path template ({model}, {dataset}, {protocol}, {budget}) of `bench tune` summaries whose
    # best params are applied; a missing file means the model's defaults (reported). A mapping
    # {variation: template} tunes those variations only, so one table holds default and tuned rows.
    params_from: str | dict[str, str] | None = None
    variations: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sweeps: dict[str, list[Any]] = Field(default_factory=dict)  # key -> values, one variation each
    reference: Reference | str | None = None
    # table rows: every model of one variation, then the next (variation), or each model's
    # variations together (model), e.g. default and tuned side by side
    row_order: Literal["variation", "model"] = "variation"
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS))
    significance: Significance = Field(default_factory=Significance)
    quick: Budget = Field(default_factory=Budget)
    # a budget a 2-core CPU finishes in about an hour: every user, capped epochs and patience
    cpu: Budget = Field(default_factory=Budget)
    full: Budget = Field(default_factory=Budget)

    @model_validator(mode="after")
    def _check(self) -> Suite:
        if not self.datasets or not self.models or not self.seeds:
            raise ValueError("a suite needs at least one dataset, model and seed")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models repeated: {self.models}")
        stray = set(self.dataset_overrides) - set(self.datasets)
        if stray:
            raise ValueError(f"dataset_overrides name datasets the suite does not run: {sorted(stray)}")
        clash = set(self.variations) & set(self.sweep_variations())
        if clash:
            raise ValueError(f"variation names clash with sweep values: {sorted(clash)}")
        if isinstance(self.params_from, dict):
            stray = set(self.params_from) - set(self.all_variations())
            if stray:
                raise ValueError(f"params_from names variations the suite does not have: {sorted(stray)}")
        return self

    def params_template(self, variation: str) -> str | None:
        """The `bench tune` summary path template that applies to a variation, if any."""
        if isinstance(self.params_from, dict):
            return self.params_from.get(variation)
        return self.params_from

    def tuned_variations(self) -> list[str]:
        return [v for v in self.all_variations() if self.params_template(v)]

    # ------------------------------------------------------------ variations and arms

    def sweep_variations(self) -> dict[str, tuple[str, Any]]:
        """{variation name: (override key, value)} for every sweep value."""
        return {f"{key.rsplit('.', 1)[-1]}={value}": (key, value) for key, values in self.sweeps.items()
                for value in values}

    def all_variations(self) -> dict[str, dict[str, Any]]:
        out = dict(self.variations)
        out.update({name: {key: value} for name, (key, value) in self.sweep_variations().items()})
        return out or {"default": {}}

    def arms(self) -> list[tuple[str, str]]:
        """Table rows: (variation, model) pairs in the suite's row order."""
        if self.row_order == "model":
            return [(v, m) for m in self.models for v in self.all_variations()]
        return [(v, m) for v in self.all_variations() for m in self.models]

    def reference_arm(self) -> tuple[str, str] | None:
        if self.reference is None:
            return None
        ref = Reference(model=self.reference) if isinstance(self.reference, str) else self.reference
        variations = list(self.all_variations())
        model = ref.model or (self.models[0] if len(self.models) == 1 else None)
        variation = ref.variation or (variations[0] if len(variations) == 1 else None)
        if model not in self.models or variation not in variations:
            raise BenchError(
                f"suite {self.name}: reference {self.reference!r} must name one of the models {self.models} "
                f"and (when there are several) one of the variations {variations}"
            )
        return variation, model

    def arm_label(self, arm: tuple[str, str]) -> str:
        from bench.plugins import get_model_class

        variation, model = arm
        label = get_model_class(model).label or model
        if len(self.all_variations()) == 1:
            return label
        if len(self.models) == 1:
            return variation
        return f"{label} [{variation}]"

    def budget(self, name: str) -> Budget:
        if name not in BUDGETS:
            raise BenchError(f"unknown budget {name!r}; valid: {', '.join(BUDGETS)}")
        budget = getattr(self, name)
        check_rules(budget.training, f"suite {self.name}: {name}")
        return budget


@dataclass(frozen=True)
class Cell:
    index: int
    variation: str
    model: str
    dataset: str
    seed: int
    overrides: dict[str, Any] = field(hash=False, compare=False)
    tuned_from: str | None = None

    @property
    def arm(self) -> tuple[str, str]:
        return self.variation, self.model

    def spec(self, protocol: str) -> RunSpec:
        try:
            return build_spec(self.dataset, protocol, self.model, self.seed, self.overrides)
        except BenchError as exc:
            raise BenchError(f"cell {self.describe()}: {exc}") from None

    def describe(self) -> str:
        return f"#{self.index} {self.variation} / {self.model} / {self.dataset} / seed {self.seed}"


# ---------------------------------------------------------------- loading


def suite_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = SUITES_DIR / f"{name}.yaml"
    if name.startswith("_") or not path.exists():  # _*.yaml hold shared blocks, not suites
        from bench.registry import unknown_name_message

        raise BenchError(unknown_name_message("suite", name, list_suites()))
    return path


def list_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml") if not p.name.startswith("_"))


def load_suite(name: str) -> Suite:
    path = suite_path(name)
    data = resolve_includes(path)
    try:
        return Suite(**data)
    except ValidationError as exc:
        raise BenchError(f"{path}: {first_error(exc)}") from None


def deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merged key by key, anything else (a list too) replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def resolve_includes(path: Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A suite file's mapping with the files its `include:` names (one or a list, each relative to
    the including file, later ones winning) deep-merged beneath it: the including file wins."""
    chain = (*_chain, path.resolve())
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BenchError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: a suite is a mapping (name, title, datasets, models, ...)")
    names = data.pop(INCLUDE, None)
    if names is None:
        return data
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise BenchError(f"{path}: {INCLUDE}: a file name (relative to this file) or a list of them")
    base: dict = {}
    for name in names:
        target = path.parent / name
        if target.resolve() in chain:
            cycle = " -> ".join(p.name for p in (*chain, target))  # from the suite file down
            raise BenchError(f"{path}: {INCLUDE} cycle: {cycle}")
        if not target.is_file():
            raise BenchError(f"{path}: {INCLUDE} {name!r}: no such file {target}")
        base = deep_merge(base, resolve_includes(target, chain))
    return deep_merge(base, data)


# ---------------------------------------------------------------- cells


def params_path(suite: Suite, variation: str, model: str, dataset: str, budget: str) -> Path | None:
    """Where the variation's tuned parameters for (model, dataset) live, if it takes any."""
    template = suite.params_template(variation)
    if not template:
        return None
    try:
        return Path(template.format(model=model, dataset=dataset, protocol=suite.protocol, budget=budget))
    except (KeyError, IndexError) as exc:
        raise BenchError(f"suite {suite.name}: params_from {template!r}: unknown field {exc} "
                         "(fields: model, dataset, protocol, budget)") from None


def tuned_params(suite: Suite, variation: str, model: str, dataset: str, budget: str) -> tuple[dict[str, Any], str | None]:
    """The best params of a `bench tune` summary for (model, dataset), if the suite names one."""
    path = params_path(suite, variation, model, dataset, budget)
    if path is None or not path.exists():
        return {}, None
    return dict(load_best(path)["params"]), str(path)


def cell_overrides(suite: Suite, b: Budget, variation: str, model: str, dataset: str,
                   tuned: dict[str, Any]) -> dict[str, Any]:
    """A cell's overrides under budget `b`, in the module's precedence order, `tuned` in the tuned
    parameters' place."""
    before = {
        **suite.overrides, **suite.dataset_overrides.get(dataset, {}),
        **suite.model_overrides.get(model, {}), **tuned, **suite.all_variations()[variation],
    }
    explicit = {**b.overrides, **b.model_overrides.get(model, {}), **b.variation_overrides.get(variation, {})}
    return {**before, **limit_overrides(model, b.training, before, explicit), **explicit}


def cells(suite: Suite, budget: str = "full") -> list[Cell]:
    """Every cell of the suite under a budget: variation x model x dataset x seed."""
    b = suite.budget(budget)
    seeds = b.seeds if b.seeds is not None else suite.seeds
    datasets = b.datasets if b.datasets is not None else suite.datasets
    out: list[Cell] = []
    unknown = sorted(set(b.variation_overrides) - set(suite.all_variations()))
    if unknown:
        raise BenchError(f"suite {suite.name}: {budget}.variation_overrides names no variation: {', '.join(unknown)} "
                         f"(variations: {', '.join(suite.all_variations())})")
    for variation in suite.all_variations():
        for model in suite.models:
            for dataset in datasets:
                tuned, source = tuned_params(suite, variation, model, dataset, budget)
                overrides = cell_overrides(suite, b, variation, model, dataset, tuned)
                for seed in seeds:
                    out.append(Cell(len(out), variation, model, dataset, seed, overrides, source))
    return out


def select(suite: Suite, budget: str, models: list[str] | None = None, datasets: list[str] | None = None,
           variations: list[str] | None = None) -> list[Cell]:
    """The suite's cells at a budget, of the named models / datasets / variations only when given."""
    todo = cells(suite, budget)
    for option, wanted, field_ in (("models", models, "model"), ("datasets", datasets, "dataset"),
                                   ("variations", variations, "variation")):
        if not wanted:
            continue
        have = list(dict.fromkeys(getattr(c, field_) for c in todo))
        unknown = sorted(set(wanted) - set(have))
        if unknown:
            raise BenchError(f"--{option} {','.join(unknown)}: not in suite {suite.name} at this budget "
                             f"(its {option}: {', '.join(have)})")
        todo = [c for c in todo if getattr(c, field_) in wanted]
    return todo


def budget_label(budget: str) -> str:
    return f"{budget} budget"


def load_best(path: Path) -> dict:
    """A tuning summary written by `tune` (what a suite's params_from points at); read
    here, so tables and suites need not import the tuner."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read tuned parameters {path}: {exc}") from None
    if "overrides" not in data or "budget" not in data:
        raise BenchError(f"{path}: not a `bench tune` summary (no overrides/budget)")
    return data
