"""MSM4SR training speed and text-encoding speed: a previous revision beside the working tree,
in one run, one thread each, same seed, one process at a time (before/after interleaved).

    git worktree add --detach /tmp/speed-base <revision>       # the "before" source tree
    python benchmarks/msm4sr_speed.py train --base /tmp/speed-base --dataset scientific \
        --pretrain-epochs 2 --finetune-epochs 2 --repeats 2 --out results/speed/msm4sr_cpu.json
    python benchmarks/msm4sr_speed.py encode --dataset scientific --sample 5000 --repeats 2 \
        --out results/speed/text_encode_cpu.json       # --base adds that tree's encoder as a variant
    python benchmarks/msm4sr_speed.py encode --dataset scientific \
        --variants original:1,original:2,after:1,after:2,after_bf16:2   # VARIANT:CORES, whole dataset

Each measurement runs in its own process with PYTHONPATH set to the source tree measured, so
both revisions import their own `bench`/`msm4sr`. Times are reported as wall seconds and as
process CPU seconds: on a shared machine the CPU seconds of a one-thread process move much less
with other load than the wall seconds do. `train` needs the dataset's item features in the
cache of BENCH_HOME (or --home): each run gets a scratch home whose cache/ links to it, so no
pre-trained stage is shared between runs. `encode` encodes the dataset's distinct text
segments with a cold string cache (no vectors written anywhere): the pre-issue-23 function kept
below, this tree's float32 and bfloat16 encoders (and --base's), vectors checked against the first.
With --variants each runs on the cores given: torch threads for "original" (its only way to use a
second core), worker processes of one thread for this tree's encoder; CPU seconds then include
the workers'.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class _Clock:
    """Stands in for the `time` module inside bench.engine.trainer: fit() still sees wall time, and the
    process CPU time at each of its clock reads is recorded beside it (two reads per epoch)."""

    def __init__(self):
        self.marks: list[tuple[float, float]] = []

    def perf_counter(self) -> float:
        wall = time.perf_counter()
        self.marks.append((wall, time.process_time()))
        return wall


def _train_worker(a: dict) -> dict:
    import torch

    torch.set_num_threads(a["threads"])
    import bench.engine.trainer
    from bench.engine.evaluator import evaluate
    from bench.engine.runner import RunEnv, train_stages
    from bench.engine.spec import build_spec

    clock = _Clock()
    bench.engine.trainer.time = clock
    if a.get("reference"):  # this tree without msm4sr.fast: padded per-modality encoder, torch's dropout
        import torch.nn.functional as F

        from msm4sr import fast

        fast.supported = lambda *args: False
        fast.dropout = lambda x, p, training=True: F.dropout(x, p, training)
    overrides = {
        "trainer.pretrain.epochs": a["pretrain_epochs"], "trainer.pretrain.patience": a["pretrain_epochs"] + 1,
        "trainer.finetune.epochs": a["finetune_epochs"], "trainer.finetune.patience": a["finetune_epochs"] + 1,
        "trainer.pretrain.bucket_by_length": a["bucket"], "trainer.device": "cpu", **a["set"],
    }
    if a["max_users"]:
        overrides["protocol.max_users"] = a["max_users"]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "cache").symlink_to(Path(a["cache"]).resolve())
        env = RunEnv(Path(a["data_root"]), home)
        spec = build_spec(a["dataset"], "leave_one_out", "msm4sr", a["seed"], overrides)
        cpu0 = time.process_time()
        trained = train_stages(spec, env)
        split = env.split(spec)
        max_len = spec.protocol_params["max_len"]
        test = evaluate(trained.model, split.unlock_test(), max_len, spec.evaluation, trained.device)
        total_cpu = time.process_time() - cpu0
    cpu = [e[1] - s[1] for s, e in zip(clock.marks[::2], clock.marks[1::2])]
    out = {"threads": torch.get_num_threads(), "total_cpu_s": total_cpu, "stages": {}}
    k = 0
    for stage, fit in trained.fits.items():
        n = len(fit.history)
        out["stages"][stage] = {
            "wall_s": fit.train_seconds,
            "cpu_s": cpu[k : k + n] if len(cpu) == len(clock.marks) // 2 else None,
            "loss": [h["loss"] for h in fit.history],
            "valid": [h[spec.trainer[stage].valid_metric] for h in fit.history],
        }
        k += n
    out["test"] = {m: test.means[m] for m in ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20", "MRR@20")}
    return out


def _original_encode(enc, texts: list[str]):
    """TextEncoder.encode as of d7b3e70 (before issue 23): strings sorted by characters, 64 a
    batch, each batch padded to its longest. Kept here so "before" needs no old checkout."""
    import numpy as np
    import torch

    unique = sorted(set(texts), key=len)
    out = np.zeros((len(unique), enc.dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(unique), 64):
            batch = unique[start : start + 64]
            tokens = enc._tokenizer(batch, padding=True, truncation=True, max_length=enc.max_length, return_tensors="pt")
            hidden = enc._model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[start : start + len(batch)] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    row = {text: i for i, text in enumerate(unique)}
    return out[[row[t] for t in texts]]


def _encode_worker(a: dict) -> dict:
    import random

    import numpy as np
    import torch

    torch.set_num_threads(a["threads"])
    from bench.data.catalog import load_dataset
    from bench.features.store import MAX_TEXT_SLOTS
    from bench.features.text_encoder import TextEncoder

    ds = load_dataset(a["dataset"], Path(a["data_root"]), Path(a["cache"]))
    texts = sorted({s for item in ds.item_text for s in item[:MAX_TEXT_SLOTS]})
    total = len(texts)
    if a["limit"]:
        texts = texts[: a["limit"]]
    if a.get("sample"):  # a seeded random subset: every length band in proportion
        texts = sorted(random.Random(a.get("sample_seed", 0)).sample(texts, min(a["sample"], len(texts))))
    variant = a.get("variant", "tree")
    enc = TextEncoder(precision="bfloat16") if variant == "tree_bf16" else TextEncoder()
    enc.load()  # model loading is not encoding
    n_tokens = sum(len(x) for x in enc._tokenizer(texts, truncation=True, max_length=enc.max_length)["input_ids"])
    import resource

    def children_cpu() -> float:  # worker processes, counted once they have exited
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    wall, cpu, kids = time.perf_counter(), time.process_time(), children_cpu()
    if variant == "original":
        vectors = _original_encode(enc, texts)
    else:
        vectors = enc.encode(texts, progress=True, description=f"{a['dataset']}: text segments")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu + children_cpu() - kids
    np.save(a["vectors"], vectors)
    return {"strings": len(texts), "all_strings": total, "tokens": n_tokens, "wall_s": wall, "cpu_s": cpu,
            "threads": torch.get_num_threads(),
            # processes this tree's encoder chose (its rule, on the unpadded token count)
            "workers": 1 if variant == "original" or not hasattr(enc, "_pool_size") else enc._pool_size(n_tokens)}


def _run_worker(tree: Path, kind: str, args: dict, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), f"_{kind}", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    if proc.returncode != 0:
        sys.exit(f"{kind} worker failed in {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _revision(tree: Path) -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=tree).stdout
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=tree).stdout
    return rev.strip() + ("+working-tree" if dirty.strip() else "")


def _common(a, name: str) -> dict:
    home = Path(a.home or os.environ.get("BENCH_HOME", ".bench")).resolve()
    if name == "before" and a.base_home:  # e.g. when the cache layout changed between the revisions
        home = Path(a.base_home).resolve()
    return {"dataset": a.dataset, "data_root": str(Path(a.data_root).resolve()), "cache": str(home / "cache")}


def cmd_train(a) -> dict:
    trees = {"before": Path(a.base).resolve(), "after": REPO}
    if a.reference_only:  # the working tree with and without msm4sr.fast: that change alone
        trees = {"before": REPO, "after": REPO}
    args = {"pretrain_epochs": a.pretrain_epochs, "finetune_epochs": a.finetune_epochs,
            "seed": a.seed, "max_users": a.max_users, "threads": a.threads,
            "set": dict(kv.split("=", 1) for kv in a.set)}
    runs: dict = {}
    for bucket in a.bucket:
        for r in range(a.repeats):
            for name, tree in trees.items():  # interleaved: before, after, before, after
                reference = a.reference_only and name == "before"
                res = _run_worker(tree, "train", {**args, **_common(a, "after" if a.reference_only else name),
                                                  "bucket": bucket == "bucketed", "reference": reference}, a.threads)
                runs.setdefault(bucket, {}).setdefault(name, []).append(res)
                print(f"[{bucket} #{r} {name}] " + "  ".join(
                    f"{s}: {statistics.median(v['wall_s']):.2f}s wall/epoch" for s, v in res["stages"].items()),
                    file=sys.stderr, flush=True)
    table = []
    for bucket, by_tree in runs.items():
        for stage in ("pretrain", "finetune"):
            row = {"batches": bucket, "stage": stage}
            for name, results in by_tree.items():
                # epoch 0 included: every epoch does the same work; median over all epochs of all repeats
                row[f"{name}_wall_s"] = statistics.median(w for r in results for w in r["stages"][stage]["wall_s"])
                cpus = [c for r in results for c in (r["stages"][stage]["cpu_s"] or [])]
                row[f"{name}_cpu_s"] = statistics.median(cpus) if cpus else None
            row["speedup_wall"] = row["before_wall_s"] / row["after_wall_s"]
            row["speedup_cpu"] = (row["before_cpu_s"] / row["after_cpu_s"]) if row["after_cpu_s"] else None
            b, f = by_tree["before"][0], by_tree["after"][0]
            row["max_abs_diff_loss"] = max(abs(x - y) for x, y in zip(b["stages"][stage]["loss"], f["stages"][stage]["loss"]))
            row["max_abs_diff_valid"] = max(abs(x - y) for x, y in zip(b["stages"][stage]["valid"], f["stages"][stage]["valid"]))
            table.append(row)
        b, f = by_tree["before"][0]["test"], by_tree["after"][0]["test"]
        table.append({"batches": bucket, "stage": "test metrics", "before": b, "after": f,
                      "max_abs_diff": max(abs(b[m] - f[m]) for m in b)})
    return {"table": table, "runs": runs}


def cmd_encode(a) -> dict:
    """Variants, interleaved per repeat, each in its own process: "original" (the pre-issue-23
    function kept above, run on this tree's model), "base" (the --base tree's TextEncoder, if
    given), "after" (this tree's default float32 encoder), "after_bf16" (this tree, precision
    bfloat16; opt-in, vectors change). Differences are against "original"'s vectors."""
    import numpy as np

    variants = {"original": (REPO, "original", a.threads)}
    if a.base:
        variants["base"] = (Path(a.base).resolve(), "tree", a.threads)
    variants["after"] = (REPO, "tree", a.threads)
    if not a.no_bf16:
        variants["after_bf16"] = (REPO, "tree_bf16", a.threads)
    if a.variants:  # VARIANT:CORES,...: the first is the reference of the differences and speed-ups
        kinds = {"original": (REPO, "original"), "after": (REPO, "tree"), "after_bf16": (REPO, "tree_bf16")}
        if a.base:
            kinds["base"] = (Path(a.base).resolve(), "tree")
        variants = {}
        for item in a.variants.split(","):
            kind, _, cores = item.partition(":")
            if kind not in kinds:
                sys.exit(f"--variants: unknown variant {kind!r} (expected {', '.join(kinds)})")
            variants[item] = (*kinds[kind], int(cores or a.threads))
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        vectors = {}
        for r in range(a.repeats):
            for name, (tree, variant, cores) in variants.items():
                path = str(Path(tmp) / f"{name}.npy")
                args = {**_common(a, "before" if name.startswith("base") else "after"), "threads": cores,
                        "limit": a.limit, "sample": a.sample, "sample_seed": a.sample_seed, "vectors": path,
                        "variant": variant}
                res = _run_worker(tree, "encode", args, cores)
                runs.setdefault(name, []).append(res)
                vectors[name] = np.load(path)
                print(f"[#{r} {name}] {res['wall_s']:.1f}s wall {res['cpu_s']:.1f}s cpu", file=sys.stderr, flush=True)
    table = []
    reference = next(iter(runs))
    first = runs[reference][0]
    for name, results in runs.items():
        row = {"variant": name, "strings": first["strings"], "threads": results[0]["threads"],
               "workers": results[0]["workers"],
               "wall_s": statistics.median(r["wall_s"] for r in results),
               "cpu_s": statistics.median(r["cpu_s"] for r in results)}
        row["strings_per_cpu_s"] = row["strings"] / row["cpu_s"]
        row["strings_per_wall_s"] = row["strings"] / row["wall_s"]
        row["speedup_cpu_vs_original"] = table[0]["cpu_s"] / row["cpu_s"] if table else 1.0
        row["speedup_wall_vs_original"] = table[0]["wall_s"] / row["wall_s"] if table else 1.0
        row["max_abs_diff_vs_original"] = float(np.abs(vectors[name] - vectors[reference]).max())
        if first["strings"] < first["all_strings"]:  # a subset: scaled by its share of the tokens, and said so
            share = first["tokens"] / _all_tokens(a)
            row["extrapolated_all_strings_cpu_s"] = row["cpu_s"] / share
            row["extrapolated_from_token_share"] = share
        table.append(row)
    return {"table": table, "runs": runs}


