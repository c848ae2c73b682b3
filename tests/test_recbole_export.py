"""`bench export recbole` writes our leave-one-out split (and S3-Rec's attributes) as RecBole reads them."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.s3rec import S3Rec, item_attributes
from bench.data.export_recbole import HEADER, ITEM_HEADER, export
from bench.engine.batching import prefix_rows
from bench.nn.model import ModelContext
from protocols.leave_one_out import LeaveOneOut


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_root, cache):
    home = tmp_path_factory.mktemp("home")
    (home / "cache").symlink_to(cache)  # the session's parsed datasets
    out = tmp_path_factory.mktemp("out")
    info = export("scientific", str(data_root), str(home), str(out), max_len=20, attributes="popularity")
    return out / "scientific", info


def test_rows_are_our_training_prefixes_and_cases(exported, scientific):
    folder, info = exported
    split = LeaveOneOut(LeaveOneOut.Config(max_len=20)).split(scientific)
    lines = (folder / "scientific.train.inter").read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    inp, tgt = prefix_rows(split.train, 20)
    assert len(lines) - 1 == len(inp) == info["n_train_rows"]
    for i in (0, len(inp) // 2, len(inp) - 1):
        _, hist, target = lines[i + 1].split("\t")
        n = int((inp[i] > 0).sum())
        assert hist.split() == [str(x) for x in inp[i][:n]]
        assert int(target) == tgt[i, n - 1]
    valid = (folder / "scientific.valid.inter").read_text().splitlines()[1:]
    assert len(valid) == info["n_valid"] == len(split.valid)
    assert [int(v.split("\t")[2]) for v in valid] == split.valid.targets.tolist()
    assert info["dataset_content_hash"] == scientific.content_hash


def test_item_attributes_are_our_s3rec_table(exported, scientific):
    folder, info = exported
    split = LeaveOneOut(LeaveOneOut.Config(max_len=20)).split(scientific)
    ctx = ModelContext(scientific.n_items, 20, split.train.item_counts(scientific.n_items))
    ours = item_attributes(ctx, S3Rec.Config(attributes="popularity")).numpy()
    lines = (folder / "scientific.item").read_text().splitlines()
    assert lines[0] + "\n" == ITEM_HEADER
    assert len(lines) - 1 == scientific.n_items
    written = {int(item): [int(a) for a in attrs.split()] for item, attrs in (ln.split("\t") for ln in lines[1:])}
    assert written == {i: [int(a) for a in ours[i] if a > 0] for i in range(1, scientific.n_items + 1)}
    assert info["s3rec_attributes"] == {"source": "popularity", "n_attributes": 10, "items_with_none": 0}
    # popularity buckets: ten of (almost) equal size
    sizes = np.bincount(ours[1:, 0])[1:]
    assert len(sizes) == 10 and sizes.max() - sizes.min() <= 1

