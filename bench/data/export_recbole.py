"""Export the harness's leave-one-out split as RecBole 1.2.1 pre-split atomic files.

Runs in the PROJECT venv. Writes <out>/<name>/<name>.{train,valid,test}.inter with the header
``user_id:token  item_id_list:token_seq  item_id:token``: one row per training prefix (exactly the
rows of ``bench.engine.batching.prefix_rows``) and one row per validation / test case. RecBole reads them
through ``benchmark_filename: [train, valid, test]`` and does no further augmentation, so both
sides train and evaluate on identical samples.

With ``attributes`` (S3-Rec's attribute source, e.g. "text") it also writes <name>.item,
``item_id:token  class:token_seq``: each item's S3-Rec attribute ids exactly as our S3-Rec computes
them (baselines/s3rec.py item_attributes), for RecBole's S3Rec (``item_attribute: class``).

Item tokens are our internal integer ids (1..n_items) as strings; user tokens are the dataset's
user index. RecBole remaps tokens to its own ids (order of first appearance, 0 = [PAD]); that is a
bijection on the same items, so metrics are comparable as long as every item appears somewhere
(asserted below), which makes RecBole's ranking candidate set equal to ours.

    python -m bench.data.export_recbole --out /tmp/recbole_data [--dataset scientific] \
        [--data-root ../shared/data] [--home .bench] [--max-len 50] [--attributes text]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
ITEM_HEADER = "item_id:token\tclass:token_seq\n"


def _write(path: Path, users: np.ndarray, hist: np.ndarray, lens: np.ndarray, targets: np.ndarray) -> None:
    assert len(users) == len(hist) == len(lens) == len(targets)
    assert (lens >= 1).all(), "RecBole needs a non-empty history in every row"
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(HEADER)
        for u, h, n, t in zip(users.tolist(), hist.tolist(), lens.tolist(), targets.tolist()):
            f.write(f"{u}\t{' '.join(map(str, h[:n]))}\t{t}\n")
    tmp.replace(path)


def _write_item_attributes(path: Path, attrs: np.ndarray) -> None:
    """One row per item 1..n: its attribute ids (1-based; 0 = none, left out)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(ITEM_HEADER)
        for item in range(1, len(attrs)):
            f.write(f"{item}\t{' '.join(str(a) for a in attrs[item] if a > 0)}\n")
    tmp.replace(path)


def s3rec_attributes(ds, split, data_root: str, home: str, max_len: int, source: str) -> np.ndarray:
    """[n_items + 1, K] attribute ids as our S3-Rec builds them from this split (default config)."""
    from baselines.s3rec import S3Rec, item_attributes
    from bench.features.store import load_item_features
    from bench.nn.model import ModelContext

    config = S3Rec.Config(attributes=source)
    params = S3Rec.needs_features(config)
    features = load_item_features(ds, data_root, Path(home) / "cache", **params) if params is not None else None
    ctx = ModelContext(ds.n_items, max_len, split.train.item_counts(ds.n_items), features)
    return item_attributes(ctx, config).numpy()


def export(dataset: str, data_root: str, home: str, out: str, max_len: int = 50, name: str | None = None,
           attributes: str | None = None) -> dict:
    from bench.data.catalog import load_dataset
    from bench.engine.batching import prefix_rows
    from protocols.leave_one_out import LeaveOneOut

    ds = load_dataset(dataset, Path(data_root).resolve(), Path(home).resolve() / "cache")
    P = LeaveOneOut  # RecBole's LS split is leave-one-out
    split = P(P.Config(max_len=max_len)).split(ds)
    n_items = split.n_items
    name = name or dataset
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)

    # training prefixes: input left-aligned, target at the last real position
    inp, tgt = prefix_rows(split.train, max_len)
    tr_lens = (inp > 0).sum(1)
    assert (tr_lens >= 1).all()
    # every row is left-aligned (no zero before a non-zero)
    assert ((inp > 0) == (np.arange(max_len)[None, :] < tr_lens[:, None])).all()
    tr_tgt = tgt[np.arange(len(tgt)), tr_lens - 1]
    assert (tr_tgt > 0).all() and ((tgt > 0).sum(1) == 1).all()
    # prefix_rows row -> training sequence index -> dataset user (valid.users holds the kept users
    # in the same order as the training sequences)
    n_targets = np.maximum(split.train.lengths() - 1, 0)
    tr_users = split.valid.users[np.repeat(np.arange(len(n_targets)), n_targets)]

    v_hist, v_lens = split.valid.padded_histories(max_len)
    test = split.unlock_test()
    t_hist, t_lens = test.padded_histories(max_len)

    seen = np.zeros(n_items + 1, bool)
    for a in (inp, tr_tgt, v_hist, split.valid.targets, t_hist, test.targets):
        seen[np.asarray(a).ravel()] = True
    missing = np.flatnonzero(~seen[1:]) + 1
    assert len(missing) == 0, f"{len(missing)} items never appear in the exported files: {missing[:10]}"

    _write(folder / f"{name}.train.inter", tr_users, inp, tr_lens, tr_tgt)
    _write(folder / f"{name}.valid.inter", split.valid.users, v_hist, v_lens, split.valid.targets)
    _write(folder / f"{name}.test.inter", test.users, t_hist, t_lens, test.targets)
    attrs = None
    if attributes is not None:
        attrs = s3rec_attributes(ds, split, data_root, home, max_len, attributes)
        _write_item_attributes(folder / f"{name}.item", attrs)

    info = {
        "dataset": dataset,
        "name": name,
        "dataset_content_hash": ds.content_hash,
        "protocol": P.name,
        "max_len": max_len,
        "n_items": int(n_items),
        "n_users": int(len(split.valid)),
        "n_train_rows": int(len(inp)),
        "n_valid": int(len(split.valid)),
        "n_test": int(len(test)),
        "s3rec_attributes": None if attrs is None else {
            "source": attributes, "n_attributes": int(attrs.max()),
            "items_with_none": int((attrs[1:] == 0).all(1).sum())},
        "split_definition": split.definition,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (folder / "export_info.json").write_text(json.dumps(info, indent=2, default=str))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder; files go to <out>/<name>/")
    ap.add_argument("--dataset", default="scientific")
    ap.add_argument("--name", default=None, help="RecBole dataset name (default: the dataset name)")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--home", default=".bench")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--attributes", default=None, choices=["text", "text_image", "popularity"],
                    help="also write <name>.item with our S3-Rec's item attributes from this source")
    a = ap.parse_args()
    info = export(a.dataset, a.data_root, a.home, a.out, a.max_len, a.name, a.attributes)
    print(json.dumps({k: v for k, v in info.items() if k != "split_definition"}, indent=2))


if __name__ == "__main__":
    main()
