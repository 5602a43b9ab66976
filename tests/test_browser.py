"""The main journey in a real browser: `streamlit run app.py` on a free port and a temporary database, driven by
Playwright with Debian's chromium. An empty Overview; a run trained from the command line; a run launched on Train
and watched until it finishes; both selected on Runs and opened in Compare, where both are in the chart.
Screenshots of every page go to test-artifacts/screenshots/ (the path is printed)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from core import PROJECT_ROOT
from core.store import Store

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
ROW_PX, MARKER_PX = 35, 30  # glide-data-grid: row height, row-marker (checkbox) column width

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} for the browser test")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The dashboard serving a fresh, empty database: (base URL, database URL)."""
    folder = tmp_path_factory.mktemp("browser")
    db_url = f"sqlite:///{folder / 'runs.db'}"
    port = free_port()
    log = open(folder / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"],
        cwd=PROJECT_ROOT, env={**os.environ, "LOSSBOARD_DB": db_url}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # the server's own readiness endpoint
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("streamlit did not start:\n" + (folder / "streamlit.log").read_text()[-3000:])
        time.sleep(0.2)
    yield base, db_url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


def wait_idle(page) -> None:
    page.wait_for_selector(IDLE, state="attached")


def screenshot(page, name: str) -> None:
    """The whole page: the viewport grows to the height of Streamlit's scrolling main area first."""
    wait_idle(page)
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1440, "height": max(1000, min(int(height) + 40, 6000))})
    wait_idle(page)
    # Tables are drawn on a canvas after the resize: let the browser paint a few frames first.
    page.evaluate("() => new Promise(done => { let n = 0; const tick = () => (++n < 5 ? "
                  "requestAnimationFrame(tick) : done()); requestAnimationFrame(tick); })")
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1440, "height": 1000})


def select_row(page, row: int) -> None:
    """Tick the selection box of a table row (1 is the first data row; the table is drawn on a canvas)."""
    table = page.get_by_test_id("stDataFrame").first
    table.click(position={"x": MARKER_PX / 2, "y": row * ROW_PX + ROW_PX / 2})


