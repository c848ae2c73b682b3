"""Hardening: nothing read back from disk runs code, every damaged stored file is discarded and
rebuilt with one warning line naming it (or refused with one line), and bad input gets one line
and exit code 2.

Each stored file type is written by the harness itself, then truncated, emptied, replaced by
garbage or tampered with (a value changed, its checksum left as it was), and read back through
the harness's own path. `outcome()` also produces the table the hardening issue asks for:
`python -m tests.test_hardening` prints it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from bench import sealed
from bench.atomic import write_json
from bench.data.catalog import build_cached, input_checksums, load_user_dataset, read_memo, registry_path
from bench.data.dataset import from_sequences
from bench.engine.candidates import load_or_build
from bench.engine.spec import build_spec, parse_overrides
from bench.engine.store import ResultStore
from bench.engine.trainer import FitResult, resume, write_checkpoint
from bench.errors import BenchError, DamagedFile
from bench.features.item_features import ItemFeatures
from bench.features.store import _cached_store, save_store
from bench.features.string_cache import read_vectors, write_vectors
from protocols.base import EvalCases

CORRUPTIONS = ("truncated", "emptied", "garbage", "tampered")


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps({"data": Payload(marker)})


def torch_payload(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"weights": Payload(marker)}, buf)
    return buf.getvalue()


def npz_payload(marker: Path, **arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays, candidates=np.array([Payload(marker)], dtype=object))
    return buf.getvalue()


def corrupt(path: Path, how: str, tamper) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(random.Random(len(data)).randbytes(max(len(data), 64)))
    else:
        tamper(path)


def tamper_sealed(path: Path) -> None:
    """Change one number in a sealed file, keeping its metadata (and so its old checksum)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = st_load(data)
    key = next(k for k, t in tensors.items() if t.numel() and t.dtype in (torch.float32, torch.int64))
    flat = tensors[key].reshape(-1)
    flat[0] += 1
    path.write_bytes(st_save(tensors, metadata=meta))


def tamper_npz(key: str):
    def tamper(path: Path) -> None:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays[key] = arrays[key].copy()
        arrays[key].reshape(-1)[0] += 1
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path.write_bytes(buf.getvalue())

    return tamper


# ---- one case per stored file type: write it, read it back, say what the harness did ----------


@dataclass
class Case:
    """`make(tmp)` writes a valid file and returns (path, reader); `reader()` reads it back the
    way the harness does and returns what it got; `fresh` is what an intact file yields."""

    make: object
    tamper: object
    payload: object  # (tmp, path, marker) -> None: plant a file that would run code if unpickled


