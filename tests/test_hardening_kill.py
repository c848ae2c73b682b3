"""A multi-stage model (S3-Rec: pre-training, then fine-tuning) killed with SIGKILL once in each
stage resumes to exactly the result of an uninterrupted run: every metric, every per-user value
and every epoch's loss, bit for bit (checkpoints restore weights, optimizer moments and all RNG
states exactly)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from bench import sealed

ARGS = ["run", "--models", "s3rec", "--set", "s3rec.attributes=popularity", "--set", "protocol.max_users=150",
        "--set", "trainer.epochs=2", "--set", "trainer.patience=2", "--set", "trainer.pretrain.epochs=2",
        "--set", "trainer.pretrain.patience=2", "--set", "trainer.batch_size=32"]


def spawn(home, data_root):
    env = {**os.environ, "BENCH_DATA_ROOT": str(data_root), "BENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", *ARGS], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_at(home, pattern, epoch, proc, timeout=300):
    """SIGKILL `proc` once a checkpoint matching `pattern` holds `epoch` (or later)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for ckpt in home.glob(pattern):
            try:
                if sealed.read(ckpt, "checkpoint")["epoch"] >= epoch:
                    os.kill(proc.pid, signal.SIGKILL)
                    return proc.communicate()[1]
            except Exception:  # noqa: BLE001 - being replaced right now; look again
                pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint {pattern} at epoch {epoch}")


def result(home):
    (run,) = (home / "store" / "runs").iterdir()
    record = json.loads((run / "record.json").read_text())
    with np.load(run / "per_user.npz") as z:
        arrays = {k: z[k] for k in z.files}
    losses = {stage: [(h["loss"], {k: v for k, v in h.items() if "@" in k}) for h in hist]
              for stage, hist in record["history"].items()}
    return record, arrays, losses


def test_multi_stage_kill_in_each_stage_resumes_bit_for_bit(tmp_path, data_root):
    reference = spawn(tmp_path / "ref", data_root)
    assert reference.wait(timeout=900) == 0, reference.communicate()

    home = tmp_path / "killed"
    kill_at(home, "store/stages/*/resume.ckpt", 0, spawn(home, data_root))
    assert not list((home / "store" / "stages").glob("*/stage.safetensors"))  # pre-training unfinished
    err = kill_at(home, "store/runs/*/finetune.ckpt", 0, spawn(home, data_root))
    assert "resumed pretrain from epoch" in err
    assert not list((home / "store" / "runs").glob("*/record.json"))
    last = spawn(home, data_root)
    _, err = last.communicate(timeout=900)
    assert last.returncode == 0, err
    assert "resumed finetune from epoch" in err and "reusing stored stage" in err

    (a, arrays_a, losses_a), (b, arrays_b, losses_b) = result(tmp_path / "ref"), result(home)
    assert a["run_hash"] == b["run_hash"] and a["best_epoch"] == b["best_epoch"]
    assert a["metrics"] == b["metrics"]  # exact, not within a tolerance
    assert losses_a == losses_b
    assert arrays_a.keys() == arrays_b.keys()
    assert all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a)
    assert not list(home.glob("store/**/*.ckpt")) and not list(home.glob("store/**/.*.tmp"))
