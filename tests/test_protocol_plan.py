"""A protocol's stage plan and test sets drive the runner: no runner code names the protocol."""

import numpy as np
import pytest

from bench.engine.runner import RunEnv, execute
from bench.engine.spec import build_spec, parse_overrides
from bench.errors import BenchError
from protocols import PROTOCOLS, Split, StagePlan
from protocols.leave_one_out import LeaveOneOut

HEAD = 40  # rows of the extra test set


class Planned(LeaveOneOut):
    """Leave-one-out whose plan says: the final stage never trains, label runs 'probe', and
    score an extra test set 'head' (the first HEAD main test cases)."""

    name = "planned_probe"

    def stage_plan(self) -> StagePlan:
        return StagePlan(final_stage_trains=False, transfer_label="probe")

    def split(self, ds) -> Split:
        s = super().split(ds)
        test = s.unlock_test()
        return Split(s.n_items, s.train, s.valid, test, s.definition,
                     _extra_test={"head": test.subset(np.arange(HEAD))})


@pytest.fixture
def planned(monkeypatch):
    monkeypatch.setitem(PROTOCOLS._items, Planned.name, Planned)  # registered for this test only


def test_plan_drives_the_runner(planned, data_root, tmp_path):
    env = RunEnv(data_root, tmp_path)
    sets = ["protocol.max_users=150", "s3rec.attributes=popularity", "trainer.pretrain.epochs=1",
            "trainer.finetune.epochs=1", "trainer.batch_size=64"]
    spec = build_spec("scientific", Planned.name, "s3rec", 0, parse_overrides(sets))
    key, record, _ = execute(spec, env)
    assert record["history"].keys() == {"pretrain"}  # the plan said the final stage does not train
    assert record["label"] == "S3-Rec [probe]"
    per_user = env.store.per_user(key)
    assert len(per_user["test:head"]["NDCG@10"]) == HEAD
    for metric, values in per_user["test:head"].items():  # same model, the first HEAD test cases
        np.testing.assert_array_equal(values, per_user["test"][metric][:HEAD])
    assert record["metrics"]["test:head"]["NDCG@10"] == pytest.approx(np.mean(per_user["test"]["NDCG@10"][:HEAD]))

    one_stage = build_spec("scientific", Planned.name, "s3rec", 0, parse_overrides([*sets, "s3rec.pretrain=false"]))
    single = execute(one_stage, env)[1]
    assert single["history"].keys() == {"finetune"}  # a single-stage model trains on the target anyway
    assert single["label"] == "S3-Rec [target only]"


def test_test_sets_are_locked_and_name_the_main_set_test(small_split):
    s = small_split
    cases = s.valid.subset(np.arange(3))
    split = Split(s.n_items, s.train, s.valid, cases, s.definition, _extra_test={"few": cases})
    with pytest.raises(BenchError, match="locked"):
        split.test_sets()
    split.unlock_test()
    assert list(split.test_sets()) == ["test", "few"]
    with pytest.raises(BenchError, match="may not be named 'test'"):
        Split(s.n_items, s.train, s.valid, cases, s.definition, _extra_test={"test": cases})