def _linear_state(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    return model, opt


def make_checkpoint(tmp: Path):
    path = tmp / "train.ckpt"
    model, opt = _linear_state()
    gen = torch.Generator().manual_seed(1)
    write_checkpoint(path, {"epoch": 2, "model": model.state_dict(), "optimizer": opt.state_dict(),
                            "result": FitResult(1, 0.5, [{"epoch": 0, "loss": 1.0}]), "best_state": None,
                            "bad_epochs": 0, "rng": __import__("bench.engine.seeding").engine.seeding.rng_state(),
                            "data_order": gen.get_state()})

    def read():
        fresh, fresh_opt = _linear_state(seed=7)
        before = {k: v.clone() for k, v in fresh.state_dict().items()}
        got = resume(path, fresh, fresh_opt, torch.Generator().manual_seed(1), "train")
        if got is None:  # discarded: the states must be untouched (training starts from scratch)
            assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
            return None
        return got[3], {k: v.clone() for k, v in fresh.state_dict().items()}

    return path, read


def make_stage(tmp: Path):
    store = ResultStore(tmp / "store")
    folder = store.stage_dir("abc")
    folder.mkdir(parents=True)
    store.save_stage(folder, {"w": torch.arange(6, dtype=torch.float32)}, {"best_epoch": 1, "best_value": 0.5,
                                                                           "history": [{"loss": 1.0}]})
    return folder / "stage.safetensors", lambda: store.load_stage(folder)


def _tiny_dataset(name: str = "tiny"):
    seqs = [np.array([1, 2, 3]), np.array([2, 3, 1, 2])]
    return from_sequences(name, ["a", "b", "c"], ["u1", "u2"], seqs, item_text=[["x"], [], ["y", "z"]],
                          item_images=[[], ["clip_features:1"], []])


def make_dataset(tmp: Path):
    cache = tmp / "cache"

    def read():
        ds = build_cached("tiny", {}, {"f": "0" * 64}, _tiny_dataset, cache)
        return ds.item_ids, ds.items.tolist(), ds.item_text, ds.content_hash

    read()
    return next((cache / "datasets").glob("tiny-*/dataset.safetensors")), read


def make_memo(tmp: Path):
    root, cache = tmp / "data", tmp / "cache"
    root.mkdir()
    for i in range(3):
        (root / f"f{i}.txt").write_text(f"content {i}\n")
    files = tuple(f"f{i}.txt" for i in range(3))
    input_checksums(root, files, cache)
    return cache / "file_sha256.json", lambda: input_checksums(root, files, cache)


def tamper_memo(path: Path) -> None:
    data = json.loads(path.read_text())
    key = next(iter(data["entries"]))
    data["entries"][key] = "0" * 64
    path.write_text(json.dumps(data))


def make_features(tmp: Path):
    path = tmp / "features" / "tiny-k.safetensors"
    g = torch.Generator().manual_seed(0)
    feats = ItemFeatures(torch.randn(4, 2, 8, generator=g), torch.ones(4, 2, dtype=torch.bool),
                         torch.randn(4, 1, 8, generator=g), torch.zeros(4, 1, dtype=torch.bool), {"encoder": "e"})
    save_store(path, feats)

    def read():
        got = _cached_store(path, {"encoder": "e"})
        return None if got is None else got.text.clone()

    return path, read


def make_strings(tmp: Path):
    path = tmp / "strings-x.npz"
    write_vectors(path, {"a" * 40: np.ones(4, np.float32), "b" * 40: np.zeros(4, np.float32)})

    def read():
        got = read_vectors(path)
        return {k: v.tolist() for k, v in got.items()} or None

    return path, read


def _cases(n=30):
    rng = np.random.default_rng(0)
    return EvalCases(np.arange(n), rng.integers(1, 60, n), np.arange(n + 1), rng.integers(1, 60, n))


def make_candidates(tmp: Path):
    folder = tmp / "cand"
    kw = {"dataset_hash": "h", "split_definition": {"p": 1}, "n_items": 60, "train_counts": None}

    def read():
        return load_or_build(folder, _cases(), "test", "uni10", **kw).tolist()

    read()
    return next(folder.glob("candidates-*.npz")), read


def _store_with_run(tmp: Path):
    store = ResultStore(tmp / "store")
    store.save("r1", {"status": "complete", "metrics": {"test": {"Recall@10": 0.25}}},
               {"test": {"Recall@10": np.array([0.0, 0.5])}})
    return store


def make_record(tmp: Path):
    store = _store_with_run(tmp)
    return store.run_dir("r1") / "record.json", lambda: store.load("r1")


def tamper_record(path: Path) -> None:
    path.write_text(path.read_text().replace("0.25", "0.35"))


def make_per_user(tmp: Path):
    store = _store_with_run(tmp)
    return store.run_dir("r1") / "per_user.npz", lambda: store.load("r1")


def make_registry(tmp: Path):
    cache = tmp / "cache"
    ds = build_cached("mine", {}, {"f": "1" * 64}, lambda: _tiny_dataset("mine"), cache)
    write_json(registry_path(cache, "mine"), {"name": "mine", "content_hash": ds.content_hash})

    def read():
        got = load_user_dataset("mine", cache)
        return got.item_ids, got.content_hash

    return registry_path(cache, "mine"), read


def tamper_registry(path: Path) -> None:
    data = json.loads(path.read_text())
    data["content_hash"] = "f" * 16
    path.write_text(json.dumps(data))


def _plant(data_fn):
    def plant(tmp: Path, path: Path, marker: Path) -> None:
        path.write_bytes(data_fn(marker))

    return plant


def plant_legacy_stage(tmp: Path, path: Path, marker: Path) -> None:
    path.unlink()
    (path.parent / "weights.pt").write_bytes(torch_payload(marker))
    (path.parent / "result.pt").write_bytes(torch_payload(marker))


def plant_dataset(tmp: Path, path: Path, marker: Path) -> None:
    path.write_bytes(torch_payload(marker))
    (path.parent / "dataset.pkl").write_bytes(pickle_payload(marker))  # the older name: never read


def plant_legacy_features(tmp: Path, path: Path, marker: Path) -> None:
    path.unlink()
    path.with_suffix(".pt").write_bytes(torch_payload(marker))


CASES = {
    "checkpoint": Case(make_checkpoint, tamper_sealed, _plant(torch_payload)),
    "stage": Case(make_stage, tamper_sealed, plant_legacy_stage),
    "dataset cache": Case(make_dataset, tamper_sealed, plant_dataset),
    "checksum memo": Case(make_memo, tamper_memo, _plant(lambda m: json.dumps({"format": pickle_payload(m).hex()})
                                                              .encode())),
    "feature store": Case(make_features, tamper_sealed, plant_legacy_features),
    "string vectors": Case(make_strings, tamper_npz("vectors"), _plant(lambda m: npz_payload(m, keys=np.array(["a"])))),
    "candidates": Case(make_candidates, tamper_npz("candidates"), _plant(lambda m: npz_payload(m, sha256=np.array("0")))),
    "run record": Case(make_record, tamper_record, _plant(pickle_payload)),
    "per-user arrays": Case(make_per_user, tamper_npz("test/Recall@10"),
                            _plant(lambda m: npz_payload(m))),
    "user dataset entry": Case(make_registry, tamper_registry, _plant(pickle_payload)),
}


def read_back(read, path: Path, capsys) -> tuple[str, object]:
    """('refused' | 'rebuilt' | 'silent', value): refused = one BenchError line naming the file;
    rebuilt = one warning line naming it, then whatever the harness rebuilt (or None: not used)."""
    capsys.readouterr()
    try:
        value = read()
    except BenchError as exc:
        assert str(path) in str(exc) or str(path.parent) in str(exc), exc
        assert "\n" not in str(exc)
        return "refused", None
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    if warnings:
        assert len(warnings) == 1 and (str(path) in warnings[0] or str(path.parent) in warnings[0]), err
        return "rebuilt", value
    return "silent", value


def outcome(name: str, how: str, tmp: Path, capsys) -> str:
    case = CASES[name]
    path, read = case.make(tmp)
    intact = read()
    corrupt(path, how, case.tamper)
    kind, value = read_back(read, path, capsys)
    if kind == "silent":
        return "USED SILENTLY" if value != intact else "silent (same result)"
    if kind == "rebuilt" and value is not None and value != intact:
        return "REBUILT WRONG"
    return {"refused": "refused, one line", "rebuilt": "discarded + rebuilt, one warning"}[kind]


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("name", list(CASES))
def test_damaged_file_is_rebuilt_or_refused(name, how, tmp_path, capsys):
    result = outcome(name, how, tmp_path, capsys)
    assert result in ("refused, one line", "discarded + rebuilt, one warning"), result


@pytest.mark.parametrize("name", list(CASES))
def test_planted_payload_executes_nothing(name, tmp_path, capsys):
    case = CASES[name]
    path, read = case.make(tmp_path)
    marker = tmp_path / "PWNED"
    pickle.loads(pickle_payload(marker))  # the payload works when unpickled ...
    assert marker.exists()
    marker.unlink()
    case.payload(tmp_path, path, marker)
    kind, _ = read_back(read, path, capsys)
    assert not marker.exists()  # ... and the harness never unpickles it
    assert kind in ("refused", "rebuilt")


def test_damaged_checkpoint_trains_exactly_like_a_fresh_run(small_split, tmp_path, capsys):
    from bench.engine.evaluator import EvalConfig
    from bench.engine.seeding import seed_everything
    from bench.engine.trainer import TrainerConfig, fit
    from bench.nn.model import ModelContext
    from bench.plugins import get_model_class

    def model():
        seed_everything(0)
        cls = get_model_class("sasrec")
        return cls(cls.Config(), ModelContext(small_split.n_items, 20, small_split.train.item_counts(small_split.n_items)))

    cfg = TrainerConfig(epochs=1, batch_size=64)
    ref = fit(model(), small_split, "train", cfg, EvalConfig(), 0, 20)
    ckpt = tmp_path / "train.ckpt"
    ckpt.write_bytes(torch_payload(tmp_path / "PWNED"))
    got = fit(model(), small_split, "train", cfg, EvalConfig(), 0, 20, ckpt)
    assert "warning:" in capsys.readouterr().err and not (tmp_path / "PWNED").exists()
    assert [h["loss"] for h in got.history] == [h["loss"] for h in ref.history]


def test_stage_saved_before_sealed_files_is_migrated(tmp_path):
    store = ResultStore(tmp_path)
    folder = store.stage_dir("s")
    folder.mkdir(parents=True)
    weights, result = {"w": torch.arange(3.0)}, {"best_epoch": 0, "best_value": 0.1, "history": [{"loss": 2.0}]}
    torch.save(weights, folder / "weights.pt")
    torch.save(result, folder / "result.pt")
    (folder / "resume.ckpt").write_bytes(b"left by a kill")
    got_w, got_r = store.load_stage(folder)
    assert torch.equal(got_w["w"], weights["w"]) and got_r == result
    assert (folder / "stage.safetensors").exists() and not (folder / "weights.pt").exists()
    assert not (folder / "resume.ckpt").exists()


def test_leftover_checkpoints_and_temp_files_are_cleaned(tmp_path):
    from bench.atomic import atomic_write

    store = _store_with_run(tmp_path)
    folder = store.run_dir("r1")
    (folder / "train.ckpt").write_bytes(b"x")
    dead = folder / ".record.json.somehost.999999999.abcd.tmp"  # an unknown host, recent: kept
    dead.write_bytes(b"x")
    mine = folder / f".per_user.npz.{__import__('bench.atomic').atomic._HOST}.999999999.abcd.tmp"
    mine.write_bytes(b"x")  # this host, a pid that does not exist: stale
    store.tidy("r1")
    assert not (folder / "train.ckpt").exists() and not mine.exists() and dead.exists()
    atomic_write(folder / "x.json", lambda f: f.write(b"{}"))
    assert [p.name for p in folder.glob(".*.tmp")] == [dead.name]  # another machine's: left to age


def test_read_only_memo_is_not_rewritten_and_write_failure_is_not_fatal(tmp_path, monkeypatch, capsys):
    path, read = make_memo(tmp_path)
    before = path.stat().st_mtime_ns
    read()
    assert path.stat().st_mtime_ns == before  # nothing changed: not written
    path.unlink()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("bench.data.catalog.write_json", refuse)
    assert len(read()) == 3 and "checksum memo not saved" in capsys.readouterr().err


def test_disk_full_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from bench.atomic import atomic_write
    from bench.errors import StorageError

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="cannot write .*x.bin: disk full"):
        atomic_write(tmp_path / "x.bin", lambda f: f.write(b"abc"))
    assert list(tmp_path.iterdir()) == []  # the temp file is gone too


