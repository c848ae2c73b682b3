"""LC-Rec item metadata (`<Prefix>.item.json`: {id: {title, description, brand, categories}}).

LC-Rec's files carry no ASIN, so they are joined to other processings of the same category by
normalised title; brand breaks ties and ambiguous titles are left unmatched rather than guessed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from bench.data.text_segments import normalise_title, split_sentences
from bench.errors import BenchError


def read_lcrec_items(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise BenchError(f"missing data file: {path}")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(items, dict):
        raise BenchError(f"{path}: expected a JSON object of items")
    return items


def match_by_title(
    titles: list[str], brands: list[str], items: dict[str, dict]
) -> tuple[list[str | None], dict]:
    """For each (title, brand): the key of the LC-Rec item with the same normalised title.

    Several LC-Rec items may share a title (size or colour variants): a unique brand match wins,
    and candidates whose descriptions are identical are interchangeable; otherwise no match.
    """
    by_title: dict[str, list[str]] = defaultdict(list)
    for key, item in items.items():
        by_title[normalise_title(item.get("title", ""))].append(key)
    matches: list[str | None] = []
    counts = {"matched": 0, "ambiguous": 0, "unmatched": 0}
    for title, brand in zip(titles, brands):
        candidates = by_title.get(normalise_title(title), []) if normalise_title(title) else []
        if len(candidates) > 1:
            same_brand = [
                k for k in candidates if normalise_title(items[k].get("brand", "")) == normalise_title(brand)
            ]
            candidates = same_brand or candidates
        descriptions = {" ".join(items[k].get("description", "").split()) for k in candidates}
        if not candidates:
            counts["unmatched"] += 1
            matches.append(None)
        elif len(candidates) == 1 or len(descriptions) == 1:
            counts["matched"] += 1
            matches.append(candidates[0])
        else:
            counts["ambiguous"] += 1
            matches.append(None)
    return matches, counts


def description_sentences(item: dict | None) -> list[str]:
    return split_sentences(item.get("description", "")) if item else []
