"""The fully resolved specification of one run, and `--set key=value` overrides.

Override keys:  <model>.<field>  (e.g. sasrec.dropout=0.5; applies to that model only),
trainer.<field> (every stage), trainer.<stage>.<field> (one stage, e.g. trainer.pretrain.lr),
eval.<field>, protocol.<field>, data.<field> (run-level data options, e.g. data.dedup=keep_last).
`<model>.preset=NAME` expands the model's named preset first; explicit --set values win over it.

Every spec carries the numerics versions of its model, trainer and evaluator: they enter the run
hash, so a change to the numbers a piece of code produces (and its version bump) never silently
reuses a cell computed by the old code.
"""

from __future__ import annotations

import ast
import copy
import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.data.catalog import check_dataset_name
from bench.data.transforms import DataConfig
from bench.engine.evaluator import NUMERICS_VERSION as EVALUATOR_NUMERICS
from bench.engine.evaluator import EvalConfig
from bench.engine.trainer import NUMERICS_VERSION as TRAINER_NUMERICS
from bench.engine.trainer import TrainerConfig, resolve_device
from bench.errors import BenchError
from bench.hashing import hash_obj
from bench.plugins import MODELS, get_model_class
from protocols import PROTOCOLS


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    protocol: str
    protocol_params: dict[str, Any]
    model: str
    model_params: dict[str, Any]
    trainer: dict[str, TrainerConfig]  # per stage
    evaluation: EvalConfig
    seed: int
    data: DataConfig = DataConfig()
    numerics: dict[str, int] = {}  # {"model", "trainer", "evaluator"}: versions of the code's numbers


# Execution-only settings: where and in what chunks a run computes, not what it computes. They are
# hashed at these fixed values whatever the run used, so the same cell on another GPU or with another
# evaluation batch size is the same cell. The values are the defaults every stored run used (so stored
# hashes stay) and are frozen here: a later change of a default moves no hash. The record keeps the
# values actually used.
HASHED_AS = {
    "evaluation": {"batch_users": 2048, "max_scores_in_memory": 32_000_000},
    "trainer": {"device": "auto"},  # per stage
}
# Trainer fields added after runs were stored (per stage): execution-only ones are never hashed;
# the others only once set away from their default, so every earlier hash holds.
NOT_HASHED = {"capture"}
HASHED_WHEN_SET = {"fixed_shape": False}


def execution_only(key: str) -> bool:
    """Whether an override (`eval.batch_users`, `trainer.pretrain.device`, ...) only decides where
    and in what chunks a run computes, never its numbers."""
    group, _, name = key.partition(".")
    leaf = name.rpartition(".")[2]
    if group == "eval":
        return leaf in HASHED_AS["evaluation"]
    return group == "trainer" and (leaf in HASHED_AS["trainer"] or leaf in NOT_HASHED)


def hashed_spec(spec: RunSpec | dict) -> dict:
    """The spec as a run hash sees it: its dump (or a record's stored spec) with the execution-only
    settings at their HASHED_AS values. Fields a spec lacks (older records) stay absent."""
    data = spec.model_dump() if isinstance(spec, RunSpec) else copy.deepcopy(spec)
    evaluation = data.get("evaluation")
    if isinstance(evaluation, dict):
        evaluation.update({k: v for k, v in HASHED_AS["evaluation"].items() if k in evaluation})
    for stage in (data.get("trainer") or {}).values():
        if isinstance(stage, dict):
            stage.update({k: v for k, v in HASHED_AS["trainer"].items() if k in stage})
            for k in NOT_HASHED | {k for k, default in HASHED_WHEN_SET.items() if stage.get(k, default) == default}:
                stage.pop(k, None)
    return data


def spec_key(spec: RunSpec | dict) -> str:
    """The hash of a spec alone (no dataset content): how tables find a cell's records."""
    return hash_obj(hashed_spec(spec))


GROUPS = ("trainer", "eval", "protocol", "data")


