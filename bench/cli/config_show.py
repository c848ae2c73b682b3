"""`bench config show MODEL`: a model's options with types, defaults and constraints, its trainer
defaults per stage, and its tuning search space (as `bench tune` uses it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bench.errors import BenchError


def option_rows(cls: type[BaseModel], prefix: str, overrides: dict[str, Any] | None = None) -> list[dict]:
    rows = []
    for name, f in cls.model_fields.items():
        default = f.get_default(call_default_factory=True)
        if overrides and name in overrides:
            default = overrides[name]
        kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        constraints = ", ".join(
            f"{k} {getattr(m, k)}" for m in f.metadata for k in ("ge", "gt", "le", "lt", "pattern")
            if getattr(m, k, None) is not None
        )
        rows.append({"option": f"{prefix}.{name}", "type": kind, "default": repr(default), "constraints": constraints})
    return rows


def config_tables(model: str) -> dict[str, list[dict]]:
    """{"model options": rows, "trainer (<stage>)": rows per stage, "search space": rows}."""
    from bench.engine.trainer import TrainerConfig
    from bench.experiment.tuning import search_space
    from bench.plugins import get_model_class

    cls = get_model_class(model)
    out = {f"{model} options (--set {model}.OPTION=VALUE)": option_rows(cls.Config, model)}
    for stage in cls.stages:
        prefix = "trainer" if len(cls.stages) == 1 else f"trainer.{stage}"
        out[f"trainer options, stage {stage} (--set {prefix}.OPTION=VALUE)"] = option_rows(
            TrainerConfig, prefix, cls.trainer_defaults.get(stage)
        )
    try:
        space = search_space(model)
    except BenchError:
        space = {}
    out["search space (bench tune; add dimensions with --param)"] = [
        {"option": key, "kind": spec[0], "range / choices": ", ".join(map(str, spec[1:]))
         if spec[0] != "categorical" else ", ".join(map(str, spec[1]))}
        for key, spec in space.items()
    ] or [{"option": "(none declared)", "kind": "", "range / choices": ""}]
    return out
