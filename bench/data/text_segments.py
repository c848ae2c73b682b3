"""Turning source text fields into the item text segments MSM4SR encodes one by one.

MSM4SR encodes each text segment of an item separately (title, categories, brand, description
sentences ...), so readers must split combined text carefully rather than pass one long string.
"""

from __future__ import annotations

import html
import re
import unicodedata

MAX_SEGMENTS = 10  # MSM4SR: up to 10 text segments per item

# A sentence ends at . ! or ? followed by whitespace; abbreviations like "No. 2" will split too,
# which only costs a slightly shorter segment, never lost text.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
TAG = re.compile(r"<[^>]+>")


def clean_text(text: str) -> str:
    """Unescape HTML entities, drop tags and collapse whitespace (Amazon metadata holds all three)."""
    text = TAG.sub(" ", html.unescape(text or ""))
    return " ".join(text.split())


def normalise_title(title: str) -> str:
    """Key for joining two processings of the same catalogue: case, punctuation and spacing differ
    between them (e.g. LC-Rec appends a '.'), the words do not."""
    text = unicodedata.normalize("NFKC", html.unescape(title or "")).lower()
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text).split())


def split_unisrec_text(text: str, category_root: str) -> tuple[str, str, str]:
    """UniSRec `.text` "title. categories. brand. " -> (title, categories, brand).

    UniSRec writes each of the three fields followed by ". ", an absent field as "" (so ". . "
    marks empty categories). Titles may themselves contain ". " ("24 Oz. Sprayer"), so the split
    anchors on the categories field, which starts with the category root (e.g. "Industrial &
    Scientific") or is empty; the brand is what follows the categories.
    """
    s = text.strip()
    anchor = s.rfind(". " + category_root)
    if anchor >= 0:
        title, rest = s[:anchor], s[anchor + 2 :]
        end = rest.find(". ")
        categories, brand = (rest[:end], rest[end + 2 :]) if end >= 0 else (rest, "")
    elif (anchor := s.rfind(". . ")) >= 0:
        title, categories, brand = s[:anchor], "", s[anchor + 4 :]
    else:
        # no recognisable categories field: keep everything as the title rather than guess
        return clean_text(s.removesuffix(".")), "", ""
    categories = categories.strip().removesuffix(".")
    brand = brand.strip().removesuffix(".")
    return clean_text(title), clean_text(categories), clean_text(brand)


def split_sentences(text: str, min_chars: int = 3) -> list[str]:
    """Description -> sentences, without fragments of punctuation only (LC-Rec ends many with ' .')."""
    out = []
    for sentence in SENTENCE_END.split(clean_text(text)):
        sentence = sentence.strip()
        if len(re.sub(r"[^0-9A-Za-z]", "", sentence)) >= min_chars:
            out.append(sentence)
    return out


def assemble_segments(fields: list[str], extra: list[str] = (), limit: int = MAX_SEGMENTS) -> list[str]:
    """Non-empty fields first (title, categories, brand), then extra sentences, no duplicates, at
    most `limit` segments."""
    out: list[str] = []
    seen: set[str] = set()
    for segment in [*fields, *extra]:
        segment = segment.strip()
        key = segment.lower()
        if segment and key not in seen:
            seen.add(key)
            out.append(segment)
        if len(out) == limit:
            break
    return out