def test_sealed_round_trip_keeps_types_and_large_trees(tmp_path):
    from bench.engine.seeding import rng_state

    state = {"rng": rng_state(), 3: (1.5, float("-inf"), None), "$odd": [np.arange(4, dtype=np.uint32)],
             "texts": [["segment " * 20] * 3 for _ in range(3000)]}  # > 1 MiB: the tree goes into an entry
    sealed.write(tmp_path / "x", state, "dataset")
    got = sealed.read(tmp_path / "x", "dataset")
    assert got["rng"]["python"] == state["rng"]["python"] and torch.equal(got["rng"]["torch"], state["rng"]["torch"])
    assert np.array_equal(got["rng"]["numpy"][1], state["rng"]["numpy"][1]) and got["rng"]["numpy"][1].dtype == np.uint32
    assert got[3] == (1.5, float("-inf"), None) and got["texts"] == state["texts"]
    assert got["$odd"][0].dtype == np.uint32
    with pytest.raises(DamagedFile, match="not a 'checkpoint'"):
        sealed.read(tmp_path / "x", "checkpoint")


# ---- fuzzing: every reader either loads or raises a BenchError -------------------------------

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
VALID_SEALED = sealed.dumps({"w": torch.arange(8.0), "meta": {"a": [1, 2.5, None], 3: (True, "x")}}, "stage")


