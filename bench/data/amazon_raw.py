"""Reader for raw Amazon Review dumps (2023, 2018 and 2014) of one category into a canonical Dataset.

Interactions: 2023 `<Category>.jsonl(.gz)` (user_id, parent_asin, timestamp in ms; items are parent
ASINs) from https://amazon-reviews-2023.github.io; 2018 `<Category>_5.json.gz` or ratings-only `<Category>.csv` (item,user,rating,time);
2014 `reviews_<Category>_5.json.gz` or `ratings_<Category>.csv` (user,item,rating,time).
Metadata: 2023 `meta_<Category>.jsonl(.gz)` (title, features, description, categories, store,
images); `meta_<Category>.json.gz`, JSON lines (2018) or Python-literal lines (2014).
Processing, as in MSM4SR's code: a user-item pair seen twice keeps its last interaction, then
k-core filtering (users and items with >= k interactions, repeated until stable), then each
user's sequence in chronological order (ties keep file order).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.dataset import Dataset, from_sequences
from bench.data.interaction_log import InteractionLog, k_core_mask, keep_last, sorted_ids
from bench.data.raw_lines import LineStats, read_csv_rows, read_records
from bench.data.text_segments import MAX_SEGMENTS, assemble_segments, clean_text, split_sentences
from bench.errors import BenchError

MAX_IMAGES = 10  # MSM4SR: up to 10 images per item


@dataclass(frozen=True)
class RawFiles:
    version: str  # "2023", "2018" or "2014"
    interactions: Path
    kind: str  # "reviews" (JSON lines) or "ratings_csv"
    meta: Path
    csv_columns: tuple[str, ...] = ()  # column order of a ratings csv


def find_raw_files(raw_dir: Path, category: str) -> RawFiles:
    """Which dump of `category` lies in raw_dir (reviews before ratings, newest first)."""
    if not raw_dir.is_dir():
        raise BenchError(f"raw data folder not found: {raw_dir}")
    for ext in (".jsonl.gz", ".jsonl"):  # 2023: its own names, its own metadata
        if (raw_dir / f"{category}{ext}").is_file():
            metas = [raw_dir / f"meta_{category}{e}" for e in (".jsonl.gz", ".jsonl")]
            meta = next((m for m in metas if m.is_file()), None)
            if meta is None:
                raise BenchError(f"missing metadata file {metas[0]} (or .jsonl), needed beside {raw_dir / (category + ext)}")
            return RawFiles("2023", raw_dir / f"{category}{ext}", "reviews", meta)
    meta = raw_dir / f"meta_{category}.json.gz"
    if not meta.is_file() and (raw_dir / f"meta_{category}.json").is_file():
        meta = raw_dir / f"meta_{category}.json"
    candidates = [
        ("2018", f"{category}_5.json.gz", "reviews", ()),
        ("2018", f"{category}_5.json", "reviews", ()),
        ("2014", f"reviews_{category}_5.json.gz", "reviews", ()),
        ("2014", f"reviews_{category}_5.json", "reviews", ()),
        ("2018", f"{category}.csv", "ratings_csv", ("item", "user", "rating", "time")),
        ("2014", f"ratings_{category}.csv", "ratings_csv", ("user", "item", "rating", "time")),
    ]
    for version, filename, kind, columns in candidates:
        if (raw_dir / filename).is_file():
            if not meta.is_file():
                raise BenchError(f"missing metadata file {meta} (needed beside {raw_dir / filename})")
            return RawFiles(version, raw_dir / filename, kind, meta, columns)
    expected = ", ".join([f"{category}.jsonl(.gz)", *(c[1] for c in candidates)])
    raise BenchError(f"no interaction file for category {category!r} in {raw_dir} (looked for {expected})")


def review_time(record: dict) -> int:
    if "unixReviewTime" in record:
        return int(record["unixReviewTime"])
    raise KeyError("unixReviewTime")


def review_2023(record: dict) -> tuple[str, str, int]:
    """(user, item, unix milliseconds): 2023 reviews name the parent ASIN (the product, all its
    variants); their milliseconds order the sequence and become float seconds afterwards."""
    return str(record["user_id"]), str(record["parent_asin"]), int(record["timestamp"])


def read_interactions(
    files: RawFiles, stats: LineStats, skip_bad_lines: bool, progress: Callable[[float], None] | None = None
) -> InteractionLog:
    """Every interaction line, as integer columns (duplicates are resolved later, see keep_last)."""
    log = InteractionLog()

    def bad(lineno: int, why: str) -> None:
        if not skip_bad_lines:
            raise BenchError(
                f"{files.interactions}:{lineno}: {why}; fix the file or pass skip_bad_lines to skip such lines"
            )
        stats.skipped += 1
        stats.first_skipped = stats.first_skipped or f"{files.interactions}:{lineno}"

    if files.kind == "reviews":
        for lineno, rec in read_records(files.interactions, stats, skip_bad_lines, progress=progress):
            try:
                if files.version == "2023":
                    log.add(*review_2023(rec), lineno)
                else:
                    log.add(str(rec["reviewerID"]), str(rec["asin"]), review_time(rec), lineno)
            except (KeyError, ValueError, TypeError) as exc:
                bad(lineno, f"review without a usable {exc} field")
    else:
        col = {name: i for i, name in enumerate(files.csv_columns)}
        for lineno, row in read_csv_rows(files.interactions, stats, progress=progress):
            try:
                log.add(row[col["user"]], row[col["item"]], int(float(row[col["time"]])), lineno)
            except (IndexError, ValueError):
                bad(lineno, f"expected {','.join(files.csv_columns)}, got {','.join(row)[:80]!r}")
    return log


def text_of(version: str, meta: dict) -> list[str]:
    """Metadata -> text segments: title, categories, brand, then description sentences."""
    if version == "2023":  # categories: one path; brand: the store; features are bullet sentences
        extra = [*(str(x) for x in meta.get("features") or []), *(str(x) for x in meta.get("description") or [])]
        fields = [clean_text(str(meta.get("title") or "")),
                  " ".join(clean_text(str(c)) for c in meta.get("categories") or [] if c),
                  clean_text(str(meta.get("store") or ""))]
        return assemble_segments(fields, [s for x in extra for s in split_sentences(x)], MAX_SEGMENTS)
    if version == "2018":
        categories = meta.get("category") or []
    else:  # 2014: a list of category paths; the first path describes the item's place
        paths = meta.get("categories") or [[]]
        categories = paths[0] if paths and isinstance(paths[0], list) else []
    categories = [clean_text(str(c)) for c in categories]
    description = meta.get("description") or ""
    if isinstance(description, list):
        description = " ".join(str(d) for d in description)
    fields = [
        clean_text(str(meta.get("title") or "")),
        " ".join(c for c in categories if c),
        clean_text(str(meta.get("brand") or "")),
    ]
    return assemble_segments(fields, split_sentences(str(description)), MAX_SEGMENTS)


def images_of(version: str, meta: dict) -> list[str]:
    if version == "2023":  # [{"hi_res", "large", "thumb", "variant"}, ...]; hi_res may be null
        urls = [im.get("hi_res") or im.get("large") for im in meta.get("images") or [] if isinstance(im, dict)]
    elif version == "2018":
        urls = meta.get("imageURLHighRes") or meta.get("imageURL") or []
    else:
        urls = [meta["imUrl"]] if meta.get("imUrl") else []
    return [str(u) for u in urls if u][:MAX_IMAGES]


ASIN_FIELD = re.compile(r"""["']asin["']\s*:\s*["']([^"']+)["']""")
PARENT_ASIN_FIELD = re.compile(r'"parent_asin"\s*:\s*"([^"]+)"')


def read_meta(files: RawFiles, wanted: set[str], stats: LineStats, skip_bad_lines: bool) -> dict[str, dict]:
    """Metadata records of the wanted items only: a category's meta file is much larger than its
    5-core, so lines whose asin is visibly not wanted are skipped unparsed."""

    key, pattern = ("parent_asin", PARENT_ASIN_FIELD) if files.version == "2023" else ("asin", ASIN_FIELD)

    def maybe_wanted(line: str) -> bool:
        found = pattern.search(line)
        return found is None or found.group(1) in wanted  # no visible asin: parse and judge

    out = {}
    for _, rec in read_records(
        files.meta, stats, skip_bad_lines, allow_python_literal=True, wanted=maybe_wanted
    ):
        asin = rec.get(key)
        if asin in wanted:
            out[asin] = rec
    return out


def sequences_of(
    cols: dict[str, np.ndarray], user_names: np.ndarray, item_names: np.ndarray, k_core_min: int, source: Path,
    dedupe: bool = True,
) -> tuple[list[str], list[str], list[np.ndarray], np.ndarray, int]:
    """(item names, user names, per-user item-id sequences, their timestamps, pairs before k-core):
    optionally keep each user-item pair's last interaction, k-core filter, order each user's
    interactions by time (ties in file order)."""
    cols = {k: v[keep_last(cols)] for k, v in cols.items()} if dedupe else cols
    core = k_core_mask(cols["user"], cols["item"], k_core_min)
    if not core.any():
        raise BenchError(
            f"{source}: no interactions left after {k_core_min}-core filtering "
            f"({len(cols['user'])} {'user-item pairs' if dedupe else 'interactions'} before); use a smaller k_core"
        )
    n_pairs = len(cols["user"])
    cols = {k: v[core] for k, v in cols.items()}
    item_of, item_names = sorted_ids(cols["item"], item_names)
    user_of, user_names = sorted_ids(cols["user"], user_names)
    user, item = user_of[cols["user"]], item_of[cols["item"]]
    order = np.lexsort((cols["line"], cols["time"], user))  # chronological per user, ties in file order
    cuts = np.cumsum(np.bincount(user[order] - 1, minlength=len(user_names)))[:-1]
    return item_names, user_names, np.split(item[order], cuts), cols["time"][order], n_pairs


def read_amazon_raw(
    raw_dir: Path,
    category: str,
    name: str,
    k_core_min: int = 5,
    image_dir: Path | None = None,
    skip_bad_lines: bool = False,
    progress: Callable[[float], None] | None = None,
) -> Dataset:
    """`progress(fraction)` is called as the interaction file is read (fraction of its bytes)."""
    files = find_raw_files(raw_dir, category)
    inter_stats, meta_stats = LineStats(), LineStats()
    log = read_interactions(files, inter_stats, skip_bad_lines, progress)
    item_names, user_names, seqs, timestamps, n_pairs = sequences_of(
        log.columns(), log.names("user"), log.names("item"), k_core_min, files.interactions
    )
    if files.version == "2023":
        timestamps = timestamps / 1000.0
    meta = read_meta(files, set(item_names), meta_stats, skip_bad_lines)
    texts = [text_of(files.version, meta[a]) if a in meta else [] for a in item_names]
    images, sources = [], Counter()
    for asin in item_names:
        local = image_dir / f"{asin}.jpg" if image_dir is not None else None
        if local is not None and local.is_file():
            images.append([str(local.resolve())])
            sources["local_file"] += 1
        else:
            urls = images_of(files.version, meta.get(asin, {}))
            images.append(urls)
            sources["url" if urls else "none"] += 1
    ds = from_sequences(
        name,
        item_names,
        user_names,
        seqs,
        timestamps=timestamps,
        item_text=texts,
        item_images=images,
    )
    ds.meta.update(
        {
            "source": f"Amazon {files.version} {category} ({files.interactions.name}, {files.meta.name})",
            "k_core": k_core_min,
            "pairs_before_k_core": n_pairs,
            "lines_read": {"interactions": inter_stats.read, "meta": meta_stats.read},
            "lines_skipped": {"interactions": inter_stats.skipped, "meta": meta_stats.skipped},
            "first_skipped_line": inter_stats.first_skipped or meta_stats.first_skipped,
            "items_without_meta": sum(a not in meta for a in item_names),
            "items_without_text": sum(not t for t in texts),
            "image_sources": dict(sources),
        }
    )
    return ds
