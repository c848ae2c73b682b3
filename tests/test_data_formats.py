"""`bench data add` for Amazon Reviews 2023 files and RecBole atomic folders, on small files written
here in each format's real layout (fields as the publishers ship them)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.data.amazon_raw import read_amazon_raw
from bench.data.catalog import load_dataset
from bench.data.recbole_atomic import read_recbole_atomic
from bench.data.user_datasets import add_atomic_dataset
from bench.errors import BenchError
from bench.paths import cache_dir


def review23(user: str, asin: str, parent: str, ms: int) -> dict:
    return {"rating": 5.0, "title": "Great", "text": "Works.", "images": [], "asin": asin, "parent_asin": parent,
            "user_id": user, "timestamp": ms, "helpful_vote": 0, "verified_purchase": True}


def meta23(parent: str, title: str, **extra) -> dict:
    record = {"main_category": "Office Products", "title": title, "average_rating": 4.5, "rating_number": 12,
              "features": [], "description": [], "price": None, "images": [], "videos": [], "store": None,
              "categories": [], "details": {"Brand": "x"}, "parent_asin": parent, "bought_together": None}
    return {**record, **extra}


def write_jsonl(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)


@pytest.fixture
def amazon2023(tmp_path) -> Path:
    t0 = 1_600_000_000_000
    reviews = [
        review23("U1", "P1", "P1", t0 + 3000), review23("U1", "P2-red", "P2", t0 + 1000),
        review23("U1", "P3", "P3", t0 + 2000), review23("U2", "P1", "P1", t0 + 500),
        review23("U2", "P2-blue", "P2", t0 + 100), review23("U2", "P2-red", "P2", t0 + 900),  # same parent twice
        review23("U3", "P1", "P1", t0 + 1), review23("U3", "P3", "P3", t0),  # 1 ms apart, file order reversed
        review23("U9", "P9", "P9", t0),  # one-off user and item: gone at k=2
    ]
    write_jsonl(tmp_path / "Office_Products.jsonl.gz", reviews)
    metas = [
        meta23("P1", "Stapler &amp; remover", store="Swingline", categories=["Office Products", "Staplers"],
               features=["Holds 210 staples. Jam-free."], description=["A sturdy stapler."],
               images=[{"thumb": "t1", "large": "L1", "variant": "MAIN", "hi_res": "H1"},
                       {"thumb": "t2", "large": "L2", "variant": "PT01", "hi_res": None}]),
        meta23("P2", "Pen"), meta23("P3", "Paper", store="HP"), meta23("P9", "Unused"),
    ]
    write_jsonl(tmp_path / "meta_Office_Products.jsonl", metas)
    return tmp_path


def test_amazon_2023_reviews_and_meta(amazon2023):
    ds = read_amazon_raw(amazon2023, "Office_Products", "o23", k_core_min=2)
    assert ds.item_ids == ["P1", "P2", "P3"] and ds.user_ids == ["U1", "U2", "U3"]
    seqs = {ds.user_ids[u]: [ds.item_ids[i - 1] for i in ds.sequence(u)] for u in range(ds.n_users)}
    # ms timestamps order each user's items; U2's two variants of P2 are one product (its last review kept)
    assert seqs == {"U1": ["P2", "P3", "P1"], "U2": ["P1", "P2"], "U3": ["P3", "P1"]}
    assert ds.timestamps[:3].tolist() == [1_600_000_001, 1_600_000_002, 1_600_000_003]  # seconds
    p1 = ds.item_text[0]
    assert p1[:3] == ["Stapler & remover", "Office Products Staplers", "Swingline"]
    assert "Holds 210 staples." in p1 and "Jam-free." in p1 and "A sturdy stapler." in p1
    assert ds.item_text[2] == ["Paper", "HP"]
    assert ds.item_images[0] == ["H1", "L2"] and ds.item_images[1] == []
    assert ds.meta["source"].startswith("Amazon 2023 Office_Products")


def test_amazon_2023_missing_meta_is_named(amazon2023):
    (amazon2023 / "meta_Office_Products.jsonl").unlink()
    with pytest.raises(BenchError, match=r"missing metadata file .*meta_Office_Products\.jsonl\.gz"):
        read_amazon_raw(amazon2023, "Office_Products", "o23")


INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
u1\ti2\t5\t30.5
u1\ti1\t4\t10
u2\ti1\t3\t5
u1\ti3\t4\t20
u2\ti3\t2\t5
u3\ti2\t1\t1
u2\ti1\t5\t7
"""
ITEM = """item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token\tprice:float
i1\tRed Pen\tOffice Pens\tBic\t1.5
i2\tBlue Notebook\tPaper\t\t3
i3\tStapler\t\tSwingline\t9
"""