def expand_preset(model: str, config_cls: type[BaseModel], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with `<model>.preset`'s entries added underneath the explicit ones."""
    name = overrides.get(f"{model}.preset")
    table = getattr(config_cls, "presets", {})
    if not isinstance(name, str) or name == "none" or name not in table:
        return overrides  # an unknown name is reported by the config's own validation
    expanded = {k if k.split(".")[0] in GROUPS else f"{model}.{k}": v for k, v in table[name].items()}
    return {**expanded, **overrides}


def parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # not a literal: a string
        stripped = text.strip()
        if stripped.startswith("[") and stripped.endswith("]") and "[" not in stripped[1:-1]:
            # [text,image] as typed in a shell: a list of bare words (the README's spelling)
            return [parse_value(x.strip()) for x in stripped[1:-1].split(",") if x.strip()]
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--set {item!r}: expected key=value (e.g. sasrec.dropout=0.5)")
        out[key.strip()] = parse_value(value)
    return out


def validated(cls: type[BaseModel], values: dict[str, Any], where: str) -> BaseModel:
    unknown = [k for k in values if k not in cls.model_fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(cls.model_fields), n=1)
        hint = f"; did you mean {where}.{close[0]}?" if close else ""
        raise BenchError(f"unknown option {where}.{unknown[0]}{hint} (valid: {', '.join(cls.model_fields)})")
    for key, value in values.items():  # pydantic would quietly take true as 1 for an int option
        if isinstance(value, bool) and not _admits_bool(cls.model_fields[key].annotation):
            raise BenchError(f"option {where}.{key}: a number is expected, got the bool {str(value).lower()}")
    try:
        return cls(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a check across fields (a model validator)
            raise BenchError(f"options {where}: {err['msg'].removeprefix('Value error, ')}") from None
        raise BenchError(f"option {where}.{first_error(exc)}") from None


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type accepts a bool as such (bool, Any, a union or literal with one);
    plain int / float / str fields do not."""
    if annotation in (bool, Any, object):
        return True
    if annotation is type(None):
        return False
    if annotation in (int, float, str):
        return False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(a) for a in args)
    if origin is typing.Literal:
        return any(isinstance(a, bool) for a in args)
    if origin is typing.Annotated:
        return _admits_bool(args[0])
    return True  # containers and models: pydantic judges them


def check_seed(seed: object, option: str = "--seed") -> int:
    if type(seed) is not int or not 0 <= seed < 2**32:
        raise BenchError(f"{option} {seed!r}: a seed is an integer in 0..{2**32 - 1}")
    return seed


def first_error(exc: ValidationError) -> str:
    """'field.path: message (got value)' for the first error pydantic reports."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"


def build_spec(dataset: str, protocol: str, model: str, seed: int, overrides: dict[str, Any]) -> RunSpec:
    model_cls = get_model_class(model)
    protocol_cls = PROTOCOLS.get(protocol)
    overrides = expand_preset(model, model_cls.Config, overrides)
    groups: dict[str, dict[str, Any]] = {"model": {}, "trainer": {}, "eval": {}, "protocol": {}, "data": {}}
    stage_trainer: dict[str, dict[str, Any]] = {s: {} for s in model_cls.stages}
    all_stages = {s for name in MODELS.names() for s in MODELS.get(name).stages}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if not rest:
            raise BenchError(f"--set {key}: expected <group>.<option>, e.g. trainer.lr or {model}.dropout")
        if head == "trainer" and "." in rest and rest.split(".")[0] in all_stages:
            stage, _, name = rest.partition(".")
            if stage in stage_trainer:  # a stage other models have does not concern this one
                stage_trainer[stage][name] = value
        elif head in GROUPS:
            groups[head][rest] = value
        elif head == model:
            groups["model"][rest] = value
        elif head not in MODELS:
            valid = [*GROUPS, *MODELS.names()]
            close = difflib.get_close_matches(head, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise BenchError(f"--set {key}: unknown group {head!r}.{hint} Valid: {', '.join(valid)}")
    protocol_params = validated(protocol_cls.Config, groups["protocol"], "protocol")
    protocol_obj = protocol_cls(protocol_params)
    dataset = check_dataset_name(protocol_obj.dataset or dataset)  # e.g. cross_domain names its own target
    for source in protocol_obj.stage_plan().pretrain_on:  # e.g. cross_domain's pre-training sources
        check_dataset_name(source)
    check_seed(seed)
    implied = protocol_obj.model_overrides(model_cls.Config)
    model_params = validated(model_cls.Config, {**groups["model"], **implied}, model).model_dump()
    trainer = {
        stage: validated(
            TrainerConfig, {**model_cls.trainer_defaults.get(stage, {}), **groups["trainer"], **stage_trainer[stage]},
            "trainer",
        )
        for stage in model_cls.stages
    }
    for cfg in trainer.values():  # a device this machine lacks: refused now, not when training starts
        resolve_device(cfg.device)
    return RunSpec(
        dataset=dataset,
        protocol=protocol,
        protocol_params=protocol_params.model_dump(),
        model=model,
        model_params=model_params,
        trainer=trainer,
        evaluation=validated(EvalConfig, groups["eval"], "eval"),
        seed=seed,
        data=validated(DataConfig, groups["data"], "data"),
        numerics={"model": model_cls.numerics_version, "trainer": TRAINER_NUMERICS,
                  "evaluator": EVALUATOR_NUMERICS},
    )