def test_launch_watch_select_and_compare(page, server, shots, capsys):
    base, db_url = server
    requests: list[str] = []  # every request of the journey, the favicon's included: none may leave 127.0.0.1
    page.context.on("request", lambda request: requests.append(request.url))

    # An empty database: the Overview says what to do first
    page.goto(base)
    expect(page.get_by_role("heading", name="Lossboard")).to_be_visible()
    expect(page.get_by_text("No runs yet")).to_be_visible()
    screenshot(page, "1-overview-empty")

    # The favicon ships with the app: its link points at this server, and the image is there
    icon = page.locator("link[rel~='icon']").first
    expect(icon).to_have_attribute("href", re.compile(r"^(/|http://127\.0\.0\.1:\d+/|data:image/)"))
    href = icon.get_attribute("href")
    if not href.startswith("data:"):
        with urllib.request.urlopen(urllib.parse.urljoin(base + "/", href), timeout=10) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("image/")

    # A run from the command line, into the database the dashboard has open
    subprocess.run([sys.executable, "-m", "core", "--db", db_url, "train", "--preset", "article-fixed", "--epochs", "3",
                    "--n-samples", "300"], cwd=PROJECT_ROOT, check=True, capture_output=True)
    with Store(db_url) as store:
        (cli_run,) = store.list_runs()

    # Train: two epochs of the article's example, launched in the background and watched until it finishes
    page.goto(f"{base}/train")
    epochs = page.get_by_role("spinbutton", name="epochs")
    expect(epochs).to_have_value("20")
    epochs.fill("2")
    epochs.press("Enter")
    wait_idle(page)
    name = page.get_by_role("textbox", name="Run name")
    name.fill("browser run")
    name.press("Enter")
    wait_idle(page)
    page.locator(".st-key-train_launch button").click()
    live = page.locator(".st-key-train_live")
    expect(live.get_by_text("browser run")).to_be_visible()
    with Store(db_url) as store:
        new_run = next(r for r in store.list_runs() if r.id != cli_run.id)
        assert (new_run.name, new_run.config["epochs"], new_run.config["dataset"]) == ("browser run", 2, "random")
    card = page.locator(f".st-key-train_live_run_{new_run.id}")
    expect(card.get_by_text("✓ finished")).to_be_visible(timeout=120_000)
    expect(card.locator(".js-plotly-plot").first).to_be_visible()  # a live rerun may hold the old one a moment
    screenshot(page, "2-train")

    page.goto(base)
    expect(page.get_by_test_id("stMetric").first).to_be_visible()
    screenshot(page, "3-overview")

    # Runs: open the new run (first row, newest first), then select the command-line run too
    page.goto(f"{base}/runs")
    expect(page.get_by_test_id("stDataFrame").first.locator("canvas").first).to_be_visible()
    wait_idle(page)
    select_row(page, 1)
    expect(page.get_by_text("1 run selected")).to_be_visible()
    expect(page.get_by_role("heading", name=f"#{new_run.id} browser run")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/runs\?run={new_run.id}$"))  # choosing a run puts its link in the URL
    expect(page.get_by_text("Every prediction is ≥ 0.5: a ReLU before the sigmoid.")).to_be_visible()
    screenshot(page, "4-runs-one-run")
    page.get_by_role("tab", name="Metrics").click()
    expect(page.locator("[data-testid='stTabPanel'] .js-plotly-plot").first).to_be_visible()
    screenshot(page, "5-runs-one-run-metrics")
    select_row(page, 2)
    expect(page.get_by_text("2 runs selected")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/runs$"))  # several runs: no single run's link
    screenshot(page, "6-runs-two-selected")

    # Compare: both runs in the URL and in the chart
    page.locator(".st-key-runs_open_compare button").click()
    chart = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").first
    expect(chart).to_be_visible()
    assert f"runs={new_run.id}%2C{cli_run.id}" in page.url
    legend = chart.locator(".legend .traces")
    expect(legend).to_have_count(4)  # two runs x (train_loss, val_loss)
    names = " ".join(legend.all_text_contents())  # SVG: no innerText
    assert f"#{new_run.id} browser run" in names and f"#{cli_run.id} article-fixed" in names
    assert chart.locator(".scatterlayer .trace").count() == 4
    screenshot(page, "7-compare")

    # Small multiples, one panel per metric: each run is listed once in the legend
    page.get_by_text("One panel per metric").click()
    expect(chart.locator(".legend .traces")).to_have_count(2)
    screenshot(page, "8-compare-small-multiples")

    # A link to one run opens its view, in a fresh session: name, findings, metrics and config
    other = page
    other.goto(f"{base}/runs?run={cli_run.id}")
    expect(other.get_by_role("heading", name=f"#{cli_run.id} article-fixed")).to_be_visible()
    expect(other.get_by_text("1 run selected")).to_be_visible()
    expect(other.get_by_role("tab", name="Findings")).to_be_visible()
    other.get_by_role("tab", name="Config").click()
    expect(other.get_by_text('"loss": "bce_with_logits"')).to_be_visible()
    screenshot(other, "8b-runs-link-to-one-run")

    outside = [url for url in requests if urllib.parse.urlsplit(url).scheme in ("http", "https", "ws", "wss")
               and urllib.parse.urlsplit(url).hostname not in ("127.0.0.1", "localhost")]
    assert requests and not outside, outside

    with capsys.disabled():
        print(f"\nscreenshots: {SCREENSHOTS}")


def test_dragging_across_the_chart_reads_that_range_at_full_resolution(page, server, shots):
    """A 30,000-step run: the overview holds each curve's shape (reduced), a box dragged across the chart is read
    again from the store with every point, and 'Whole run' returns."""
    base, db_url = server
    from core.training.reporting import MetricBatch

    with Store(db_url) as store:
        run_id = store.create_run(name="long run", config={})
        for first in range(0, 30_000, 1000):
            steps = list(range(first + 1, first + 1001))
            batch = MetricBatch()
            batch.add_series("train_loss", steps, [s // 500 for s in steps],
                             [1.0 / (1 + s / 1000) + (0.05 if s % 7 == 0 else 0.0) for s in steps],
                             [s * 1e-3 for s in steps])
            store.log_metrics(run_id, batch)
        store.finish_run(run_id, status="finished", summary={})
    page.goto(f"{base}/compare?runs={run_id}")
    chart = page.locator("[data-testid='stPlotlyChart'] .js-plotly-plot").first
    expect(chart).to_be_visible()
    wait_idle(page)
    count = ("([lo, hi]) => { const d = document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot')"
             "._fullData.find(t => t.meta && t.meta.kind === 'raw'); const xs = Array.from(d.x);"
             " return [xs.length, xs.filter(x => x >= lo && x <= hi).length, Math.min(...xs), Math.max(...xs)]; }")
    total, _, first, last = page.evaluate(count, [0, 0])
    assert total <= 2100 and (first, last) == (1, 30_000)  # the whole run, reduced to its shape
    screenshot(page, "10-compare-long-run")

    plot = chart.locator(".nsewdrag").first  # Plotly's drag layer over the plot area
    box = plot.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.40, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.41, y, steps=8)
    page.mouse.move(box["x"] + box["width"] * 0.42, y, steps=4)
    page.mouse.up()
    expect(page.get_by_text(re.compile(r"^Steps [\d,]+ to [\d,]+, every point"))).to_be_visible()
    wait_idle(page)
    zoomed, inside, lo, hi = page.evaluate(count, [0, 10**9])
    assert 11_000 < lo < hi < 13_500 and zoomed == hi - lo + 1  # every step of the range
    overview_inside = round(total * (hi - lo) / 30_000) + 8
    assert zoomed > overview_inside  # more points there than the overview had
    screenshot(page, "11-compare-zoomed")

    page.get_by_role("button", name="Whole run").click()
    expect(page.get_by_text(re.compile(r"^The whole run"))).to_be_visible()
    wait_idle(page)
    assert page.evaluate(count, [0, 0])[0] == total


def test_proving_a_fix_from_the_run_view(page, server, shots):
    """article-relu-sigmoid: its top finding is the ReLU before the sigmoid; one click trains the run's config and
    the fix (no output ReLU) over three seeds in the background, and the view says the fix helped, with a CI."""
    base, db_url = server
    done = subprocess.run([sys.executable, "-m", "core", "--db", db_url, "train", "--preset", "article-relu-sigmoid",
                           "--epochs", "5", "--json"], cwd=PROJECT_ROOT, check=True, capture_output=True, text=True)
    run_id = __import__("json").loads(done.stdout)["id"]
    page.goto(f"{base}/runs?run={run_id}")
    expect(page.get_by_role("heading", name=f"#{run_id} article-relu-sigmoid")).to_be_visible()
    expect(page.get_by_text("Cause: a ReLU before the sigmoid")).to_be_visible()
    page.get_by_role("button", name=re.compile(r"^Prove the fix: output_relu=false")).first.click()
    verdict = page.get_by_text(re.compile(r"^The fix helped: output_relu=false lowered the exact validation loss"))
    expect(verdict).to_be_visible(timeout=240_000)
    expect(page.get_by_text(re.compile(r"95% CI .* 3 seeds"))).to_be_visible()
    screenshot(page, "12-runs-fix-proved")
    with Store(db_url) as store:
        assert len([r for r in store.list_runs() if f"fix:{run_id}" in r.tags]) == 6


def test_the_train_form_survives_a_visit_to_another_page_and_refuses_inexact_integers(page, server):
    base, db_url = server
    page.goto(f"{base}/train")
    lr = page.get_by_role("textbox", name="lr")
    lr.fill("0.05")
    lr.press("Enter")
    name = page.get_by_role("textbox", name="Run name")
    name.fill("kept across pages")
    name.press("Enter")
    wait_idle(page)
    page.get_by_role("link", name="Runs", exact=True).first.click()
    wait_idle(page)
    page.get_by_role("link", name="Train", exact=True).first.click()
    wait_idle(page)
    expect(page.get_by_role("textbox", name="lr")).to_have_value("0.05")
    expect(page.get_by_role("textbox", name="Run name")).to_have_value("kept across pages")
    # past 2**53 the browser cannot hold the integer: the field is marked invalid, where it had looked taken
    # (and the run got the last seed it could hold)
    seed = page.get_by_role("spinbutton", name="seed", exact=True)
    seed.fill("9007199254740993")
    seed.press("Enter")
    wait_idle(page)
    expect(seed).to_have_attribute("aria-invalid", "true")
    seed.fill("5")
    seed.press("Enter")
    wait_idle(page)
    expect(seed).not_to_have_attribute("aria-invalid", "true")
