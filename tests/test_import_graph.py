"""The package imports as a tree: no import cycles (issue 16). Registries never import their
plug-ins (bench/plugins.py does, once); subcommands share the console through bench/cli/console.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PLAN = Path(__file__).resolve().parents[1] / "benchmarks" / "floor_plan.py"


def _plan() -> dict:
    spec = importlib.util.spec_from_file_location("floor_plan", PLAN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.floor_plan()


def test_no_import_cycles():
    plan = _plan()
    assert plan["modules"] > 50  # it found the packages
    assert plan["import_cycles"] == 0, "import cycles: " + "; ".join(" <-> ".join(c) for c in plan["cycles"])


def test_protocols_are_named_only_in_protocols_and_the_defaults():
    """The runner asks a protocol's stage plan; no module outside protocols/ names a protocol,
    mode or split attribute, except bench/defaults.py's default protocol, which must exist."""
    from bench import defaults
    from bench.plugins import DATASETS, PROTOCOLS, model_names

    assert set(_plan()["protocol_name_files"]) == {"bench.defaults"}
    assert defaults.PROTOCOL in PROTOCOLS
    assert defaults.DATASET in DATASETS
    assert set(defaults.MODELS.split(",")) <= set(model_names())
