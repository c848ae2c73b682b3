"""Feature store: per (dataset, encoder, tagger, N, slot counts, image kind) one ItemFeatures,
cached under a content hash so the second load reads one file and loads no model.

Text slots hold the item's text segments; image slots hold, per image, either the encoded
keyword string of a tagger ("keywords") or the raw CLIP image vector fitted to width d
("raw_clip"). A cached store is checked against what the caller expects and refused on mismatch.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from bench.atomic import atomic_write
from bench.data.catalog import load_dataset
from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.features.item_features import ItemFeatures
from bench.features.raw_image import raw_image_vectors
from bench.features.string_cache import encode_with_cache
from bench.features.taggers import MAX_IMAGES, make_tagger
from bench.features.text_encoder import DEFAULT_ENCODER, TextEncoder
from bench.hashing import hash_obj

FEATURES_VERSION = "1"  # bump when the stored tensors change for the same inputs
MAX_TEXT_SLOTS = 10
KEYWORD_JOIN = ", "  # "n1, n2, ..." keeps multi-word names apart for the sentence encoder
IMAGE_KINDS = ("keywords", "raw_clip", "none")
CHECKED_KEYS = (
    "dataset",
    "dataset_hash",
    "encoder",
    "encoder_fingerprint",
    "image_kind",
    "tagger",
    "n_keywords",
    "text_slots",
    "image_slots",
)


def dataset_identity(ds: Dataset) -> str:
    return ds.content_hash or hash_obj({"text": ds.item_text, "images": ds.item_images, "items": ds.item_ids})


def pack_slots(vectors: list[list[np.ndarray]], slots: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item lists of vectors -> [n_items + 1, slots, d] and its mask (row 0 = padding item)."""
    x = torch.zeros(len(vectors) + 1, slots, d)
    mask = torch.zeros(len(vectors) + 1, slots, dtype=torch.bool)
    for i, vs in enumerate(vectors, 1):
        for j, v in enumerate(vs[:slots]):
            x[i, j] = torch.from_numpy(np.asarray(v, dtype=np.float32))
            mask[i, j] = True
    return x, mask


def encode_per_item(
    encoder: TextEncoder, strings: list[list[str]], cache: Path, meta: dict, progress: bool, description: str
) -> tuple[list[list[np.ndarray]], int]:
    flat = [s for item in strings for s in item]
    vectors, fresh = encode_with_cache(
        encoder, flat, cache, meta["encoder_fingerprint"], progress, description
    )
    out, k = [], 0
    for item in strings:
        out.append([vectors[k + j] for j in range(len(item))])
        k += len(item)
    return out, fresh


def store_path(cache: Path, ds_name: str, key: str) -> Path:
    return cache / "features" / f"{ds_name}-{key}.pt"


