"""Export in a real browser: the dashboard of tests/test_browser.py (same server and browser fixtures) over a
database holding two tiny runs trained from the command line. On `/compare?runs=1,2` the Export area's PNG and
CSV buttons are clicked and the downloaded files checked: a PNG of the default size, and a CSV equal to the stored
series. A screenshot of the page with the export area open goes to test-artifacts/screenshots/."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import PROJECT_ROOT
from core.presentation import export
from core.store import Store

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
from test_browser import CHROMIUM, SCREENSHOTS, page, screenshot, server, wait_idle  # noqa: E402,F401 - fixtures

from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} for the browser test"),
              pytest.mark.skipif(export.find_browser() is None, reason="no Chromium/Chrome for Kaleido")]
METRICS = ["train_loss", "val_loss"]


def download(page, key: str) -> tuple[str, bytes]:
    """Click the download button `key` as a person would; the file's suggested name and its bytes."""
    with page.expect_download(timeout=60_000) as info:
        page.locator(f".st-key-{key} button").click()
    file = info.value
    assert file.failure() is None, file.failure()
    return file.suggested_filename, Path(file.path()).read_bytes()


def test_compare_downloads_the_chart_and_its_data(page, server, capsys):
    base, db_url = server
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "core", "--db", db_url, "train", "--preset", "article-example",
                        "--epochs", "1"], cwd=PROJECT_ROOT, check=True, capture_output=True)
    with Store(db_url) as store:
        ids = [r.id for r in reversed(store.list_runs())]
        stored = store.metrics_frame(ids, METRICS)
    assert len(ids) == 2

    page.goto(f"{base}/compare?runs={ids[0]},{ids[1]}")
    chart = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").first
    expect(chart).to_be_visible(timeout=60_000)  # the server's first page: plotly.js loads
    area = page.get_by_test_id("stExpander").filter(has_text="Export")
    area.locator("summary").click()
    expect(area.locator(".st-key-compare_export_report button")).to_be_visible()
    wait_idle(page)
    for label in ("PNG", "SVG", "PDF", "HTML (interactive)", "Data (CSV)", "Summary (CSV)",
                  "Config differences (CSV)", "Report (HTML)"):
        expect(area.get_by_role("button", name=label, exact=True)).to_be_visible()

    stem = "train_loss_val_loss_article-example_vs_article-example"
    name, png = download(page, "compare_export_png")
    assert name == f"{stem}.png"
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    size = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert size == (2 * export.DEFAULT_WIDTH, 2 * 480), "1000 px x the chart's 480 px, at the default 2x"

    name, csv = download(page, "compare_export_csv")
    assert name == f"{stem}.csv"
    back = pd.read_csv(io.StringIO(csv.decode("utf-8")))
    assert list(back.columns) == list(export.SERIES_CSV_COLUMNS) and len(back) == len(stored)
    for col in ("run_id", "step", "epoch", "value", "wall_time"):
        np.testing.assert_array_equal(back[col].to_numpy(), stored[col].to_numpy())
    assert back["key"].tolist() == stored["key"].tolist() and set(back["run_name"]) == {"article-example"}

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    area.scroll_into_view_if_needed()
    area.screenshot(path=str(SCREENSHOTS / "9-compare-export-area.png"))
    screenshot(page, "9-compare-export")
    with capsys.disabled():
        print(f"\nscreenshots: {SCREENSHOTS / '9-compare-export.png'}, {SCREENSHOTS / '9-compare-export-area.png'}")
