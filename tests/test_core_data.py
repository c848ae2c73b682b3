"""The UniSRec reader and the dataset cache on the real Scientific files."""

import shutil

import numpy as np
import pytest

from bench.data.catalog import load_dataset
from bench.data.stats import dataset_stats
from bench.data.unisrec import read_unisrec
from bench.errors import BenchError

FOLDER = "amazon18_scientific_unisrec"


def test_scientific_counts(scientific):
    stats = dataset_stats(scientific)
    assert (stats["users"], stats["items"]) == (8442, 4385)
    # 43 more than the test rows show: histories truncated to 50 are rebuilt from the train rows
    assert stats["interactions"] == 59427
    assert stats["median_seq_len"] == 6.0


def test_every_inter_row_is_a_window_of_the_rebuilt_sequence(scientific, data_root):
    index = {u: i for i, u in enumerate(scientific.user_ids)}
    with open(data_root / FOLDER / "Scientific.train.inter") as f:
        next(f)
        for n, line in enumerate(f):
            if n % 50:  # every 50th row keeps the test fast; each still checks a full window
                continue
            user, hist, target = line.rstrip("\n").split("\t")
            seq = list(scientific.sequence(int(user)) - 1)
            window = [int(x) for x in hist.split()] + [int(target)]
            starts = [s for s in range(len(seq)) if seq[s : s + len(window)] == window]
            assert starts, f"row {n} is not a window of user {user}'s sequence"
    assert index[scientific.user_ids[0]] == 0


def test_cache_reload_is_identical(scientific, data_root, cache):
    again = load_dataset("scientific", data_root, cache)
    assert again.content_hash == scientific.content_hash
    np.testing.assert_array_equal(again.items, scientific.items)
    manifest = next((cache / "datasets").glob("scientific-*/manifest.json"))
    assert '"users": 8442' in manifest.read_text()


@pytest.fixture()
def scientific_copy(tmp_path, data_root):
    dst = tmp_path / FOLDER
    shutil.copytree(data_root / FOLDER, dst)
    return dst


def test_malformed_line_names_file_and_line(scientific_copy):
    path = scientific_copy / "Scientific.valid.inter"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = "7\tnot numbers\t12\n"
    path.write_text("".join(lines))
    with pytest.raises(BenchError, match=r"Scientific\.valid\.inter:4: malformed row"):
        read_unisrec(scientific_copy, "Scientific", "x")


def test_missing_file_is_named(scientific_copy):
    (scientific_copy / "Scientific.item2index").unlink()
    with pytest.raises(BenchError, match=r"missing data file: .*Scientific\.item2index"):
        read_unisrec(scientific_copy, "Scientific", "x")


def test_unknown_dataset_lists_valid_names(data_root, cache):
    with pytest.raises(BenchError, match=r"unknown dataset 'scientfic'.*Did you mean 'scientific'"):
        load_dataset("scientfic", data_root, cache)


def test_empty_dataset_refused(scientific_copy):
    for part in ("train", "valid", "test"):
        path = scientific_copy / f"Scientific.{part}.inter"
        path.write_text(path.read_text().splitlines(keepends=True)[0])
    with pytest.raises(BenchError, match="no row for user 0"):
        read_unisrec(scientific_copy, "Scientific", "x")
