"""How a suite budget limits each model's training, relative to what the model says it needs.

A model declares, per stage, the training it needs to converge: `training_need` on its class,
e.g. BERT4Rec `{"train": {"epochs": 200, "patience": 20}}`, or per configuration through
`training_need_for(config)` (DuoRec's dot-product setting needs a longer patience than its cosine
one). Its `trainer_defaults`, used by a plain `bench run` and the full budget, give at least
that. A budget's `training` rules cap epochs and patience per stage ("*" = every stage without a
rule of its own). A cap never cuts a model below its declared need unless the rule says
`respect_need: false` (a smoke budget); then, or when a budget's explicit override cuts it, the
run is below its need, and `training_limits(spec)` (stored in each run record as
`training_limits`) says so, so a table can.

Rules apply to the values a cell would otherwise have (model defaults, then suite, tuned and
variation overrides); a budget's explicit `trainer.*` overrides still win over its rules.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bench.errors import BenchError

FIELDS = ("epochs", "patience")


class StageLimit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs_cap: int | None = Field(None, gt=0)
    patience_cap: int | None = Field(None, gt=0)
    # True: a model's declared need is a floor the caps never go below (the budget still fits
    # every baseline adequately); False: caps apply to every model (quick smoke budgets)
    respect_need: bool = True


def declared_need(model_cls: type, stage: str, config: Any = None) -> dict[str, int] | None:
    """{'epochs', 'patience'} the model declares for `stage` in `config` (default: its default
    configuration), or None (no declaration)."""
    need = model_cls.training_need_for(model_cls.Config() if config is None else config).get(stage)
    return dict(need) if need else None


def _config(model: str, model_cls: type, overrides: dict[str, Any]) -> Any:
    """The model configuration these overrides give (its defaults where they do not validate:
    building the spec then names the bad option)."""
    from pydantic import ValidationError

    from bench.engine.spec import expand_preset

    params = {k.partition(".")[2]: v for k, v in expand_preset(model, model_cls.Config, overrides).items()
              if k.partition(".")[0] == model}
    try:
        return model_cls.Config(**params)
    except ValidationError:
        return model_cls.Config()


def _trainer_value(model_cls: type, stage: str, name: str, overrides: dict[str, Any]) -> Any:
    """The value `trainer.<name>` of `stage` resolves to from these overrides (build_spec's order)."""
    from bench.engine.trainer import TrainerConfig

    for key in (f"trainer.{stage}.{name}", f"trainer.{name}"):
        if key in overrides:
            return overrides[key]
    return model_cls.trainer_defaults.get(stage, {}).get(name, TrainerConfig.model_fields[name].default)


def limit_overrides(model: str, rules: dict[str, StageLimit], before: dict[str, Any],
                    explicit: dict[str, Any]) -> dict[str, Any]:
    """Stage-level `trainer.<stage>.epochs/patience` overrides that apply `rules` to the values
    `before` resolves to; fields the budget sets explicitly (`explicit`) are left to it."""
    if not rules:
        return {}
    from bench.plugins import get_model_class

    model_cls = get_model_class(model)
    config = _config(model, model_cls, before)
    out: dict[str, Any] = {}
    for stage in model_cls.stages:
        rule = rules.get(stage) or rules.get("*")
        if rule is None:
            continue
        need = declared_need(model_cls, stage, config) if rule.respect_need else None
        for name in FIELDS:
            if f"trainer.{name}" in explicit or f"trainer.{stage}.{name}" in explicit:
                continue
            cap = getattr(rule, f"{name}_cap")
            if cap is None:
                continue
            value = _trainer_value(model_cls, stage, name, before)
            if not isinstance(value, int) or isinstance(value, bool):
                continue  # not a count: the spec's validation names the bad option
            floor = need[name] if need else 0
            capped = min(value, max(cap, floor))
            if capped != value:
                out[f"trainer.{stage}.{name}"] = capped
    return out


def check_rules(rules: dict[str, StageLimit], where: str) -> None:
    from bench.plugins import MODELS

    stages = {s for name in MODELS.names() for s in MODELS.get(name).stages}
    stray = sorted(set(rules) - stages - {"*"})
    if stray:
        raise BenchError(f"{where}.training: unknown stage {stray[0]!r} (stages: *, {', '.join(sorted(stages))})")


def training_limits(spec: Any) -> dict[str, dict[str, Any]]:
    """Per stage the run trains: the declared need, the epochs/patience applied, and whether
    the applied values are below the need (`below_need`). Takes a RunSpec or a record's spec dict
    (older records included)."""
    from bench.plugins import get_model_class

    data = spec if isinstance(spec, dict) else spec.model_dump()
    model_cls = get_model_class(data["model"])
    config = model_cls.Config(**data["model_params"])
    out = {}
    for stage in model_cls.stages_for(config):
        trainer = data["trainer"][stage]
        need = declared_need(model_cls, stage, config)
        applied = {name: int(trainer[name]) for name in FIELDS}
        below = [name for name in FIELDS if need and applied[name] < need[name]]
        out[stage] = {"need": need, "applied": applied, "below_need": below}
    return out
