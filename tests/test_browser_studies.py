"""A study launched from the Studies page in a real browser (the server, browser and helpers of test_browser.py):
on an empty database, the canonical study trimmed to 2 fields x 2 values x 2 seeds of one epoch is launched,
watched until every run has finished, and read: the curves grouped by variant and the effects in words; back on the
form, the same grid resumes the study with nothing left to train.
Screenshots go to test-artifacts/screenshots/ (9-studies-launch.png, 10-study-view.png)."""

from __future__ import annotations

import re

import pytest
from test_browser import CHROMIUM, SCREENSHOTS, page, screenshot, server, wait_idle  # noqa: F401 - fixtures

from core.store import Store

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} for the browser test")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect
STUDY_TIMEOUT_MS = 180_000  # eight one-epoch runs on two workers take about 15 s; a loaded CI machine, longer


def set_number(page, name: str, value: int) -> None:
    box = page.get_by_role("spinbutton", name=name, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def test_launch_a_study_and_read_what_mattered(page, server):  # noqa: F811 - fixtures
    base, db_url = server
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    # No study yet: the form opens with the canonical study filled in
    page.goto(base)  # the first request of a server goes to the router (see app.py)
    expect(page.get_by_role("heading", name="Lossboard")).to_be_visible()
    page.goto(f"{base}/studies")
    expect(page.get_by_role("heading", name="Studies", exact=True)).to_be_visible()
    count = page.locator(".st-key-studies_run_count")
    expect(count).to_contain_text("24 runs: 8 variants × 3 seeds")

    # Trim it to batchnorm x loss, 2 seeds of one epoch: the run count follows before anything starts
    page.locator(".st-key-studies_vary").get_by_role("button", name="Remove activation").click()
    wait_idle(page)
    expect(count).to_contain_text("12 runs: 4 variants × 3 seeds")
    set_number(page, "Seeds", 2)
    set_number(page, "Workers", 2)
    set_number(page, "epochs", 1)
    expect(count).to_contain_text("8 runs: 4 variants × 2 seeds, on 2 workers")
    expect(count).to_contain_text("Trains as 2 batched models of 4 runs each, side by side.")
    screenshot(page, "9-studies-launch")
    with Store(db_url) as store:
        assert store.list_studies() == []

    # Launch: the page turns to the new study and follows it until every run has finished
    page.locator(".st-key-studies_launch button").click()
    progress = page.locator(".st-key-studies_progress")
    expect(progress.get_by_text("All 8 runs finished.")).to_be_visible(timeout=STUDY_TIMEOUT_MS)
    expect(page.locator(".st-key-studies_cancel")).to_have_count(0)  # no longer training: no Cancel
    expect(page.get_by_role("combobox", name="Study")).to_have_value(re.compile(r"· 8/8 done$"))
    with Store(db_url) as store:
        (study,) = store.list_studies()
        runs = store.list_runs(study_id=study.id)
    assert study.spec["vary"] == {"batchnorm": [False, True], "loss": ["bce", "bce_with_logits"]}
    assert study.name.startswith("batchnorm x loss on breast_cancer")  # no longer the built-in grid: its own name
    assert len(runs) == 8 and {r.status for r in runs} == {"finished"} and f"study={study.id}" in page.url

    # The answer in words, and one mean line (with its band) per variant
    words = page.locator(".st-key-studies_effects_words")
    expect(words).to_contain_text("BatchNorm")
    expect(words).to_contain_text("instead of bce")
    chart = page.locator(".st-key-studies_chart .js-plotly-plot")
    expect(chart).to_be_visible()
    metric = page.get_by_role("combobox", name="Metric")  # one epoch: val_loss is a single point, train_loss a curve
    metric.click()
    metric.fill("train_loss")  # filters the options to train_loss and train_loss_logits; Enter takes the first
    expect(page.get_by_role("option", name="train_loss", exact=True)).to_be_visible()
    metric.press("Enter")
    wait_idle(page)
    expect(chart.locator(".gtitle").filter(has_text=re.compile(r": train_loss$"))).to_have_count(1)
    legend = chart.locator(".legend .traces")
    expect(legend).to_have_count(4)
    assert "batchnorm=false, loss=bce (n=2)" in " ".join(legend.all_text_contents())
    expect(page.get_by_role("link", name="Open these 8 runs in Compare")).to_be_visible()
    screenshot(page, "10-study-view")

    # Back to the form, which kept its values: the same grid resumes this study, and has nothing left to train
    page.locator(".st-key-studies_mode").get_by_text("New study", exact=True).click()
    wait_idle(page)
    expect(count).to_contain_text(f"8 runs: 4 variants × 2 seeds, on 2 workers · resumes study #{study.id}, "
                                  "0 left to train")
    expect(count).to_contain_text("Nothing left to train: every run of this grid has a result or is running.")
