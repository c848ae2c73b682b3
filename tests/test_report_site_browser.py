"""The generated site in a real headless browser (Debian's chromium, driven by playwright's client):
pages load from disk without console errors, tables sort, charts draw, run links resolve."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_report_site import tiny_home  # noqa: F401  (the session fixture: a tiny real store)

from bench.report.site.build import build_site

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright's Python client is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def column_values(page, header: str) -> list[float]:
    return page.evaluate(
        """(header) => {
            const t = document.getElementById('suite-table');
            const col = [...t.tHead.rows[0].cells].findIndex(th => th.textContent.trim() === header);
            return [...t.tBodies[0].rows].map(r => parseFloat(r.cells[col].getAttribute('data-v')));
        }""", header)


def test_site_in_a_headless_browser(tiny_home, browser, tmp_path):  # noqa: F811
    out = tmp_path / "site"
    build_site(out, tiny_home["home"], [str(tiny_home["suite"])], ["full"])
    shots = Path(os.environ.get("BENCH_REPORT_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    page.goto((out / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("#suites tbody tr").count() == 1
    page.screenshot(path=str(shots / "index.png"), full_page=True)
    assert errors == []

    page.click("text=tinysite")
    page.wait_for_load_state("load")
    assert page.url.endswith("suites/tinysite-full.html")
    # charts: plotly drew SVG with one marker per row in the dot plot
    dot = page.locator("[id^='dot-'] .main-svg").first
    dot.wait_for(state="attached")
    assert page.locator("[id^='dot-'] .scatterlayer .point").count() >= 2
    assert page.locator("[id^='heat-'] .main-svg").count() >= 1
    page.screenshot(path=str(shots / "suite.png"), full_page=True)
    # sorting: one click ascending, a second descending
    header = page.locator("#suite-table th", has_text="NDCG@10").first
    header.click()
    ascending = column_values(page, "NDCG@10")
    assert ascending == sorted(ascending) and len(ascending) == 2
    header.click()
    assert column_values(page, "NDCG@10") == sorted(ascending, reverse=True)
    # the metric toggle hides the other metrics' columns and charts
    page.select_option("#metric-family", "NDCG")
    assert page.locator("#suite-table th[data-metric='Recall@10']").is_hidden()
    assert page.locator("#suite-table th[data-metric='NDCG@20']").is_visible()
    page.select_option("#metric-cutoff", "20")
    assert page.locator("#suite-table th[data-metric='NDCG@10']").is_hidden()
    visible_dots = page.locator(".metric-charts > div:visible [id^='dot-']")
    assert visible_dots.count() == 1 and visible_dots.first.get_attribute("id").endswith("NDCG_20")
    assert errors == []

    # a run page link resolves, with its curves drawn
    link = page.locator("#suite-table a.run").last
    run_hash = link.get_attribute("title")
    link.click()
    page.wait_for_load_state("load")
    assert page.url.endswith(f"runs/{run_hash}.html") and run_hash in page.title()
    assert page.locator("#curves .main-svg").count() >= 1 or page.locator("[id^='hist-'] .main-svg").count() >= 1
    assert errors == []
    assert all(u.startswith("file://") for u in requests), [u for u in requests if not u.startswith("file://")]
