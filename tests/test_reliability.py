"""Killed runs resume to the same result; two processes share one store safely."""

import json
import os
import signal
import subprocess
import sys
import time

from bench import sealed

ARGS = ["run", "--models", "sasrec", "--set", "protocol.max_users=300", "--set", "trainer.epochs=8",
        "--set", "trainer.patience=8", "--set", "trainer.batch_size=32"]


def spawn(home, data_root, *extra):
    env = {**os.environ, "BENCH_DATA_ROOT": str(data_root), "BENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", *ARGS, *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def records(home):
    return [json.loads(p.read_text()) for p in (home / "store" / "runs").glob("*/record.json")]


def wait_for_checkpoint_epoch(home, epoch, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for ckpt in (home / "store" / "runs").glob("*/train.ckpt"):
            try:
                if sealed.read(ckpt, "checkpoint")["epoch"] >= epoch:
                    return
            except Exception:  # noqa: BLE001 - being replaced right now; look again
                pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def test_kill_9_then_resume_matches_uninterrupted(tmp_path, data_root):
    reference = spawn(tmp_path / "ref", data_root)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()

    victim = spawn(tmp_path / "killed", data_root)
    wait_for_checkpoint_epoch(tmp_path / "killed", 2, victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert records(tmp_path / "killed") == []  # nothing recorded as complete

    resumed = spawn(tmp_path / "killed", data_root)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resumed train from epoch" in err
    (a,), (b,) = records(tmp_path / "ref"), records(tmp_path / "killed")
    assert a["run_hash"] == b["run_hash"] and a["best_epoch"] == b["best_epoch"]
    assert a["metrics"] == b["metrics"]  # bit for bit: the checkpoint restores every state exactly


def test_two_processes_never_run_the_same_cell_twice(tmp_path, data_root):
    first = spawn(tmp_path, data_root)
    time.sleep(1.0)
    second = spawn(tmp_path, data_root)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    trained = [err for _, err in outs if "train epoch 0" in err]
    assert len(trained) == 1  # exactly one process trained; the other waited for its record
    assert len(records(tmp_path)) == 1
    assert all("SASRec (CE)" in out for out, _ in outs)  # both printed the table


def test_determinism_check_reports_identical_hashes(data_root, tmp_path):
    env = {**os.environ, "BENCH_DATA_ROOT": str(data_root), "BENCH_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench", "check", "determinism", "--set", "protocol.max_users=200",
                           "--set", "trainer.epochs=2"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.split("metric hashes:")[1].split()[:2]
    assert first == second and "deterministic" in proc.stdout


def test_git_revision_is_the_senders_when_given(monkeypatch):
    """A tree copied to another machine may hold no .git or a stale one; BENCH_GIT_REVISION names it."""
    from bench.engine.provenance import git_revision

    monkeypatch.delenv("BENCH_GIT_REVISION", raising=False)
    local = git_revision()
    assert local != "abc123"
    monkeypatch.setenv("BENCH_GIT_REVISION", "abc123")
    assert git_revision() == "abc123"


def test_git_revision_is_read_when_the_process_starts(monkeypatch):
    """Editing or committing the tree during a long suite must not rename the code of its records."""
    import subprocess

    from bench.engine import provenance

    monkeypatch.delenv("BENCH_GIT_REVISION", raising=False)
    before = provenance.git_revision()

    def no_git(*a, **k):
        raise AssertionError("git read after import")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert provenance.git_revision() == before != "unknown"

