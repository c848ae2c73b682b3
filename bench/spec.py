"""The fully resolved specification of one run, and `--set key=value` overrides.

Override keys:  <model>.<field>  (e.g. sasrec.dropout=0.5; applies to that model only),
trainer.<field> (every stage), trainer.<stage>.<field> (one stage, e.g. trainer.pretrain.lr),
eval.<field>, protocol.<field>.
"""

from __future__ import annotations

import ast
import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import BenchError
from bench.evaluator import EvalConfig
from bench.model import MODELS, get_model_class
from bench.trainer import TrainerConfig
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


def parse_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
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
    try:
        return cls(**values)
    except ValidationError as exc:
        raise BenchError(f"option {where}.{first_error(exc)}") from None


def first_error(exc: ValidationError) -> str:
    """'field.path: message (got value)' for the first error pydantic reports."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']} (got {err.get('input')!r})"


def build_spec(dataset: str, protocol: str, model: str, seed: int, overrides: dict[str, Any]) -> RunSpec:
    model_cls = get_model_class(model)
    protocol_cls = PROTOCOLS.get(protocol)
    groups: dict[str, dict[str, Any]] = {"model": {}, "trainer": {}, "eval": {}, "protocol": {}}
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
        elif head in ("trainer", "eval", "protocol"):
            groups[head][rest] = value
        elif head == model:
            groups["model"][rest] = value
        elif head not in MODELS:
            valid = ["trainer", "eval", "protocol", *MODELS.names()]
            close = difflib.get_close_matches(head, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise BenchError(f"--set {key}: unknown group {head!r}.{hint} Valid: {', '.join(valid)}")
    protocol_params = validated(protocol_cls.Config, groups["protocol"], "protocol")
    protocol_obj = protocol_cls(protocol_params)
    dataset = protocol_obj.dataset or dataset  # e.g. cross_domain names its own target
    implied = protocol_obj.model_overrides(model_cls.Config)
    model_params = validated(model_cls.Config, {**groups["model"], **implied}, model).model_dump()
    trainer = {
        stage: validated(
            TrainerConfig, {**model_cls.trainer_defaults.get(stage, {}), **groups["trainer"], **stage_trainer[stage]},
            "trainer",
        )
        for stage in model_cls.stages
    }
    return RunSpec(
        dataset=dataset,
        protocol=protocol,
        protocol_params=protocol_params.model_dump(),
        model=model,
        model_params=model_params,
        trainer=trainer,
        evaluation=validated(EvalConfig, groups["eval"], "eval"),
        seed=seed,
    )