@pytest.fixture
def atomic_dir(tmp_path) -> Path:
    folder = tmp_path / "mini"
    folder.mkdir()
    (folder / "mini.inter").write_text(INTER)
    (folder / "mini.item").write_text(ITEM)
    return folder


def test_recbole_atomic_rows_order_and_text(atomic_dir):
    ds = read_recbole_atomic(atomic_dir, "mini")
    seqs = {ds.user_ids[u]: [ds.item_ids[i - 1] for i in ds.sequence(u)] for u in range(ds.n_users)}
    # every row kept (u2 has i1 twice, as RecBole keeps it); equal timestamps keep file order
    assert seqs == {"u1": ["i1", "i3", "i2"], "u2": ["i1", "i3", "i1"], "u3": ["i2"]}
    assert ds.timestamps.tolist() == [10, 20, 30.5, 5, 5, 7, 1]
    assert ds.item_text == [["Red Pen", "Office Pens", "Bic"], ["Blue Notebook", "Paper"], ["Stapler", "Swingline"]]
    assert ds.meta["text_fields"] == ["title", "categories", "brand"]
    two = read_recbole_atomic(atomic_dir, "mini", k_core_min=2)
    assert two.user_ids == ["u1", "u2"] and two.item_ids == ["i1", "i3"]


def test_recbole_atomic_bad_input_is_one_line(atomic_dir):
    (atomic_dir / "mini.inter").write_text("user_id\titem_id:token\nu1\ti1\n")
    with pytest.raises(BenchError, match=r"mini\.inter: header column 'user_id' is not field:type"):
        read_recbole_atomic(atomic_dir, "mini")
    (atomic_dir / "mini.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t3\nu1\ti2\tsoon\n")
    with pytest.raises(BenchError, match=r"mini\.inter:3: timestamp 'soon' is not a number"):
        read_recbole_atomic(atomic_dir, "mini")
    (atomic_dir / "mini.inter").write_text("session_id:token\titem_id:token\nu1\ti1\n")
    with pytest.raises(BenchError, match=r"no user_id column \(header: session_id:token, item_id:token\)"):
        read_recbole_atomic(atomic_dir, "mini")


def test_atomic_without_timestamp_or_item_file_keeps_file_order(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "other_name.inter").write_text("user_id:token\titem_id:token\na\tx\na\tz\na\ty\n")
    ds = read_recbole_atomic(folder, "plain")
    assert [ds.item_ids[i - 1] for i in ds.sequence(0)] == ["x", "z", "y"]
    assert ds.timestamps is None and ds.item_text is None


def test_add_atomic_registers_and_runs_from_the_cli(atomic_dir, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "BENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench", "data", "add", "mini", "--atomic", str(atomic_dir)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "added dataset 'mini'" in proc.stdout and "'interactions': 7" in proc.stdout
    ds = load_dataset("mini", tmp_path / "no-data-root", cache_dir(home))  # found without the raw files
    assert ds.n_interactions == 7 and np.array_equal(ds.lengths(), [3, 3, 1])
    again = add_atomic_dataset("mini", atomic_dir, home)
    assert again.content_hash == ds.content_hash
    proc = subprocess.run([sys.executable, "-m", "bench", "data", "add", "x", "--atomic", str(atomic_dir),
                           "--raw-dir", str(atomic_dir)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "either --raw-dir" in proc.stderr
