"""Functions behind `bench data list` and `bench data keywords` (the CLI only prints their rows)."""

from __future__ import annotations

from pathlib import Path

from bench.data.catalog import DATASETS, load_dataset, user_dataset_entries
from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.paths import bench_home, cache_dir, data_root


def resolve_dirs(root: str | Path | None, cache: str | Path | None) -> tuple[Path, Path]:
    return data_root(root), Path(cache) if cache else cache_dir(bench_home())


def list_datasets(root: str | Path | None = None, cache: str | Path | None = None) -> list[dict]:
    """One row per dataset, built-in then user-added, with counts; a dataset whose files are
    missing is listed with the reason instead of failing the whole listing."""
    root, cache = resolve_dirs(root, cache)
    rows = []
    for name in DATASETS.names():
        row = {"name": name, "source": "built-in", "description": DATASETS.get(name).description}
        try:
            ds = load_dataset(name, root, cache)
        except BenchError as exc:
            row.update(users=None, items=None, interactions=None, note=str(exc))
        else:
            row.update(
                users=ds.n_users, items=ds.n_items, interactions=ds.n_interactions, note=image_note(ds)
            )
        rows.append(row)
    for entry in user_dataset_entries(cache):
        counts = entry.get("counts", {})
        rows.append(
            {
                "name": entry["name"],
                "source": "user",
                "description": entry.get("description", ""),
                "users": counts.get("users"),
                "items": counts.get("items"),
                "interactions": counts.get("interactions"),
                "note": f"raw files: {entry.get('raw_dir')}",
            }
        )
    return rows


def image_note(ds: Dataset) -> str:
    """e.g. "images: clip_features 1585, none 2800"."""
    sources = ds.meta.get("image_sources") or {}
    return "images: " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())) if sources else ""


def title_of(ds: Dataset, index: int) -> str:
    texts = ds.item_text[index] if ds.item_text else []
    return texts[0] if texts else ""


def show_keywords(
    dataset: str,
    n: int = 5,
    root: str | Path | None = None,
    cache: str | Path | None = None,
    tagger: str = "clip_features",
    n_keywords: int = 15,
    tagger_options: dict | None = None,
) -> list[dict]:
    """The first n items that have images: internal id, external id, title and each image's
    keywords, so a person can judge the tagger (no text encoding involved)."""
    from bench.features.taggers import make_tagger

    root, cache = resolve_dirs(root, cache)
    ds = load_dataset(dataset, root, cache)
    keywords, _ = make_tagger(tagger, **(tagger_options or {})).tag(ds, root, n_keywords)
    rows = []
    for i, per_image in enumerate(keywords):
        if per_image:
            rows.append(
                {
                    "item": i + 1,
                    "external_id": ds.item_ids[i],
                    "title": title_of(ds, i),
                    "keywords": [", ".join(k) for k in per_image],
                }
            )
            if len(rows) == n:
                break
    return rows
