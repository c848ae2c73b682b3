"""Execution-only settings (device, evaluation chunk sizes) stay out of the run hash; every setting
that changes a run's numbers stays in it; stored runs keep their hashes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.engine.runner import run_hash
from bench.engine.spec import HASHED_AS, build_spec, hashed_spec, spec_key
from bench.report.site.records import record_hash

RESULTS = Path(__file__).resolve().parents[1] / "results"
EXECUTION_ONLY = {"eval.batch_users": 512, "eval.max_scores_in_memory": 1_000_000, "trainer.device": "cpu"}


def _env():
    """The two things run_hash reads besides the spec, without loading data."""
    return SimpleNamespace(split=lambda spec: SimpleNamespace(definition={"protocol": spec.protocol}),
                           dataset=lambda name, data: SimpleNamespace(content_hash=f"{name}-content"))


def _spec(model: str = "sasrec", **overrides):
    return build_spec("scientific", "leave_one_out", model, 0, overrides)


@pytest.mark.parametrize("model", ["sasrec", "msm4sr"])  # one stage; pre-train + fine-tune (per-stage devices)
def test_execution_only_settings_do_not_move_the_hash(model):
    plain, moved = _spec(model), _spec(model, **EXECUTION_ONLY)
    assert plain.model_dump() != moved.model_dump()  # the overrides took effect
    assert spec_key(plain) == spec_key(moved)
    assert run_hash(plain, _env()) == run_hash(moved, _env())
    last = list(plain.trainer)[-1]  # one stage on another device than the others
    one_stage = _spec(model, **{f"trainer.{last}.device": "cpu"})
    assert one_stage.trainer[last].device == "cpu" and run_hash(one_stage, _env()) == run_hash(plain, _env())


def test_settings_that_change_numbers_move_the_hash():
    plain = _spec()
    for key, value in {"trainer.lr": 5e-4, "eval.ties": "optimistic", "sasrec.dropout": 0.3,
                       "trainer.bf16": False}.items():
        other = _spec(**{key: value, **EXECUTION_ONLY})
        assert run_hash(other, _env()) != run_hash(plain, _env()), key
        assert spec_key(other) != spec_key(plain), key


def test_the_record_keeps_the_values_used_and_its_hash_matches_the_runner():
    moved = _spec(**EXECUTION_ONLY)
    dump = moved.model_dump()
    assert dump["evaluation"]["batch_users"] == 512 and dump["trainer"]["train"]["device"] == "cpu"
    assert hashed_spec(moved)["evaluation"]["batch_users"] == HASHED_AS["evaluation"]["batch_users"]
    assert dump["evaluation"]["batch_users"] == 512  # hashing copied, never changed the spec's dump
    # what the report recomputes from a record equals what the runner stored it under
    record = {"spec": dump, "dataset": {"content_hash": "scientific-content"},
              "protocol": {"protocol": "leave_one_out"}}
    assert record_hash(record) == run_hash(moved, _env())


def test_an_older_record_without_the_fields_is_hashed_as_it_was():
    spec = {"model": "sasrec", "evaluation": {"ties": "pessimistic"}, "trainer": {"train": {"lr": 1e-3}}}
    assert hashed_spec(spec) == spec


def test_every_committed_record_keeps_its_hash():
    records = sorted((RESULTS / "store" / "runs").glob("*/record.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        assert record_hash(record) == record["run_hash"] == path.parent.name, path
