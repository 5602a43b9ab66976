"""The dashboard under Streamlit's AppTest: every page on an empty and a populated store, the train form's
validation, the live panel, editing and deleting runs, and the Compare chart built from `?runs=`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import PROJECT_ROOT
from core.reporting import MetricRow
from core.store import Store

APP = str(PROJECT_ROOT / "app.py")
PAGES = ["pages/overview.py", "pages/train.py", "pages/runs.py", "pages/compare.py"]
TIMEOUT = 60


def open_page(page: str, *, query: dict | None = None, state: dict | None = None) -> AppTest:
    """The app on `page`, run once, with `query` as the URL's query parameters and `state` seeded."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    at.run()
    if page != "pages/overview.py":
        for key, value in (state or {}).items():
            at.session_state[key] = value
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def text_of(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def widget(at: AppTest, kind: str, key: str):
    found = [w for w in getattr(at, kind) if w.key == key]
    assert found, f"no {kind} with key {key!r}"
    return found[0]


# ---------------------------------------------------------------------- every page
@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_an_empty_store(empty_url, page):
    at = open_page(page)
    if page != "pages/train.py":  # the train form is its own first step
        assert "No runs yet" in text_of(at.info) or "Nothing to compare yet" in text_of(at.info)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_a_populated_store(populated_url, page):
    open_page(page)


def test_pages_do_not_import_torch():
    """Pages import only core modules that leave torch out (the dashboard starts fast and needs no GPU)."""
    allowed = {"core", "core.charts", "core.cli", "core.config", "core.findings", "core.runner", "core.store",
               "core.views"}
    for page in [Path(APP), *(PROJECT_ROOT / p for p in PAGES)]:
        tree = ast.parse(page.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("core", "torch"):
                modules = {node.module} if node.module != "core" else {f"core.{a.name}" for a in node.names}
                assert modules <= allowed, (page.name, modules)
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in ("torch", "core") for a in node.names), page.name
    code = ("import sys; import " + ", ".join(sorted(allowed - {"core"})) +
            "; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)


# ---------------------------------------------------------------------- overview
def test_overview_counts_the_runs_and_lists_the_latest(populated_url):
    at = open_page("pages/overview.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Runs"] == "4" and metrics["Finished"] == "4"
    latest = at.dataframe[0].value
    assert list(latest["name"]) == ["mlp-bn-logits seed 1", "mlp-bn-logits", "article-fixed", "article-example"]
    assert {b.key for b in at.button} >= {"overview_launch_article-example", "overview_launch_article-fixed"}


# ---------------------------------------------------------------------- train
def test_train_form_is_prefilled_from_the_preset(empty_url):
    at = open_page("pages/train.py")
    assert widget(at, "selectbox", "train_preset").value == "article-example"
    assert widget(at, "selectbox", "train_field_dataset").value == "random"
    assert widget(at, "checkbox", "train_field_output_relu").value is True
    widget(at, "selectbox", "train_preset").set_value("mlp-bn-logits").run()
    assert widget(at, "text_input", "train_field_hidden").value == "64, 64"
    assert widget(at, "checkbox", "train_field_batchnorm").value is True
    assert widget(at, "number_input", "train_field_epochs").value == 30


def test_train_form_shows_field_errors_and_starts_nothing(empty_url):
    at = open_page("pages/train.py")
    widget(at, "text_input", "train_field_lr").set_value("abc")
    widget(at, "number_input", "train_field_epochs").set_value(0)
    at.run()
    errors = text_of(at.error)
    assert "'abc' is not a finite number" in errors  # shown as soon as the value is entered
    assert "must be a whole number from 1" in errors
    widget(at, "button", "train_launch").click().run()
    assert not at.exception
    assert "Nothing was started: `lr`, `epochs` need fixing" in text_of(at.error)
    with Store(empty_url) as store:
        assert store.list_runs() == []


def test_train_form_checks_an_uploaded_csv(empty_url, tmp_path):
    at = open_page("pages/train.py")
    widget(at, "selectbox", "train_field_dataset").set_value("csv").run()
    assert "dataset 'csv' needs the path of a CSV file" in text_of(at.error)
    at.file_uploader[0].set_value(("one class.csv", b"a,b,label\n1,2,0\n3,4,0\n", "text/csv")).run()
    assert not at.exception
    assert "must hold exactly two classes" in text_of(at.error)
    saved = Path(widget(at, "text_input", "train_field_csv_path").value)
    assert saved.parent == Path(empty_url.removeprefix("sqlite:///")).parent / "uploads" and saved.is_file()
    widget(at, "button", "train_launch").click().run()
    with Store(empty_url) as store:
        assert store.list_runs() == []


def test_train_live_panel_shows_progress_and_cancels(empty_url):
    with Store(empty_url) as store:
        run_id = store.create_run(name="live one", config={"epochs": 1})
        store.start_run(run_id, device="cpu", dtype="float32", torch_version="x", total_steps=40)
        store.log_metrics(run_id, [MetricRow("train_loss", s, 0, 0.7 - 0.01 * s, 0.1 * s) for s in range(1, 11)],
                          progress_step=10)
    at = open_page("pages/train.py")
    progress = at.get("progress")
    assert len(progress) == 1 and progress[0].proto.text.startswith("step 10 of 40")
    assert figures(at)[0]["data"][0]["meta"] == {"run_id": run_id, "metric": "train_loss", "kind": "raw"}
    widget(at, "button", f"train_cancel_{run_id}").click().run()
    with Store(empty_url) as store:
        assert store.get_run(run_id).cancel_requested
    assert "cancelling" in text_of(at.caption)


# ---------------------------------------------------------------------- runs
def test_runs_table_lists_every_run_and_filters(populated_url):
    at = open_page("pages/runs.py")
    table = at.dataframe[0].value
    assert len(table) == 4 and {"status", "final_val_loss", "hidden", "batchnorm", "lr"} <= set(table.columns)
    widget(at, "text_input", "runs_search").set_value("seed").run()
    assert list(at.dataframe[0].value["name"]) == ["mlp-bn-logits seed 1"]
    widget(at, "text_input", "runs_search").set_value("").run()
    widget(at, "multiselect", "runs_filter_loss").set_value(["bce"]).run()
    assert list(at.dataframe[0].value["name"]) == ["article-example"]


def test_opening_one_run_shows_config_metrics_and_findings(populated_url, populated_store):
    run = next(r for r in populated_store.list_runs() if r.name == "article-example")
    at = open_page("pages/runs.py", state={"runs_selected": [run.id]})
    assert [h.value for h in at.header] == [f"#{run.id} article-example"]
    assert "Every prediction is ≥ 0.5: a ReLU before the sigmoid" in text_of(at.error)
    assert "labels are random" in text_of(at.info)
    (figure,) = figures(at)
    assert {t["meta"]["metric"] for t in figure["data"]} == set(populated_store.metric_keys(run.id))
    config = next(d.value for d in at.dataframe if "field" in d.value.columns)
    assert len(config) == 32 and config.set_index("field").loc["output_relu", "value"] == "True"


def test_runs_are_renamed_tagged_and_noted_in_place(populated_url, populated_store):
    at = open_page("pages/runs.py", state={"runs_selected": [2]})
    editor = at.data_editor[0]
    at.session_state[editor.key] = {"edited_rows": {0: {"name": "fixed", "tags": ["keep", " keep ", "x"],
                                                        "notes": "good"}},
                                    "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception
    run = populated_store.get_run(2)
    assert (run.name, run.tags, run.notes) == ("fixed", ("keep", "x"), "good")
    assert "fixed" in list(at.dataframe[0].value["name"])


def test_delete_asks_first(populated_url, populated_store):
    at = open_page("pages/runs.py", state={"runs_selected": [1, 3]})
    widget(at, "button", "runs_delete").click().run()
    assert "cannot be undone" in text_of(at.markdown)
    widget(at, "button", "runs_delete_cancel").click().run()
    assert len(populated_store.list_runs()) == 4
    widget(at, "button", "runs_delete").click().run()
    widget(at, "button", "runs_delete_confirm").click().run()
    assert not at.exception
    assert [r.id for r in populated_store.list_runs()] == [4, 2]
    assert len(at.dataframe[0].value) == 2


# ---------------------------------------------------------------------- compare
def test_compare_builds_the_chart_for_the_runs_in_the_url(populated_url):
    at = open_page("pages/compare.py", query={"runs": "1,2"})
    assert widget(at, "multiselect", "compare_runs").value == [1, 2]
    (figure,) = figures(at)
    traces = {(t["meta"]["run_id"], t["meta"]["metric"], t["meta"]["kind"]) for t in figure["data"]}
    assert traces == {(1, "train_loss", "raw"), (1, "val_loss", "raw"), (2, "train_loss", "raw"),
                      (2, "val_loss", "raw")}
    assert {t["name"] for t in figure["data"]} == {"#1 article-example · train_loss", "#1 article-example · val_loss",
                                                   "#2 article-fixed · train_loss", "#2 article-fixed · val_loss"}
    summary = at.dataframe[0].value
    assert list(summary.index) == [1, 2] and list(summary["name"]) == ["article-example", "article-fixed"]


def test_compare_settings_change_the_traces(populated_url):
    at = open_page("pages/compare.py", query={"runs": "1,2,3,4"})
    widget(at, "slider", "compare_opt_smoothing").set_value(0.6).run()
    kinds = {t["meta"]["kind"] for t in figures(at)[0]["data"]}
    assert kinds == {"raw", "smoothed"}
    widget(at, "multiselect", "compare_opt_metrics").set_value(["train_loss"]).run()
    widget(at, "multiselect", "compare_opt_group").set_value(["dataset"]).run()
    data = figures(at)[0]["data"]
    assert {t["meta"]["kind"] for t in data} == {"mean", "band"}
    groups = {t["meta"]["group"]: sorted(t["meta"]["run_ids"]) for t in data if t["meta"]["kind"] == "mean"}
    assert groups == {"dataset=gaussian": [2], "dataset=moons": [3, 4], "dataset=random": [1]}
    widget(at, "radio", "compare_opt_layout").set_value("field").run()
    assert not at.exception


def test_compare_reports_bad_and_unknown_ids(populated_url):
    at = open_page("pages/compare.py", query={"runs": "2,abc,99"})
    warnings = text_of(at.warning)
    assert "'abc' is not a run id" in warnings and "no run #99" in warnings
    assert widget(at, "multiselect", "compare_runs").value == [2]
    assert {t["meta"]["run_id"] for t in figures(at)[0]["data"]} == {2}


def test_compare_without_a_selection_says_what_to_do(populated_url):
    at = open_page("pages/compare.py")
    assert "Pick runs above" in text_of(at.info)
    assert not at.get("plotly_chart")


def test_picking_runs_puts_them_in_the_url(populated_url):
    at = open_page("pages/compare.py")
    widget(at, "multiselect", "compare_runs").set_value([3, 1]).run()
    assert at.query_params["runs"] == "3,1"
    assert {t["meta"]["run_id"] for t in figures(at)[0]["data"]} == {1, 3}
