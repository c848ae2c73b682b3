"""Config overrides and the results store."""

import json

import numpy as np
import pytest

from bench.engine.spec import build_spec, parse_overrides
from bench.engine.store import ResultStore, RunBusy
from bench.errors import BenchError


def test_overrides_resolve_into_typed_configs():
    spec = build_spec("scientific", "leave_one_out", "sasrec", 3,
                      parse_overrides(["sasrec.dropout=0.5", "trainer.lr=1e-4", "protocol.max_len=20", "eval.mask_history=true"]))
    assert spec.model_params["dropout"] == 0.5 and spec.model_params["hidden"] == 64
    assert spec.trainer["train"].lr == 1e-4
    assert spec.protocol_params["max_len"] == 20
    assert spec.evaluation.mask_history is True
    # an override for another model in the same invocation leaves this one alone
    pop = build_spec("scientific", "leave_one_out", "pop", 0, parse_overrides(["sasrec.dropout=0.5"]))
    assert pop.model_params == {}


@pytest.mark.parametrize("item, message", [
    ("sasrec.dropuot=0.1", r"unknown option sasrec\.dropuot; did you mean sasrec\.dropout\?"),
    ("trainer.lr=-1", r"option trainer\.lr: Input should be greater than 0"),
    ("sasrek.dropout=0.1", r"unknown group 'sasrek'\. Did you mean 'sasrec'\?"),
    ("trainer.patiense=3", r"did you mean trainer\.patience"),
    ("novalue", r"expected key=value"),
])
def test_bad_overrides_get_one_line_errors(item, message):
    with pytest.raises(BenchError, match=message):
        build_spec("scientific", "leave_one_out", "sasrec", 0, parse_overrides([item]))


def test_unknown_model_and_protocol_list_valid_names():
    with pytest.raises(BenchError, match=r"unknown model 'sasrek'.*Valid: .*sasrec"):
        build_spec("scientific", "leave_one_out", "sasrek", 0, {})
    with pytest.raises(BenchError, match=r"unknown protocol 'loo'.*Valid: .*leave_one_out"):
        build_spec("scientific", "loo", "sasrec", 0, {})


def test_store_roundtrip_and_corruption(tmp_path):
    store = ResultStore(tmp_path)
    per_user = {"test": {"NDCG@10": np.array([0.5, 0.0])}, "valid": {"NDCG@10": np.array([1.0, 0.0])}}
    store.save("abc", {"status": "complete", "metrics": {"test": {"NDCG@10": 0.25}}}, per_user)
    assert store.load("abc")["metrics"]["test"]["NDCG@10"] == 0.25
    np.testing.assert_array_equal(store.per_user("abc")["test"]["NDCG@10"], [0.5, 0.0])
    path = store.run_dir("abc") / "record.json"
    record = json.loads(path.read_text())
    record["metrics"]["test"]["NDCG@10"] = 0.99  # tampered or half-written
    path.write_text(json.dumps(record))
    assert store.load("abc") is None and not store.is_complete("abc")
    store.save("abc", {"status": "complete"}, per_user)
    (store.run_dir("abc") / "per_user.npz").write_bytes(b"truncated")
    assert store.load("abc") is None


def test_claim_is_exclusive(tmp_path):
    store = ResultStore(tmp_path)
    with store.claim(store.run_dir("x")):
        with pytest.raises(RunBusy):
            with store.claim(store.run_dir("x")):
                pass
    with store.claim(store.run_dir("x")):  # released after use
        pass


def test_waiting_claim_blocks_until_the_other_process_releases(tmp_path):
    """A shared pre-training stage held by another worker: wait=True waits, then gets it."""
    import subprocess
    import sys
    import time

    store = ResultStore(tmp_path)
    folder = store.stage_dir("s")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from bench.engine.store import ResultStore\n"
        f"s = ResultStore(Path({str(tmp_path)!r}))\n"
        "with s.claim(s.stage_dir('s')):\n    print('held', flush=True); time.sleep(2)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunBusy):
        with store.claim(folder):
            pass
    start = time.perf_counter()
    with store.claim(folder, wait=True):
        waited = time.perf_counter() - start
    holder.wait()
    assert waited > 0.5