@FUZZ
@given(cut=st.integers(0, len(VALID_SEALED)), flips=st.lists(st.tuples(st.integers(0, len(VALID_SEALED) - 1),
                                                                      st.integers(1, 255)), max_size=4))
def test_fuzz_sealed_reader(cut, flips):
    data = bytearray(VALID_SEALED[:cut] if cut < len(VALID_SEALED) else VALID_SEALED)
    for at, x in flips:
        if at < len(data):
            data[at] ^= x
    try:
        got = sealed.loads(bytes(data), "stage")
    except DamagedFile:
        return
    assert bytes(data) == VALID_SEALED and torch.equal(got["w"], torch.arange(8.0))


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_sealed_reader_random_bytes(data):
    with pytest.raises(DamagedFile):
        sealed.loads(data, "stage")


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 st.dictionaries(st.text(max_size=8), st.text(max_size=70), max_size=3)
                 .map(lambda d: json.dumps({"format": "bench-sha256-memo-1", "entries": d, "sha256": "0"}).encode())))
def test_fuzz_memo_reader(tmp_path, data):
    path = tmp_path / "memo.json"
    path.write_bytes(data)
    assert isinstance(read_memo(path), dict)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_string_cache_and_record_readers(tmp_path, data):
    (tmp_path / "s.npz").write_bytes(data)
    assert read_vectors(tmp_path / "s.npz") == {}
    run = tmp_path / "store" / "runs" / "r"
    run.mkdir(parents=True, exist_ok=True)
    (run / "record.json").write_bytes(data)
    (run / "per_user.npz").write_bytes(data)
    assert ResultStore(tmp_path / "store").load("r") is None


