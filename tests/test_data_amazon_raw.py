"""The raw Amazon Review reader (2018 / 2014 dumps) on small files written here, including
malformed input, and `add_raw_dataset` registering a dataset that `load_dataset` finds later."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli.data import list_datasets
from bench.data.amazon_raw import read_amazon_raw
from bench.data.catalog import load_dataset
from bench.data.interaction_log import InteractionLog, k_core_mask, keep_last
from bench.data.user_datasets import add_raw_dataset
from bench.errors import BenchError
from bench.paths import cache_dir


def review(user: str, item: str, t: int, **extra) -> dict:
    return {"reviewerID": user, "asin": item, "unixReviewTime": t, "overall": 5.0, **extra}


def two_core_reviews() -> list[dict]:
    """3 users x 3 items all connected (a 2-core), plus noise that k-core filtering removes."""
    rows = []
    for u, user in enumerate(["u1", "u2", "u3"]):
        for i, item in enumerate(["A", "B", "C"]):
            rows.append(review(user, item, 1000 + 10 * ((i + u) % 3)))
    rows.append(review("u4", "A", 5))  # u4 has one interaction: dropped at k=2
    rows.append(review("u1", "Z", 7))  # item Z has one interaction: dropped at k=2
    return rows


def write_jsonl_gz(path: Path, records: list, raw_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps(r) if isinstance(r, dict) else r for r in records]
    for n, text in (raw_lines or {}).items():
        lines.insert(n - 1, text)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


META_2018 = [
    {
        "asin": "A",
        "title": "Alpha Glue",
        "brand": "Acme",
        "category": ["Office", "Glue"],
        "description": ["Strong glue. Dries fast."],
        "imageURLHighRes": ["http://x/a.jpg"],
    },
    {
        "asin": "B",
        "title": "Beta Tape",
        "brand": "",
        "category": [],
        "description": [],
        "imageURL": ["http://x/b1.jpg", "http://x/b2.jpg"],
    },
    {"asin": "C", "title": "", "brand": "", "category": [], "description": ""},  # an item with no text
]


@pytest.fixture()
def raw2018(tmp_path) -> Path:
    write_jsonl_gz(tmp_path / "Office_5.json.gz", two_core_reviews())
    write_jsonl_gz(tmp_path / "meta_Office.json.gz", META_2018)
    return tmp_path


def test_2018_reviews_kcore_order_text_images(raw2018):
    ds = read_amazon_raw(raw2018, "Office", "t", k_core_min=2)
    assert ds.item_ids == ["A", "B", "C"] and ds.user_ids == ["u1", "u2", "u3"]
    assert ds.n_interactions == 9
    # chronological: u2's times are A:1010, B:1020, C:1000 -> C, A, B
    assert [ds.item_ids[i - 1] for i in ds.sequence(1)] == ["C", "A", "B"]
    assert ds.item_text[0] == ["Alpha Glue", "Office Glue", "Acme", "Strong glue.", "Dries fast."]
    assert ds.item_text[1] == ["Beta Tape"] and ds.item_text[2] == []
    assert ds.item_images[0] == ["http://x/a.jpg"] and len(ds.item_images[1]) == 2
    assert ds.meta["items_without_text"] == 1 and ds.meta["items_without_meta"] == 0
    assert ds.meta["pairs_before_k_core"] == 11


def test_duplicates_keep_last(tmp_path):
    rows = two_core_reviews() + [review("u1", "A", 2000)]  # u1 re-reviews A later: A moves to the end
    write_jsonl_gz(tmp_path / "Office_5.json.gz", rows)
    write_jsonl_gz(tmp_path / "meta_Office.json.gz", META_2018)
    ds = read_amazon_raw(tmp_path, "Office", "t", k_core_min=2)
    seq = [ds.item_ids[i - 1] for i in ds.sequence(0)]
    assert seq == ["B", "C", "A"] and ds.n_interactions == 9


def k_core(pairs, k):
    log = InteractionLog()
    for n, (u, i) in enumerate(pairs):
        log.add(u, i, 0, n)
    cols = log.columns()
    keep = k_core_mask(cols["user"], cols["item"], k)
    return {pairs[n] for n in np.flatnonzero(keep)}


def test_k_core_is_iterated_until_stable():
    # round 1 drops user x and item S; then c has one interaction left, so c goes, and with it
    # item P falls to one interaction and goes too: only a and b on Q and R remain
    pairs = [("a", "P"), ("x", "Q"), ("a", "Q"), ("b", "Q"), ("b", "R"), ("a", "R"), ("c", "P"), ("c", "S")]
    assert k_core(pairs, 2) == {("a", "Q"), ("b", "Q"), ("a", "R"), ("b", "R")}
    assert k_core([("a", "P")], 2) == set()


def test_keep_last_and_k_core_match_a_pandas_oracle():
    rng = np.random.default_rng(0)
    n = 5000
    df = pd.DataFrame({"user": rng.integers(0, 1500, n), "item": rng.integers(0, 200, n),
                       "time": rng.integers(0, 50, n), "line": np.arange(n)})
    cols = {k: df[k].to_numpy() for k in df}
    ours = df.iloc[keep_last(cols)].sort_values(["user", "item"]).reset_index(drop=True)
    oracle = (df.sort_values(["time", "line"]).groupby(["user", "item"], as_index=False).last()
              .sort_values(["user", "item"]).reset_index(drop=True))
    pd.testing.assert_frame_equal(ours[oracle.columns], oracle, check_dtype=False)
    core = ours.iloc[np.flatnonzero(k_core_mask(ours["user"].to_numpy(), ours["item"].to_numpy(), 3))]
    expect = ours
    while True:  # the textbook loop, on pandas
        small = expect[(expect.groupby("user")["item"].transform("size") >= 3)
                       & (expect.groupby("item")["user"].transform("size") >= 3)]
        if len(small) == len(expect):
            break
        expect = small
    assert 0 < len(core) < len(ours)
    pd.testing.assert_frame_equal(core.reset_index(drop=True), expect.reset_index(drop=True))


def test_2014_python_literal_meta_and_image_folder(tmp_path):
    write_jsonl_gz(tmp_path / "reviews_Office_Products_5.json.gz", two_core_reviews())
    meta = [
        "{'asin': 'A', 'title': \"Alpha's Glue\", 'imUrl': 'http://x/a.jpg', 'categories': [['Office Products', 'Glue']], 'description': 'Sticks.'}",
        "{'asin': 'B', 'title': 'Beta', 'brand': 'Bee', 'imUrl': 'http://x/b.jpg'}",
        # no record for C: an item with missing meta is kept, without text, and counted
    ]
    write_jsonl_gz(tmp_path / "meta_Office_Products.json.gz", meta)
    images = tmp_path / "images"
    images.mkdir()
    (images / "B.jpg").write_bytes(b"\xff\xd8\xff")  # a local image replaces the URL
    ds = read_amazon_raw(tmp_path, "Office_Products", "t", k_core_min=2, image_dir=images)
    assert ds.item_text[0] == ["Alpha's Glue", "Office Products Glue", "Sticks."]
    assert ds.item_text[1] == ["Beta", "Bee"] and ds.item_text[2] == []
    assert ds.item_images[0] == ["http://x/a.jpg"] and ds.item_images[1] == [
        str((images / "B.jpg").resolve())
    ]
    assert ds.meta["items_without_meta"] == 1 and ds.meta["items_without_text"] == 1
    assert ds.meta["image_sources"] == {"url": 1, "local_file": 1, "none": 1}
    assert "2014" in ds.meta["source"]


def test_ratings_csv_2018_column_order(tmp_path):
    lines = [f"{r['asin']},{r['reviewerID']},5.0,{r['unixReviewTime']}" for r in two_core_reviews()]
    (tmp_path / "Office.csv").write_text("\n".join(lines) + "\n")
    write_jsonl_gz(tmp_path / "meta_Office.json.gz", META_2018)
    ds = read_amazon_raw(tmp_path, "Office", "t", k_core_min=2)
    assert ds.user_ids == ["u1", "u2", "u3"] and ds.item_ids == ["A", "B", "C"]


def test_truncated_gzip_names_the_file(raw2018):
    path = raw2018 / "Office_5.json.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])  # cut the gzip trailer and the end of the stream
    with pytest.raises(BenchError, match=r"Office_5\.json\.gz:\d+: truncated or corrupt gzip") as err:
        read_amazon_raw(raw2018, "Office", "t", k_core_min=2)
    assert "\n" not in str(err.value)


def test_bad_json_line_reports_its_number_or_is_skipped(tmp_path):
    write_jsonl_gz(
        tmp_path / "Office_5.json.gz", two_core_reviews(), raw_lines={4: '{"reviewerID": "u9", "asin": '}
    )
    write_jsonl_gz(tmp_path / "meta_Office.json.gz", META_2018)
    with pytest.raises(BenchError, match=r"Office_5\.json\.gz:4: bad record") as err:
        read_amazon_raw(tmp_path, "Office", "t", k_core_min=2)
    assert "\n" not in str(err.value)
    ds = read_amazon_raw(tmp_path, "Office", "t", k_core_min=2, skip_bad_lines=True)
    assert ds.meta["lines_skipped"]["interactions"] == 1 and ds.meta["first_skipped_line"].endswith(
        "Office_5.json.gz:4"
    )
    assert ds.n_interactions == 9


def test_review_without_time_is_reported(tmp_path):
    rows = two_core_reviews()
    rows.insert(1, {"reviewerID": "u1", "asin": "A"})
    write_jsonl_gz(tmp_path / "Office_5.json.gz", rows)
    write_jsonl_gz(tmp_path / "meta_Office.json.gz", META_2018)
    with pytest.raises(BenchError, match=r"Office_5\.json\.gz:2: review without a usable 'unixReviewTime'"):
        read_amazon_raw(tmp_path, "Office", "t", k_core_min=2)


def test_empty_after_k_core(raw2018):
    with pytest.raises(
        BenchError, match=r"no interactions left after 5-core filtering \(11 user-item pairs before\)"
    ):
        read_amazon_raw(raw2018, "Office", "t", k_core_min=5)


def test_missing_files(tmp_path):
    with pytest.raises(BenchError, match="no interaction file for category 'Office'"):
        read_amazon_raw(tmp_path, "Office", "t")
    write_jsonl_gz(tmp_path / "Office_5.json.gz", two_core_reviews())
    with pytest.raises(BenchError, match=r"missing metadata file .*meta_Office\.json\.gz"):
        read_amazon_raw(tmp_path, "Office", "t")


def test_add_raw_dataset_registers_persistently(raw2018, tmp_path, data_root):
    home = tmp_path / "home"
    ds = add_raw_dataset("my_office", raw2018, "Office", home, k_core=2)
    assert ds.n_users == 3 and ds.content_hash
    manifest = json.loads(next((cache_dir(home) / "datasets").glob("my_office-*/manifest.json")).read_text())
    assert manifest["params"]["k_core"] == 2 and len(manifest["inputs"]) == 2
    # found later by name, even after the raw files are gone (the cached build is a snapshot)
    for f in raw2018.glob("*.gz"):
        f.unlink()
    again = load_dataset("my_office", data_root, cache_dir(home))
    assert again.item_ids == ds.item_ids and again.content_hash == ds.content_hash
    rows = {r["name"]: r for r in list_datasets(data_root, cache_dir(home))}
    assert rows["my_office"]["users"] == 3 and rows["my_office"]["source"] == "user"
    with pytest.raises(BenchError, match="built-in dataset"):
        add_raw_dataset("office", raw2018, "Office", home)
