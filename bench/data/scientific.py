"""`scientific` and `scientific_mm`: Amazon 2018 Industrial_and_Scientific from three processings.

Sequences come from the UniSRec files (full set) or the DecoRec CLIP subset; item text is the
UniSRec title/categories/brand plus description sentences from LC-Rec (joined by title); the
image channel is DecoRec's CLIP image embedding row of the item's ASIN, where it has one.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.dataset import Dataset
from bench.data.lcrec import description_sentences, match_by_title, read_lcrec_items
from bench.data.text_segments import MAX_SEGMENTS, assemble_segments, split_unisrec_text
from bench.data.unisrec import read_index, read_unisrec

CATEGORY_ROOT = "Industrial & Scientific"
UNISREC = "amazon18_scientific_unisrec"
LCREC = "amazon18_scientific_lcrec"
DECOREC = "amazon18_scientific_decorec_clip"
CLIP_IMAGE_FEATURES = f"{DECOREC}/Scientific.feat3CLS"  # raw float32, 512 per row, no header
CLIP_FEATURE_DIM = 512
CLIP_FEATURE_PREFIX = "clip_features:"  # image reference = this prefix + row of CLIP_IMAGE_FEATURES

UNISREC_FILES = tuple(
    f"{UNISREC}/Scientific.{ext}"
    for ext in ("item2index", "user2index", "train.inter", "valid.inter", "test.inter", "text")
)
DECOREC_FILES = tuple(
    f"{DECOREC}/Scientific.{ext}"
    for ext in ("item2index", "user2index", "train.inter", "valid.inter", "test.inter", "text", "feat3CLS")
)
LCREC_FILES = (f"{LCREC}/Scientific.item.json",)


def clip_feature_rows(root: Path) -> dict[str, int]:
    """ASIN -> row of the CLIP image feature file (DecoRec's item2index is 0-based, row = id)."""
    return read_index(root / DECOREC / "Scientific.item2index")


def attach_text_and_images(ds: Dataset, root: Path) -> Dataset:
    """Replace the single UniSRec text string by segments; record each item's image source."""
    fields = [split_unisrec_text(texts[0] if texts else "", CATEGORY_ROOT) for texts in ds.item_text]
    lcrec = read_lcrec_items(root / LCREC / "Scientific.item.json")
    matches, match_counts = match_by_title([f[0] for f in fields], [f[2] for f in fields], lcrec)
    ds.item_text = [
        assemble_segments(
            list(f), description_sentences(lcrec[key] if key is not None else None), MAX_SEGMENTS
        )
        for f, key in zip(fields, matches)
    ]
    rows = clip_feature_rows(root)
    ds.item_images = [[f"{CLIP_FEATURE_PREFIX}{rows[asin]}"] if asin in rows else [] for asin in ds.item_ids]
    with_image = sum(bool(refs) for refs in ds.item_images)
    ds.meta.update(
        {
            "text_segments": "title, categories, brand (UniSRec .text) + LC-Rec description sentences; at most 10",
            "lcrec_title_match": match_counts,
            "items_without_text": sum(not t for t in ds.item_text),
            "mean_text_segments": round(sum(map(len, ds.item_text)) / max(1, ds.n_items), 3),
            "image_features": {"file": CLIP_IMAGE_FEATURES, "dim": CLIP_FEATURE_DIM, "dtype": "float32"},
            "image_sources": {"clip_features": with_image, "none": ds.n_items - with_image},
        }
    )
    return ds


def build_scientific(root: Path) -> Dataset:
    ds = read_unisrec(root / UNISREC, "Scientific", "scientific")
    return attach_text_and_images(ds, root)


def build_scientific_mm(root: Path) -> Dataset:
    ds = read_unisrec(root / DECOREC, "Scientific", "scientific_mm")
    return attach_text_and_images(ds, root)