INDEX_LINE = st.tuples(st.sampled_from(["A1", "B2", "C3", "é", "x\ty", ""]), st.integers(-2, 5)).map(
    lambda kv: f"{kv[0]}\t{kv[1]}")


@FUZZ
@given(lines=st.lists(INDEX_LINE, min_size=0, max_size=6),
       encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]), junk=st.binary(max_size=3))
def test_fuzz_rechorus_reader(tmp_path, lines, encoding, junk):
    """Duplicated and missing ids, wrong encodings, stray bytes: a Dataset or one BenchError."""
    from bench.data.rechorus import read_rechorus

    folder = tmp_path / "office"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "Office.item2index").write_bytes("\n".join(lines).encode(encoding, "replace") + junk)
    (folder / "Office.text").write_text("item_id\ttext\nA1\tpen\n")
    for i, name in enumerate(["train.csv", "dev.csv", "test.csv"]):
        (folder / name).write_text(f"user_id\titem_id\ttime\n1\t1\t{i}\n1\t2\t{i}\n")
    try:
        ds = read_rechorus(folder, "Office", "office")
    except BenchError as exc:
        assert "\n" not in str(exc)
        return
    except UnicodeDecodeError:
        return  # reported with file and line by load_dataset (tested through the CLI below)
    ids = [line.split("\t")[1] for line in lines]
    assert len(set(ids)) == len(ids) == ds.n_items  # accepted only when every id is given once


