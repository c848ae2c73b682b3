"""Feature store: per (dataset, encoder, tagger, N, slot counts, image kind) one ItemFeatures,
cached under a content hash so the second load reads one file and loads no model.

Text slots hold the item's text segments; image slots hold, per image, either the encoded
keyword string of a tagger ("keywords") or the raw CLIP image vector fitted to width d
("raw_clip"). A cached store is checked against what the caller expects and refused on mismatch.
Stores are sealed files (bench.sealed: no pickle, checksummed); a damaged one is rebuilt. A store
of the older .pt layout is read once with torch's weights-only loader and rewritten sealed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from bench import sealed
from bench.data.catalog import load_dataset
from bench.data.dataset import Dataset
from bench.errors import BenchError, DamagedFile, warn
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
    return cache / "features" / f"{ds_name}-{key}.safetensors"


def save_store(path: Path, feats: ItemFeatures) -> None:
    payload = {
        "text": feats.text,
        "text_mask": feats.text_mask,
        "image": feats.image,
        "image_mask": feats.image_mask,
        "meta": feats.meta,
    }
    sealed.write(path, payload, "features")


def _features_from(payload, path: Path) -> ItemFeatures:
    """Structural check of a store's contents: the four tensors agree in shape and the meta is a dict."""
    try:
        text, text_mask, image, image_mask, meta = (
            payload[k] for k in ("text", "text_mask", "image", "image_mask", "meta"))
        if not all(isinstance(t, torch.Tensor) for t in (text, text_mask, image, image_mask)):
            raise TypeError("tensors expected")
        if (text.dim() != 3 or image.dim() != 3 or text_mask.shape != text.shape[:2]
                or image_mask.shape != image.shape[:2] or len(text) != len(image)
                or text_mask.dtype != torch.bool or image_mask.dtype != torch.bool or not isinstance(meta, dict)):
            raise ValueError("shapes or types do not agree")
    except (KeyError, TypeError, ValueError) as exc:
        raise DamagedFile(path, f"damaged feature store ({exc})") from None
    return ItemFeatures(text, text_mask, image, image_mask, meta)


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
    """Read a store (DamagedFile if it fails its checks); with `expect`, refuse one built with
    another encoder, tagger or slot layout. A .pt store (older layout) goes through torch's
    weights-only loader, which refuses anything but tensors and plain containers."""
    path = Path(path)
    try:
        if path.suffix == ".pt":
            payload = torch.load(path, map_location="cpu", weights_only=True)
        else:
            payload = sealed.read(path, "features")
    except DamagedFile:
        raise
    except Exception as exc:  # noqa: BLE001 - unreadable or refused by the weights-only loader
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DamagedFile(path, f"cannot read feature store ({reason})") from None
    feats = _features_from(payload, path)
    check_features(feats, expect or {}, f"feature store {path}")
    return feats


def _cached_store(path: Path, expect: dict) -> ItemFeatures | None:
    """The cached store at `path` (or its older .pt twin, migrated); None if absent or damaged
    (warned and removed, so it is rebuilt)."""
    legacy = path.with_suffix(".pt")
    for candidate in (path, legacy):
        if not candidate.is_file():
            continue
        try:
            feats = load_feature_file(candidate, expect)
        except BenchError as exc:  # damaged, or settings that do not match its key: not this store
            warn(f"{exc}; discarded, the features are rebuilt")
            try:
                candidate.unlink()
            except OSError:
                pass
            continue
        if candidate == legacy:
            try:
                save_store(path, feats)
                legacy.unlink()
            except (BenchError, OSError):
                pass  # read-only cache: keep reading the older file
        return feats
    return None


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
    batch_size: int = 256,  # strings per batch at most; TextEncoder also caps padded tokens per batch
    progress: bool = True,
    build: bool = True,  # False: None unless already cached (never encode)
) -> ItemFeatures | None:
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
    if (cached := _cached_store(path, {k: expect[k] for k in CHECKED_KEYS})) is not None:
        return cached
    if not build:
        return None
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
    try:
        save_store(path, feats)
    except BenchError as exc:  # a cache: the features themselves are fine
        warn(f"feature store not saved ({exc}); it is rebuilt next time")
    return feats
