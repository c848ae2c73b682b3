"""Keyword vocabularies with CLIP text embeddings, for scoring CLIP image embeddings.

The default is Detic's precomputed CLIP ViT-B/32 embeddings ("a {name}") of the LVIS (1,203)
and Objects365 (365) category names: the vocabulary D of MSM4SR's image tokenisation, offline.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import BenchError

DETIC = "clip_vitb32_vocab_detic"
DETIC_FILES = (
    f"{DETIC}/lvis_v1_train_cat_info.json",
    f"{DETIC}/lvis_v1_clip_a+cname.npy",
    f"{DETIC}/Objects365_names_fix.csv",
    f"{DETIC}/o365_clip_a+cnamefix.npy",
)


@dataclass
class Vocabulary:
    names: list[str]
    embeddings: np.ndarray  # [len(names), d] float32, unit norm

    def top_keywords(self, vectors: np.ndarray, n: int) -> list[list[str]]:
        """Per vector, the n names of highest cosine similarity; a name that is in both source
        vocabularies (e.g. 'chair') counts once."""
        v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        scores = v.astype(np.float32) @ self.embeddings.T
        order = np.argsort(-scores, axis=1, kind="stable")
        out = []
        for row in order:
            picked: list[str] = []
            for j in row:
                if self.names[j] not in picked:
                    picked.append(self.names[j])
                    if len(picked) == n:
                        break
            out.append(picked)
        return out


def readable(name: str) -> str:
    """LVIS "aerosol_can" / O365 "Chair" -> "aerosol can" / "chair" (one spelling, so duplicates merge)."""
    return " ".join(name.replace("_", " ").lower().split())


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def load_npy(path: Path, rows: int) -> np.ndarray:
    if not path.is_file():
        raise BenchError(f"missing vocabulary file: {path}")
    x = np.load(path)
    if x.ndim != 2 or x.shape[0] != rows:
        raise BenchError(f"{path}: expected {rows} rows of embeddings, got shape {x.shape}")
    return x


def load_detic_vocabulary(data_root: Path) -> Vocabulary:
    folder = data_root / DETIC
    info_path = folder / "lvis_v1_train_cat_info.json"
    if not info_path.is_file():
        raise BenchError(f"missing vocabulary file: {info_path}")
    lvis = sorted(json.loads(info_path.read_text()), key=lambda c: c["id"])  # row i = category id i+1
    if [c["id"] for c in lvis] != list(range(1, len(lvis) + 1)):
        raise BenchError(f"{info_path}: category ids are not 1..{len(lvis)}")
    csv_path = folder / "Objects365_names_fix.csv"
    if not csv_path.is_file():
        raise BenchError(f"missing vocabulary file: {csv_path}")
    with open(csv_path, encoding="utf-8", newline="") as f:
        o365 = [row[2] for row in csv.reader(f) if row]  # id, name, fixed name
    names = [readable(c["name"]) for c in lvis] + [readable(n) for n in o365]
    emb = np.concatenate(
        [
            load_npy(folder / "lvis_v1_clip_a+cname.npy", len(lvis)),
            load_npy(folder / "o365_clip_a+cnamefix.npy", len(o365)),
        ]
    )
    return Vocabulary(names, unit_rows(emb))