SET_KEYS = st.sampled_from(["trainer.epochs", "trainer.lr", "trainer.device", "sasrec.hidden", "sasrec.heads",
                            "sasrec.dropout", "protocol.max_users", "eval.ties", "trainer.pretrain.lr", "nosuch.x",
                            "sasrec", "", "sasrec.preset", "trainer.bf16", "protocol.candidates"])
SET_VALUES = st.one_of(st.sampled_from(["true", "0", "-1", "3", "1e-3", "nan", "[1,", "None", "[text]", "((((",
                                        "1" * 5000, "[" * 200, "cuda:99", "tpu9", "pop100"]),
                       st.text(max_size=12))


@FUZZ
@given(items=st.lists(st.tuples(SET_KEYS, SET_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=4))
def test_fuzz_set_parser(items):
    try:
        spec = build_spec("scientific", "leave_one_out", "sasrec", 0, parse_overrides(items))
    except BenchError as exc:
        assert str(exc)
        return
    assert spec.model_params["hidden"] % spec.model_params["heads"] == 0
    assert all(type(t.epochs) is int for t in spec.trainer.values())


# ---- bad input through the command line: exit 2, one line, nothing run -----------------------


def _office_copy(data_root: Path, tmp: Path, edit) -> Path:
    root = tmp / "data"
    shutil.copytree(data_root / "amazon14_office_rechorus", root / "amazon14_office_rechorus")
    edit(root / "amazon14_office_rechorus")
    return root


def _bad_utf8(folder: Path) -> None:
    path = folder / "Office.text"
    lines = path.read_bytes().split(b"\n")
    lines[40] = lines[40][:10] + b"\xff\xfe" + lines[40][10:]
    path.write_bytes(b"\n".join(lines))


def _duplicate_id(folder: Path) -> None:
    path = folder / "Office.item2index"
    lines = path.read_text().splitlines()
    lines[5] = lines[5].split("\t")[0] + "\t" + lines[4].split("\t")[1]
    path.write_text("\n".join(lines) + "\n")


BAD_INPUTS = {
    "dataset ../../x": (["run", "--dataset", "../../x"], "dataset name '../../x'"),
    "data stats ../x": (["data", "stats", "../x", "--no-coverage"], "dataset name '../x'"),
    "export ../x": (["export", "mp4sr", "--dataset", "../x", "--out", "OUT"], "dataset name '../x'"),
    "export recbole --attributes colour": (["export", "recbole", "--out", "OUT", "--attributes", "colour"],
                                           "--attributes 'colour'"),
    "hidden=0": (["run", "--models", "sasrec", "--set", "sasrec.hidden=0"], "hidden must be at least 1"),
    "heads=3": (["run", "--models", "sasrec", "--set", "sasrec.heads=3"], "heads (3) must divide hidden (64)"),
    "device=tpu9": (["run", "--models", "sasrec", "--set", "trainer.device=tpu9"], "trainer.device"),
    "seed -1": (["run", "--seed", "-1"], "--seed"),
    "seeds 0": (["run", "--seeds", "0"], "--seeds"),
    "determinism seed -1": (["check", "determinism", "--seed", "-1"], "--seed -1"),
    "epochs=true": (["run", "--models", "sasrec", "--set", "trainer.epochs=true"], "trainer.epochs"),
    "batch_size=false": (["run", "--models", "sasrec", "--set", "trainer.batch_size=false"], "trainer.batch_size"),
    "format xlsx": (["run", "--format", "xlsx", "--out", "OUT/t.xlsx"], "--format 'xlsx'"),
    "out missing folder": (["run", "--format", "md", "--out", "OUT/missing/t.md"], "does not exist"),
    "set without =": (["run", "--set", "trainer.lr"], "expected key=value"),
    "cross-domain source ../x": (["run", "--protocol", "cross_domain", "--set", "protocol.source=../x", "--set",
                                  "protocol.target=scientific", "--models", "sasrec"], "dataset name '../x'"),
    "device=cuda:99": (["run", "--models", "sasrec", "--set", "trainer.device=cuda:99"], "cuda"),
    "max_users=true": (["run", "--set", "protocol.max_users=true"], "protocol.max_users"),
    "perf ../x": (["perf", "--dataset", "../x"], "dataset name '../x'"),
    "tune ../x": (["tune", "--model", "sasrec", "--dataset", "../x", "--trials", "1"], "dataset name '../x'"),
    "lr=-1": (["run", "--models", "sasrec", "--set", "trainer.lr=-1"], "trainer.lr"),
    "invalid UTF-8": (["data", "stats", "office", "--no-coverage", "--data-root", "DATA_UTF8"],
                      "Office.text:41: not UTF-8"),
    "duplicate item id": (["data", "stats", "office", "--no-coverage", "--data-root", "DATA_DUP"],
                          "Office.item2index:6: id"),
}


def run_cli(args: list[str], home: Path, monkeypatch, capsys) -> tuple[int, str]:
    from bench.cli.main import main

    monkeypatch.setenv("BENCH_HOME", str(home))
    monkeypatch.setattr(sys, "argv", ["bench", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_nothing_run(name, data_root, tmp_path, monkeypatch, capsys):
    args, expected = BAD_INPUTS[name]
    out = tmp_path / "out"
    out.mkdir()
    roots = {"DATA_UTF8": lambda: _office_copy(data_root, tmp_path, _bad_utf8),
             "DATA_DUP": lambda: _office_copy(data_root, tmp_path, _duplicate_id)}
    args = [str(roots[a]()) if a in roots else a.replace("OUT", str(out)) for a in args]
    monkeypatch.setenv("BENCH_DATA_ROOT", str(data_root))
    code, err = run_cli(args, tmp_path / "home", monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "home" / "store").exists() and list(out.iterdir()) == []
    assert not list((tmp_path / "home").glob("cache/datasets/*/dataset.safetensors"))


@pytest.mark.parametrize("raised, code, line", [
    (EOFError("Ran out of input"), 2, "unexpected end of input or file"),  # click would turn it into Abort
    (OSError(28, "No space left on device", "/x/home/cache"), 2, "No space left on device: /x/home/cache"),
    (PermissionError(13, "Permission denied", "/x/home/store/.lock"), 2, "Permission denied"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_environment_failures_end_in_one_line(raised, code, line, tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr("bench.data.catalog.load_dataset", fail)
    got, err = run_cli(["data", "stats", "office", "--no-coverage"], tmp_path, monkeypatch, capsys)
    lines = [x for x in err.splitlines() if x.strip()]
    assert got == code and len(lines) == 1 and line in lines[0], err


def test_a_commands_exit_code_is_passed_on(tmp_path, monkeypatch, capsys):
    import typer

    def not_deterministic(*args, **kwargs):
        raise typer.Exit(1)

    monkeypatch.setattr("bench.engine.determinism.check_determinism", not_deterministic)
    code, _ = run_cli(["check", "determinism", "--set", "protocol.max_users=10"], tmp_path, monkeypatch, capsys)
    assert code == 1  # before: typer.Exit in standalone_mode=False came back as exit 0


def main() -> None:  # pragma: no cover - prints the table for the issue
    import contextlib
    import tempfile

    class Capture:
        def readouterr(self):
            out = sys.stderr.getvalue()
            sys.stderr.truncate(0)
            sys.stderr.seek(0)
            return type("R", (), {"err": out, "out": ""})()

    print("| stored file | " + " | ".join(CORRUPTIONS) + " |")
    print("|---|" + "---|" * len(CORRUPTIONS))
    for name in CASES:
        row = []
        for how in CORRUPTIONS:
            with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
                try:
                    row.append(outcome(name, how, Path(tmp), Capture()))
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    row.append(f"EXCEPTION {type(exc).__name__}")
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