def save_store(path: Path, feats: ItemFeatures) -> None:
    payload = {
        "text": feats.text,
        "text_mask": feats.text_mask,
        "image": feats.image,
        "image_mask": feats.image_mask,
        "meta": feats.meta,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def check_features(feats: ItemFeatures, expect: dict, what: str = "features") -> None:
    """Refuse features whose recorded settings differ from what the caller expects, e.g. a model
    checkpoint trained on one encoder's vectors handed another encoder's (pass the checkpoint's
    recorded `feats.meta` subset as `expect`)."""
    for key, want in expect.items():
        have = feats.meta.get(key)
        if have != want:
            raise BenchError(
                f"{what}: built with {key}={have!r} but {key}={want!r} is expected; "
                f"rebuild the features with the expected settings"
            )


def load_feature_file(path: Path, expect: dict | None = None) -> ItemFeatures:
    """Read a store; with `expect`, refuse one built with another encoder, tagger or slot layout."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise BenchError(
            f"cannot read feature store {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    feats = ItemFeatures(
        payload["text"], payload["text_mask"], payload["image"], payload["image_mask"], payload["meta"]
    )
    check_features(feats, expect or {}, f"feature store {path}")
    return feats


def load_item_features(
    dataset: str | Dataset,
    data_root: str | Path,
    cache_dir: str | Path,
    encoder: str | Path = DEFAULT_ENCODER,
    tagger: str | None = "clip_features",
    n_keywords: int = 15,
    text_slots: int | None = None,
    image_slots: int | None = None,
    image_kind: str = "keywords",
    tagger_options: dict | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> ItemFeatures:
    """The dataset's ItemFeatures, built once and cached. Slot counts default to the most
    segments / images any item has (at most 10 each, at least 1)."""
    data_root, cache = Path(data_root), Path(cache_dir)
    ds = load_dataset(dataset, data_root, cache) if isinstance(dataset, str) else dataset
    if image_kind not in IMAGE_KINDS:
        raise BenchError(f"image_kind {image_kind!r}: expected one of {', '.join(IMAGE_KINDS)}")
    if image_kind != "keywords":
        tagger, tagger_options = None, None
    elif not tagger:
        raise BenchError("image_kind 'keywords' needs a tagger (clip_features, efficientnet, clip, keywords)")
    if n_keywords < 1:
        raise BenchError(f"n_keywords must be >= 1, got {n_keywords}")
    texts = [t[:MAX_TEXT_SLOTS] for t in (ds.item_text or [[] for _ in range(ds.n_items)])]
    text_slots = text_slots or max(1, min(MAX_TEXT_SLOTS, max(map(len, texts), default=1)))
    refs = ds.item_images or [[] for _ in range(ds.n_items)]
    image_slots = image_slots or max(1, min(MAX_IMAGES, max(map(len, refs), default=1)))
    enc = TextEncoder(encoder, batch_size=batch_size)
    tag = make_tagger(tagger, **(tagger_options or {})) if tagger else None
    expect = {
        "dataset": ds.name,
        "dataset_hash": dataset_identity(ds),
        "encoder": enc.name,
        "encoder_fingerprint": enc.fingerprint(cache),
        "image_kind": image_kind,
        "tagger": tagger,
        "tagger_fingerprint": tag.fingerprint(ds, data_root, cache) if tag else None,
        "tagger_options": {k: str(v) for k, v in (tagger_options or {}).items()},
        "n_keywords": n_keywords if tag else None,
        "text_slots": text_slots,
        "image_slots": image_slots,
        "keyword_join": KEYWORD_JOIN,
        "version": FEATURES_VERSION,
    }
    key = hash_obj(expect)
    path = store_path(cache, ds.name, key)
    if path.is_file():
        return load_feature_file(path, {k: expect[k] for k in CHECKED_KEYS})
    meta = dict(expect, key=key, dim=enc.dim)
    start = time.perf_counter()
    vectors, meta["text_strings_encoded_now"] = encode_per_item(
        enc, texts, cache, meta, progress, f"{ds.name}: text segments"
    )
    text, text_mask = pack_slots(vectors, text_slots, enc.dim)
    meta["seconds_text"] = round(time.perf_counter() - start, 3)
    meta["text_strings"] = sum(map(len, texts))
    start = time.perf_counter()
    if image_kind == "keywords":
        keywords, counts = tag.tag(ds, data_root, n_keywords)
        meta["seconds_tagging"] = round(time.perf_counter() - start, 3)
        meta["tagging"] = counts
        strings = [[KEYWORD_JOIN.join(kws) for kws in item] for item in keywords]
        vectors, meta["keyword_strings_encoded_now"] = encode_per_item(
            enc, strings, cache, meta, progress, f"{ds.name}: image keywords"
        )
    elif image_kind == "raw_clip":
        vectors, meta["raw_projection"] = raw_image_vectors(ds, data_root, enc.dim)
    else:
        vectors = [[] for _ in range(ds.n_items)]
    image, image_mask = pack_slots(vectors, image_slots, enc.dim)
    meta["seconds_image"] = round(time.perf_counter() - start, 3)
    meta["seconds_total"] = round(meta["seconds_text"] + meta["seconds_image"], 3)
    meta["items_per_second"] = round(ds.n_items / max(meta["seconds_total"], 1e-9), 1)
    meta["items_with_text"] = int(text_mask[1:].any(1).sum())
    meta["items_with_image"] = int(image_mask[1:].any(1).sum())
    feats = ItemFeatures(text, text_mask, image, image_mask, meta)
    save_store(path, feats)
    return feats