def _all_tokens(a) -> int:
    res = _run_worker(REPO, "tokens", _common(a, "after"), a.threads)
    return res["tokens"]


def _tokens_worker(a: dict) -> dict:
    from bench.data.catalog import load_dataset
    from bench.features.store import MAX_TEXT_SLOTS
    from bench.features.text_encoder import TextEncoder

    ds = load_dataset(a["dataset"], Path(a["data_root"]), Path(a["cache"]))
    texts = sorted({s for item in ds.item_text for s in item[:MAX_TEXT_SLOTS]})
    enc = TextEncoder()
    enc.load()
    return {"tokens": sum(len(x) for x in enc._tokenizer(texts, truncation=True, max_length=enc.max_length)["input_ids"])}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("_train", "_encode", "_tokens"):  # worker process
        worker = {"_train": _train_worker, "_encode": _encode_worker, "_tokens": _tokens_worker}[sys.argv[1]]
        print(json.dumps(worker(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "encode"):
        p = sub.add_parser(name)
        p.add_argument("--base", required=name == "train", help="source tree of the 'before' revision (a git worktree)")
        p.add_argument("--dataset", default="scientific")
        p.add_argument("--data-root", default=os.environ.get("BENCH_DATA_ROOT", str(REPO.parent / "shared" / "data")))
        p.add_argument("--home", default=None, help="its cache/ holds the parsed dataset (and features); default $BENCH_HOME")
        p.add_argument("--base-home", default=None, help="the 'before' revision's home, if it needs its own cache")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--repeats", type=int, default=1)
        p.add_argument("--out", default=None, help="also write the JSON here")
    t = sub.choices["train"]
    t.add_argument("--pretrain-epochs", type=int, default=2)
    t.add_argument("--finetune-epochs", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-users", type=int, default=0, help="0 = every user")
    t.add_argument("--bucket", nargs="+", default=["bucketed", "random"], choices=["bucketed", "random"],
                   help="pre-training batches: length-bucketed, random, or both")
    t.add_argument("--reference-only", action="store_true",
                   help="'before' = this tree with msm4sr.fast switched off (isolates that change)")
    t.add_argument("--set", nargs="*", default=[], help="extra overrides KEY=VALUE, as bench run --set")
    e = sub.choices["encode"]
    e.add_argument("--limit", type=int, default=0, help="encode only the first N strings")
    e.add_argument("--sample", type=int, default=0, help="encode a seeded random N of the strings (0 = all)")
    e.add_argument("--sample-seed", type=int, default=0)
    e.add_argument("--no-bf16", action="store_true", help="leave out the bfloat16 variant")
    e.add_argument("--variants", default="", help="VARIANT:CORES,... of original, base, after, after_bf16 "
                   "(e.g. original:1,original:2,after:2); the first is the reference")
    a = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = (cmd_train if a.cmd == "train" else cmd_encode)(a)
    import platform

    if getattr(a, "reference_only", False):
        before = "working tree without msm4sr.fast"
    else:
        before = _revision(Path(a.base)) if a.base else "d7b3e70's TextEncoder.encode, kept in this script"
    result["meta"] = {"started": started, "command": sys.argv[1:], "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "before": before, "after": _revision(REPO),
                      "note": "wall times on a shared machine are under load; CPU seconds are less affected"}
    text = json.dumps(result, indent=1)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(json.dumps(result["table"], indent=1))


if __name__ == "__main__":
    main()
