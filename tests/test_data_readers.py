"""Readers of the real data: scientific (+ LC-Rec descriptions, CLIP image sources),
scientific_mm and office, and the text splitting they rely on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.cli.data import list_datasets
from bench.data.catalog import load_dataset
from bench.data.lcrec import match_by_title
from bench.data.scientific import clip_feature_rows
from bench.data.text_segments import assemble_segments, normalise_title, split_sentences, split_unisrec_text

ROOT = "Industrial & Scientific"


@pytest.fixture(scope="module")
def scientific_mm(data_root, cache):
    return load_dataset("scientific_mm", data_root, cache)


@pytest.fixture(scope="module")
def office(data_root, cache):
    return load_dataset("office", data_root, cache)


def test_split_unisrec_text_fields():
    text = "PORTER-CABLE 740000801 Sanding Roll. Industrial & Scientific Abrasive Products Sanding Rolls. PORTER-CABLE. "
    assert split_unisrec_text(text, ROOT) == (
        "PORTER-CABLE 740000801 Sanding Roll",
        "Industrial & Scientific Abrasive Products Sanding Rolls",
        "PORTER-CABLE",
    )


def test_split_unisrec_text_title_with_periods_and_empty_fields():
    # a title holding ". " must not be cut at it; UniSRec writes an absent field as ""
    text = "24 Oz. Sprayer Bottles, Pack Of 3. Industrial & Scientific Lab Bottles & Jars. Continental. "
    assert split_unisrec_text(text, ROOT) == (
        "24 Oz. Sprayer Bottles, Pack Of 3",
        "Industrial & Scientific Lab Bottles & Jars",
        "Continental",
    )
    assert split_unisrec_text("WD-40 Dry Lube PTFE Spray 10 OZ. . WD-40. ", ROOT) == (
        "WD-40 Dry Lube PTFE Spray 10 OZ",
        "",
        "WD-40",
    )
    assert split_unisrec_text("Only a title. Industrial & Scientific Tools. . ", ROOT) == (
        "Only a title",
        "Industrial & Scientific Tools",
        "",
    )


def test_sentences_and_segments():
    assert split_sentences("First one. Second &amp; <b>bold</b> text! .  ") == [
        "First one.",
        "Second & bold text!",
    ]
    segs = assemble_segments(["T", "", "B", "t"], [f"s{i}" for i in range(20)], limit=10)
    assert segs[:3] == ["T", "B", "s0"] and len(segs) == 10  # empty and case-duplicate fields dropped
    assert normalise_title("Relay/CAPACITOR Kit&amp;Co.") == normalise_title("relay capacitor kit & co")


def test_match_by_title_uses_brand_and_refuses_ambiguity():
    items = {
        "0": {"title": "Glue.", "brand": "A", "description": "x"},
        "1": {"title": "Glue", "brand": "B", "description": "y"},
        "2": {"title": "Tape", "brand": "C", "description": "d1"},
        "3": {"title": "tape", "brand": "C", "description": "d2"},
    }
    matches, counts = match_by_title(["glue", "GLUE", "Tape", "Nothing"], ["B", "Z", "C", "C"], items)
    assert matches == ["1", None, None, None]
    assert counts == {"matched": 1, "ambiguous": 2, "unmatched": 1}


def test_scientific_text_segments_and_lcrec_match(scientific):
    assert (scientific.n_users, scientific.n_items) == (8442, 4385)
    match = scientific.meta["lcrec_title_match"]
    assert sum(match.values()) == 4385
    assert (
        4190 <= match["matched"] <= 4385 and match["unmatched"] < 100
    )  # SOURCES.md: 4,198 with its normalisation
    assert all(1 <= len(t) <= 10 for t in scientific.item_text)
    with_description = sum(len(t) > 3 for t in scientific.item_text)
    assert with_description > 3500  # descriptions really were joined (some LC-Rec descriptions are empty)
    first = scientific.item_ids.index("B0000223SI")
    assert scientific.item_text[first][:3] == [
        "PORTER-CABLE 740000801 4 1/2-Inch x 10yd 80 Grit Adhesive-Backed Sanding Roll",
        "Industrial & Scientific Abrasive & Finishing Products Manual Sanding Products Sanding Rolls",
        "PORTER-CABLE",
    ]


def test_scientific_image_sources_map_by_asin(scientific, data_root):
    rows = clip_feature_rows(data_root)
    assert scientific.meta["image_sources"] == {"clip_features": 1585, "none": 2800}
    for asin in list(rows)[:50]:
        assert scientific.item_images[scientific.item_ids.index(asin)] == [f"clip_features:{rows[asin]}"]
    no_image = [i for i, a in enumerate(scientific.item_ids) if a not in rows]
    assert all(scientific.item_images[i] == [] for i in no_image)


def test_scientific_mm(scientific_mm, scientific):
    assert (scientific_mm.n_users, scientific_mm.n_items, scientific_mm.n_interactions) == (2928, 1585, 19712)
    assert all(len(refs) == 1 for refs in scientific_mm.item_images)
    # internal id i+1 is row i of the CLIP feature file (DecoRec ids are 0-based)
    assert [r[0] for r in scientific_mm.item_images[:3]] == [
        "clip_features:0",
        "clip_features:1",
        "clip_features:2",
    ]
    # same ASIN -> same text segments in both datasets
    for i in range(0, 1585, 97):
        asin = scientific_mm.item_ids[i]
        assert scientific_mm.item_text[i] == scientific.item_text[scientific.item_ids.index(asin)]
    assert int(scientific_mm.lengths().min()) >= 5


def test_office_counts_order_and_text(office, data_root):
    assert (office.n_users, office.n_items, office.n_interactions) == (4905, 2420, 53258)
    assert office.timestamps is not None
    for u in range(0, office.n_users, 37):
        t = office.timestamps[office.offsets[u] : office.offsets[u + 1]]
        assert np.all(np.diff(t) >= 0), f"user {u} not in time order"

    # each user's last item is their test.csv item, the one before it their dev.csv item
    def last_items(file):
        lines = (data_root / "amazon14_office_rechorus" / file).read_text().splitlines()[1:]
        return dict(line.split("\t")[:2] for line in lines)

    test, dev = last_items("test.csv"), last_items("dev.csv")
    for u, user in enumerate(office.user_ids):
        seq = office.sequence(u)
        assert (seq[-2], seq[-1]) == (int(dev[user]), int(test[user])), f"user {user}"
    assert office.item_text[office.item_ids.index("B00000JBLU")] == [
        "Texas Instruments TI-1795 SV Standard Function Calculator Basic Texas Instruments"
    ]
    assert office.meta["image_sources"] == {"none": 2420}


def test_manifest_records_match_count(scientific, cache):
    manifest = json.loads(
        next((cache / "datasets").glob(f"scientific-{scientific.content_hash}/manifest.json")).read_text()
    )
    assert manifest["meta"]["lcrec_title_match"]["matched"] == scientific.meta["lcrec_title_match"]["matched"]
    assert manifest["counts"]["items"] == 4385 and manifest["reader_version"] == "2"


def test_list_datasets_rows(data_root, cache, tmp_path):
    rows = {r["name"]: r for r in list_datasets(data_root, cache)}
    assert (rows["scientific"]["users"], rows["scientific"]["items"]) == (8442, 4385)
    assert (rows["scientific_mm"]["users"], rows["scientific_mm"]["items"]) == (2928, 1585)
    assert (rows["office"]["users"], rows["office"]["items"]) == (4905, 2420)
    # a missing data root lists the reason instead of failing
    missing = {r["name"]: r for r in list_datasets(tmp_path / "nowhere", tmp_path / "c")}
    assert missing["office"]["users"] is None and "missing data file" in missing["office"]["note"]
