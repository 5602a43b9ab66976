"""The dashboard under Streamlit's AppTest: every page on an empty and a populated store, the train form's
validation, the live panel, editing and deleting runs, the Compare chart built from `?runs=`, and the export
buttons of Compare and of one run (their files are made when clicked: the tests call what a click would)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from core import PROJECT_ROOT
from core.presentation import export, formatting, run_tables
from core.store import Store
from core.training.reporting import MetricRow

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


def figures(at: AppTest, *, reliability: bool = False) -> list[dict]:
    """The page's Plotly charts; the run view's reliability chart only with `reliability` (alone then)."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return [s for s in specs if reliability == any(t.get("meta", {}).get("kind") == "diagonal" for t in s["data"])]


def text_of(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def widget(at: AppTest, kind: str, key: str):
    found = [w for w in getattr(at, kind) if w.key == key]
    assert found, f"no {kind} with key {key!r}"
    return found[0]


@pytest.fixture
def deferred(monkeypatch) -> dict:
    """file id -> (file name, mime type, callable) of every download whose file is made on click."""
    made: dict = {}
    register = MediaFileManager.add_deferred

    def record(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        file_id = register(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)
        made[file_id] = (file_name, mimetype, data_callable)
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    return made


def click_download(at: AppTest, deferred: dict, key: str) -> tuple[str, str, bytes]:
    """What the browser gets when the download button `key` is clicked: (file name, mime type, data)."""
    button = widget(at, "download_button", key)
    assert button.proto.deferred_file_id and not button.proto.url, "made on click, not with the page"
    file_name, mime, make = deferred[button.proto.deferred_file_id]
    return file_name, mime, make()


# ---------------------------------------------------------------------- every page
@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_an_empty_store(empty_url, page):
    at = open_page(page)
    if page != "pages/train.py":  # the train form is its own first step
        assert "No runs yet" in text_of(at.info) or "Nothing to compare yet" in text_of(at.info)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_a_populated_store(populated_url, page):
    open_page(page)


def test_a_store_that_cannot_be_opened_is_said_on_the_page_and_left_alone(tmp_path, monkeypatch):
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("hello\n")
    monkeypatch.setenv("LOSSBOARD_DB", str(not_a_db))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "cannot open its run store" in text_of(at.error) and "file is not a database" in text_of(at.error)
    assert not_a_db.read_text() == "hello\n"


def test_pages_do_not_import_torch():
    """Every core module the app and its pages import leaves torch out (the dashboard starts fast and needs no GPU).
    The import-linter contract (tests/test_layers.py) checks the same statically; this imports them for real."""
    modules = set()
    for page in [Path(APP), *(PROJECT_ROOT / p for p in PAGES)]:
        tree = ast.parse(page.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("core", "torch"):
                assert node.module.split(".")[0] == "core", page.name
                modules |= {node.module} if node.module.count(".") > 0 and node.module != "core.presentation" \
                    else {f"{node.module}.{a.name}" for a in node.names if a.name[0].islower()}
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in ("torch", "core") for a in node.names), page.name
    assert "core.presentation.charts" in modules and "core.store" in modules, modules
    code = ("import sys; import " + ", ".join(sorted(m for m in modules if m != "core.PROJECT_ROOT")) +
            "; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)


# ---------------------------------------------------------------------- overview
def test_overview_counts_the_runs_and_lists_the_latest(populated_url):
    at = open_page("pages/overview.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Runs"] == "4" and metrics["Finished"] == "4"
    latest = at.dataframe[0].value
    assert list(latest["name"]) == ["mlp-bn-logits seed 1", "mlp-bn-logits", "article-fixed", "article-example"]
    assert at.dataframe[0].proto.placeholder == "–"  # a diverged run's missing numbers, not "None"
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
    at.run()  # a rerun, as the live panel's when any run starts or ends: the message stays while fields are bad
    assert "Nothing was started: `lr`, `epochs` need fixing" in text_of(at.error)
    widget(at, "text_input", "train_field_lr").set_value("0.01")
    widget(at, "number_input", "train_field_epochs").set_value(2).run()
    assert "Nothing was started" not in text_of(at.error)  # fixed: it goes


def test_train_form_refuses_a_run_name_the_store_would_refuse(empty_url):
    """A pasted tab is said under the name and starts nothing (the box takes at most 255 characters); the store
    raised on it before, a traceback on the page."""
    at = open_page("pages/train.py")
    widget(at, "text_input", "train_name").set_value("a\tb").run()
    assert "Run name must not contain control characters such as a newline or a tab" in text_of(at.error)
    widget(at, "button", "train_launch").click().run()
    assert not at.exception and "Nothing was started: `Run name` needs fixing" in text_of(at.error)
    with Store(empty_url) as store:
        assert store.list_runs() == []
    widget(at, "text_input", "train_name").set_value("fine").run()
    assert not at.error


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
        store.finish_run(run_id, status="cancelled", summary={}, error="cancelled on request")
    at.session_state["train_launched"] = [run_id]  # as if launched here: the panel keeps it when it ends
    at.run()  # ended: its card links to its view
    (link,) = at.get("page_link")
    assert link.proto.page == "runs" and link.proto.query_string == f"run={run_id}"


# ---------------------------------------------------------------------- runs
def test_runs_table_lists_every_run_and_filters(populated_url):
    at = open_page("pages/runs.py")
    table = at.dataframe[0].value
    assert len(table) == 4 and {"status", "final_val_loss", "hidden", "batchnorm", "lr"} <= set(table.columns)
    stored = {r.name: r.summary["final_val_acc"] for r in Store(populated_url).list_runs()}
    # shares shown as percentages, one decimal each (Streamlit's "percent" wrote "92%" beside "40.63%")
    assert dict(zip(table["name"], table["final_val_acc"])) == pytest.approx({k: 100 * v for k, v in stored.items()})
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
    assert "labels are random" in text_of(at.warning)
    (reliability,) = figures(at, reliability=True)  # the validation calibration curve, under the metrics
    assert reliability["data"][1]["meta"] == {"kind": "reliability"}
    (figure,) = figures(at)
    assert {t["meta"]["metric"] for t in figure["data"]} == set(populated_store.metric_keys(run.id))
    config = next(d.value for d in at.dataframe if "field" in d.value.columns)
    assert len(config) == 34 and config.set_index("field").loc["output_relu", "value"] == "True"


def test_a_link_to_one_run_opens_its_view(populated_url, populated_store):
    """/runs?run=ID opens that run's view, name, config, metrics and findings, even past filters that hide it."""
    run = next(r for r in populated_store.list_runs() if r.name == "article-example")
    at = open_page("pages/runs.py", query={"run": str(run.id)}, state={"runs_search": "no such run"})
    assert [h.value for h in at.header] == [f"#{run.id} article-example"]
    assert "Every prediction is ≥ 0.5: a ReLU before the sigmoid" in text_of(at.error)
    (figure,) = figures(at)
    assert {t["meta"]["metric"] for t in figure["data"]} == set(populated_store.metric_keys(run.id))
    config = next(d.value for d in at.dataframe if "field" in d.value.columns)
    assert config.set_index("field").loc["output_relu", "value"] == "True"
    assert widget(at, "text_input", "runs_search").value == ""  # the filter that hid it was cleared
    assert at.query_params["run"] == str(run.id)


def test_choosing_a_run_puts_it_in_the_url(populated_url, populated_store):
    run = next(r for r in populated_store.list_runs() if r.name == "article-example")
    at = open_page("pages/runs.py", state={"runs_selected": [run.id]})
    assert at.query_params["run"] == str(run.id)  # ticking rows is in the browser test (AppTest cannot click them)


@pytest.mark.parametrize("commas", [False, True])
def test_a_run_link_that_names_two_runs_says_so_and_points_to_compare(populated_url, populated_store, commas):
    a, b = [str(r.id) for r in populated_store.list_runs()[:2]]
    at = open_page("pages/runs.py", query={"run": f"{a},{b}" if commas else [a, b]})
    assert not at.exception
    assert f"it names 2 runs ({a}, {b})" in text_of(at.warning) and f"/compare?runs={a},{b}" in text_of(at.warning)
    assert not at.header  # no run view: which one was meant is not known


def test_a_run_name_with_markup_is_shown_as_written(populated_url, populated_store):
    run_id = populated_store.list_runs()[0].id
    with Store(populated_url) as store:
        store.rename_run(run_id, "qa **bold** $x$")
    at = open_page("pages/runs.py", query={"run": str(run_id)})
    # escaped for markdown: the page shows the asterisks and dollars, not bold text and LaTeX
    assert at.header[0].value == f"#{run_id} qa \\*\\*bold\\*\\* \\$x\\$"


@pytest.mark.parametrize("value, message", [("99", "no run #99: deleted, or from another database"),
                                            ("abc", "'abc' is not a run id: use a number, e.g. ?run=3"),
                                            # digits to str.isdigit, not to int(): these crashed the page
                                            ("²", "'²' is not a run id"), ("①", "'①' is not a run id"),
                                            ("٣", "'٣' is not a run id")])
def test_a_bad_run_link_says_what_is_wrong(populated_url, value, message):
    at = open_page("pages/runs.py", query={"run": value})
    assert message in text_of(at.warning)
    assert not at.header  # no run view
    assert at.query_params["run"] == value  # the link stays as given, beside the message


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


def test_an_edit_that_clears_tags_and_notes_can_be_undone(populated_url, populated_store):
    """Ctrl+A then Delete in the grid clears every selected run's tags and notes, saved at once: Undo puts them
    back (found by QA in Chromium: nothing confirmed or undid it)."""
    for run_id in (1, 3):
        populated_store.set_tags(run_id, ["keep"])
        populated_store.set_notes(run_id, "important")
    at = open_page("pages/runs.py", state={"runs_selected": [1, 3]})
    editor = at.data_editor[0]
    at.session_state[editor.key] = {"edited_rows": {0: {"tags": None, "notes": None}, 1: {"tags": None,
                                                                                          "notes": None}},
                                    "added_rows": [], "deleted_rows": []}
    at.run()
    assert [(populated_store.get_run(i).tags, populated_store.get_run(i).notes) for i in (1, 3)] == [((), "")] * 2
    assert "Saved the tags, notes of runs #" in text_of(at.caption)
    widget(at, "button", "runs_undo_button").click().run()
    assert not at.exception
    assert [(populated_store.get_run(i).tags, populated_store.get_run(i).notes) for i in (1, 3)] == \
        [(("keep",), "important")] * 2
    assert not [b for b in at.button if b.key == "runs_undo_button"]  # one undo: the edit is gone
    assert sorted(at.data_editor[0].value["notes"]) == ["important", "important"]


def test_a_filter_value_no_run_has_any_more_is_dropped(populated_url, populated_store):
    """Filtering on a value, then deleting its last run, left the filter on, unseen (its box cannot show a value
    no run has), hiding every run: "0 of 168 runs · 1 config filter(s) on"."""
    options = run_tables.filter_options(populated_store.list_runs())
    field = next(iter(options))
    at = open_page("pages/runs.py", state={f"runs_filter_{field}": ["gone"], "runs_filter_nosuchfield": ["x"]})
    assert not at.exception
    assert "4 of 4 runs" in text_of(at.caption) and "filter(s) on" not in text_of(at.caption)
    assert at.session_state[f"runs_filter_{field}"] == []
    kept = options[field][0]
    at.session_state[f"runs_filter_{field}"] = [kept, "gone"]
    at.run()  # a value some run has stays
    assert at.session_state[f"runs_filter_{field}"] == [kept] and "1 config filter(s) on" in text_of(at.caption)


def test_a_run_whose_process_dies_later_in_the_session_shows_interrupted(populated_url, populated_store):
    """The check for dead training processes ran once a browser session (and on Train and Studies): a run killed
    after the first page stayed "running" on Overview and Runs."""
    import socket
    import subprocess
    import sys

    at = open_page("pages/overview.py")
    ghost = populated_store.create_run(name="ghost", config={})
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    populated_store.attach_process(ghost, pid=proc.pid, host=socket.gethostname())  # a running run, its process gone
    at.session_state["app_refreshed"] -= 60  # the last look a minute ago (one query a page run at most every 3 s)
    at.run()  # the app's router runs (AppTest's switch_page runs the page alone)
    assert not at.exception and populated_store.get_run(ghost).status == "interrupted"


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


# ---------------------------------------------------------------------- export
COMPARE_EXPORTS = ["png", "svg", "pdf", "html", "csv", "parquet", "summary", "differences", "report"]


def test_compare_offers_every_export_and_the_csv_is_the_stored_series(populated_url, populated_store, deferred):
    at = open_page("pages/compare.py", query={"runs": "1,2"})
    assert [b.key for b in at.download_button] == [f"compare_export_{k}" for k in COMPARE_EXPORTS]
    assert [b.label for b in at.download_button] == ["PNG", "SVG", "PDF", "HTML (interactive)", "Data (CSV)",
                                                     "Data (Parquet)", "Summary (CSV)", "Config differences (CSV)",
                                                     "Report (HTML)"]
    assert [(n.key, n.value) for n in at.number_input if n.key.startswith("compare_opt_export")] == [
        ("compare_opt_export_width", 1000), ("compare_opt_export_height", None), ("compare_opt_export_scale", 2.0)]
    name, mime, data = click_download(at, deferred, "compare_export_csv")
    assert data.decode("utf-8") == export.series_csv(populated_store, [1, 2], ["train_loss", "val_loss"])
    assert (name, mime) == ("train_loss_val_loss_article-example_vs_article-fixed.csv", "text/csv")
    name, mime, data = click_download(at, deferred, "compare_export_report")
    assert (name, mime) == ("article-example_vs_article-fixed_report.html", "text/html")
    assert "<title>article-example vs article-fixed</title>" in data.decode("utf-8")
    name, _, data = click_download(at, deferred, "compare_export_summary")
    assert name == "article-example_vs_article-fixed_summary.csv" and data.decode().startswith("id,name,status")


def test_compare_exports_follow_the_page_settings(populated_url, populated_store, deferred):
    at = open_page("pages/compare.py", query={"runs": "1,2"})
    widget(at, "multiselect", "compare_opt_metrics").set_value(["val_loss"]).run()
    name, _, data = click_download(at, deferred, "compare_export_csv")
    assert name == "val_loss_article-example_vs_article-fixed.csv"
    assert data.decode() == export.series_csv(populated_store, [1, 2], ["val_loss"])
    widget(at, "slider", "compare_opt_smoothing").set_value(0.6).run()
    page = click_download(at, deferred, "compare_export_html")[2].decode()
    traces = [t["meta"]["kind"] for t in figures(at)[0]["data"]]
    assert page.count('"kind":"smoothed"') == traces.count("smoothed") == 2, "the file holds the page's figure"
    assert "smoothing 0.6" in click_download(at, deferred, "compare_export_report")[2].decode()


@pytest.mark.skipif(export.find_browser() is None, reason="no Chromium/Chrome for Kaleido: apt-get install chromium")
def test_compare_png_has_the_chosen_size(populated_url, deferred):
    at = open_page("pages/compare.py", query={"runs": "1,2"})
    widget(at, "number_input", "compare_opt_export_width").set_value(600)
    widget(at, "number_input", "compare_opt_export_height").set_value(300)
    widget(at, "number_input", "compare_opt_export_scale").set_value(1.5).run()
    name, mime, data = click_download(at, deferred, "compare_export_png")
    assert (name, mime) == ("train_loss_val_loss_article-example_vs_article-fixed.png", "image/png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (900, 450)


def test_compare_without_chromium_says_what_to_install_and_keeps_html_and_csv(populated_url, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    at = open_page("pages/compare.py", query={"runs": "1,2"})
    assert "apt-get install chromium" in text_of(at.warning)
    assert [b.key for b in at.download_button] == [f"compare_export_{k}" for k in COMPARE_EXPORTS[3:]]
    assert not [n for n in at.number_input if n.key.startswith("compare_opt_export")]


def test_one_run_offers_its_chart_and_every_metric(populated_url, populated_store, deferred):
    at = open_page("pages/runs.py", state={"runs_selected": [2]})
    assert [b.key for b in at.download_button] == [f"runs_export_2_{k}" for k in ("png", "svg", "pdf", "html", "csv", "parquet", "report")]
    name, mime, data = click_download(at, deferred, "runs_export_2_csv")
    assert (name, mime) == ("2_article-fixed.csv", "text/csv")
    assert data.decode() == export.series_csv(populated_store, [2])
    page = click_download(at, deferred, "runs_export_2_html")[2].decode()
    assert "<title>article-fixed</title>" in page and export.external_references(page) == []
    name, mime, data = click_download(at, deferred, "runs_export_2_report")
    assert (name, mime) == ("2_article-fixed_report.html", "text/html")
    assert "<h1>#2 article-fixed</h1>" in data.decode() and '<section id="findings">' in data.decode()


# ---------------------------------------------------------------------- studies
import sqlite3  # noqa: E402

from core.jobs import runner
from core.experiment.config import ExperimentConfig  # noqa: E402
from core.analysis.statistics import study_statistics  # noqa: E402
from core.jobs.scheduler import run_study  # noqa: E402
from core.jobs.spec import StudySpec
from core.jobs.studies import study_frame

STUDIES_PAGE = "pages/studies.py"
SMALL_BASE = ExperimentConfig(epochs=1, n_samples=200, hidden=(4,)).to_dict()


@pytest.fixture(scope="session")
def study_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding one finished 2 x 2 x 2-seed study, trained once per test session."""
    path = tmp_path_factory.mktemp("study") / "study.db"
    with Store(f"sqlite:///{path}") as store:
        run_study(store, StudySpec(name="t", base=SMALL_BASE, vary={"batchnorm": [False, True],
                                                                    "loss": ["bce", "bce_with_logits"]}, seeds=2),
                  workers=2)
    return path


@pytest.fixture
def study_url(study_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "study.db"
    with sqlite3.connect(study_template) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("LOSSBOARD_DB", url)
    return url


def test_runs_filter_by_study(study_url):
    """A study's runs, and no other, with the Study filter; it lists the studies by id and name."""
    with Store(study_url) as store:
        loose = store.create_run(name="t: batchnorm=False loss=bce seed=0 (copy)", config=dict(SMALL_BASE),
                                 status="finished")
    at = open_page("pages/runs.py")
    box = widget(at, "multiselect", "runs_filter_study")
    assert box.options == ["#1 t"] and len(at.dataframe[0].value) == 9
    box.set_value([1]).run()
    shown = at.dataframe[0].value
    assert len(shown) == 8 and loose not in list(shown.index)
    assert "8 of 9 runs" in text_of(at.caption)


def fill_small_study(at: AppTest, *, seeds: int = 1) -> None:
    """The form, for a study of 2 runs that trains in seconds: the output ReLU off/on, one epoch of 200 samples
    (article-fixed has no hidden layer, so varying batchnorm there is refused)."""
    widget(at, "selectbox", "studies_start").set_value("preset:article-fixed").run()
    widget(at, "multiselect", "studies_vary").set_value(["output_relu"]).run()
    widget(at, "number_input", "studies_base_epochs").set_value(1)
    widget(at, "number_input", "studies_base_n_samples").set_value(200)
    widget(at, "number_input", "studies_seeds").set_value(seeds).run()


def test_studies_page_on_an_empty_store_opens_the_form(empty_url):
    at = open_page(STUDIES_PAGE)
    assert widget(at, "button_group", "studies_mode").value == "launch"
    assert widget(at, "selectbox", "studies_start").value == "study:bn-act-loss"
    assert widget(at, "multiselect", "studies_vary").value == ["batchnorm", "activation", "loss"]
    assert "**24 runs**: 8 variants × 3 seeds" in text_of(at.markdown)
    widget(at, "button_group", "studies_mode").set_value("view").run()
    assert not at.exception and "No studies yet" in text_of(at.info)


def test_run_count_preview_follows_the_form(empty_url):
    at = open_page(STUDIES_PAGE)
    widget(at, "number_input", "studies_seeds").set_value(2).run()
    assert "**16 runs**: 8 variants × 2 seeds" in text_of(at.markdown)
    widget(at, "multiselect", "studies_vary").set_value(["batchnorm", "loss", "lr"]).run()
    assert widget(at, "text_input", "studies_values_lr").value == "0.05"  # starts from the base value
    widget(at, "text_input", "studies_values_lr").set_value("0.01, 0.1, 1").run()
    assert "**24 runs**: 12 variants × 2 seeds" in text_of(at.markdown)
    assert widget(at, "text_input", "studies_base_lr").disabled  # set by the study


def test_bad_vary_input_shows_the_field_error_and_creates_nothing(empty_url):
    at = open_page(STUDIES_PAGE)
    widget(at, "multiselect", "studies_vary").set_value(["lr", "loss"]).run()
    widget(at, "text_input", "studies_values_lr").set_value("0.1, abc")
    widget(at, "multiselect", "studies_values_loss").set_value([]).run()
    errors = text_of(at.error)
    assert "'abc' is not a finite number" in errors and "pick at least one value" in errors
    widget(at, "button", "studies_launch").click().run()
    assert not at.exception
    assert "Nothing was started: `lr`, `loss` need fixing" in text_of(at.error)
    with Store(empty_url) as store:
        assert store.list_studies() == [] and store.list_runs() == []
    widget(at, "text_input", "studies_values_lr").set_value("0.1, 0.2")
    widget(at, "multiselect", "studies_values_loss").set_value(["bce"]).run()
    assert not at.error


def test_a_varied_field_with_no_effect_is_said_on_the_form(empty_url):
    """article-fixed has no hidden layer: varying batchnorm there would train one model twice."""
    at = open_page(STUDIES_PAGE)
    widget(at, "selectbox", "studies_start").set_value("preset:article-fixed").run()
    widget(at, "multiselect", "studies_vary").set_value(["batchnorm"]).run()
    assert "varying it changes nothing here: it acts on hidden layers, and hidden is []" in text_of(at.error)
    widget(at, "button", "studies_launch").click().run()
    assert not at.exception and "Nothing was started: `batchnorm` needs fixing" in text_of(at.error)
    with Store(empty_url) as store:
        assert store.list_studies() == []


@pytest.mark.parametrize("seeds, workers, bad", [(0, 2, "seeds"), (2, 0, "workers"), (101, 2, "seeds"),
                                                  (2, 257, "workers")])
def test_out_of_range_seeds_or_workers_are_said_and_start_nothing(empty_url, seeds, workers, bad):
    """The form's number boxes take any number, so that the page, not the browser, judges it: a box with a minimum
    kept 0 to itself and launched with the last good value."""
    at = open_page(STUDIES_PAGE)
    widget(at, "number_input", "studies_seeds").set_value(seeds)
    widget(at, "number_input", "studies_workers").set_value(workers).run()
    limit = 100 if bad == "seeds" else 256
    given = seeds if bad == "seeds" else workers
    assert f"must be a whole number from 1 to {limit}, got {given}" in text_of(at.error)
    assert "worker" not in text_of(at.markdown) or bad == "seeds"
    widget(at, "button", "studies_launch").click().run()
    assert not at.exception and f"Nothing was started: `{bad}` needs fixing" in text_of(at.error)
    with Store(empty_url) as store:
        assert store.list_studies() == [] and store.list_runs() == []


def test_a_finished_study_shows_its_answer_ranking_and_curves(study_url, deferred):
    at = open_page(STUDIES_PAGE)
    assert widget(at, "button_group", "studies_mode").value == "view"
    assert at.query_params["study"] == "1" and widget(at, "selectbox", "studies_pick").value == 1
    assert [p.proto.text for p in at.get("progress")] == ["All 8 runs finished."]
    with Store(study_url) as store:
        frame = study_frame(store, 1)
    sentences = study_statistics(frame).sentences  # judged on the exact val loss unless the user picks
    shown = text_of(at.markdown)
    assert len(sentences) == 3 and all(formatting.escape_markdown(s) in shown for s in sentences)
    ranking_table, effects_table = (next(d.value for d in at.dataframe if c in d.value.columns)
                                    for c in ("final_val_loss_mean", "difference"))
    assert len(ranking_table) == 4 and list(ranking_table.index) == [1, 2, 3, 4]
    assert list(effects_table["factor"]) == ["batchnorm", "loss"]
    numeric = [d for d in at.dataframe if {"final_val_loss_mean", "difference", "wall_time_s"} & set(d.value.columns)]
    assert len(numeric) == 3 and {d.proto.placeholder for d in numeric} == {"–"}  # missing numbers, not "None"
    (figure,) = figures(at)
    means = {t["meta"]["group"]: len(t["meta"]["run_ids"]) for t in figure["data"] if t["meta"]["kind"] == "mean"}
    assert len(means) == 4 and set(means.values()) == {2}  # one mean line per variant, over its 2 seeds
    (link,) = at.get("page_link")
    assert link.proto.page == "compare" and link.proto.query_string == "runs=" + "%2C".join(map(str, range(1, 9)))
    name, mime, data = click_download(at, deferred, "studies_export_csv_ranking")
    assert (name, mime) == ("t_ranking.csv", "text/csv") and len(data.decode().splitlines()) == 5
    name, _, data = click_download(at, deferred, "studies_export_csv_effects")
    assert name == "t_effects_exact_loss.csv" and data.decode().startswith("factor,level,baseline")
    page = click_download(at, deferred, "studies_export_html")[2].decode()
    assert "<title>t: val_loss</title>" in page and export.external_references(page) == []
    assert [b.key for b in at.download_button][5:] == [f"studies_export_{k}" for k in ("png", "svg", "pdf", "html")] \
        or export.image_export_problem() is not None

    widget(at, "button_group", "studies_judge").set_value("auc").run()
    assert formatting.escape_markdown(study_statistics(frame, "auc").sentences[0]) in text_of(at.markdown)
    widget(at, "button_group", "studies_band").set_value("minmax")
    widget(at, "toggle", "studies_log_y").set_value(True).run()
    assert not at.exception and figures(at)[0]["layout"]["yaxis"]["type"] == "log"


def test_a_study_id_in_the_url_that_does_not_exist_is_reported(study_url):
    at = open_page(STUDIES_PAGE, query={"study": "99"})
    assert "no study #99" in text_of(at.warning) and widget(at, "selectbox", "studies_pick").value == 1
    assert "Showing the newest study, #1." in text_of(at.warning)  # what is on screen, which the link does not say
    assert at.query_params["study"] == "99"  # the link stays as given, so a reload says it again
    at.run()
    assert "no study #99" in text_of(at.warning)


def test_a_study_name_in_the_url_opens_that_study(study_url):
    at = open_page(STUDIES_PAGE, query={"study": "t"})
    assert not at.warning and not at.exception
    assert widget(at, "selectbox", "studies_pick").value == 1 and at.query_params["study"] == "1"


def test_launch_and_resume_run_in_the_background(empty_url):
    at = open_page(STUDIES_PAGE)
    fill_small_study(at)
    assert "**2 runs**: 2 variants × 1 seed" in text_of(at.markdown)
    widget(at, "button", "studies_launch").click().run()
    assert not at.exception
    with Store(empty_url) as store:
        (study,) = store.list_studies()
        assert at.query_params["study"] == str(study.id)
        assert widget(at, "button_group", "studies_mode").value == "view"
        assert runner.wait_study(store, study.id, timeout=180) == 0
        at.run()
        assert [p.proto.text for p in at.get("progress")] == ["All 2 runs finished."]
        first = store.list_runs(study_id=study.id)[0]
        store.delete_run(first.id)  # as if it had never run: Resume trains it again, and only it
        at.run()
        assert [p.proto.text for p in at.get("progress")] == ["1 of 2 runs done · 1 not started"]
        widget(at, "button", "studies_resume").click().run()
        assert runner.wait_study(store, study.id, timeout=180) == 0
        runs = store.list_runs(study_id=study.id)
        assert len(runs) == 2 and {r.status for r in runs} == {"finished"} and first.id not in {r.id for r in runs}


def test_the_studies_page_does_not_import_torch():
    tree = ast.parse((PROJECT_ROOT / STUDIES_PAGE).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    modules |= {f"core.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "core" for a in node.names}
    core_modules = sorted(m for m in modules if m.startswith("core."))
    assert "torch" not in {m.split(".")[0] for m in modules}
    code = f"import sys; import {', '.join(core_modules)}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)


def test_a_study_without_chromium_keeps_its_html_and_csv_exports(study_url, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    at = open_page(STUDIES_PAGE)
    assert "apt-get install chromium" in text_of(at.warning)
    assert [b.key for b in at.download_button] == [
        "studies_export_csv_effects", "studies_export_csv_interactions", "studies_export_csv_ranking",
        "studies_export_table_markdown", "studies_export_table_latex", "studies_export_html"]


def test_compare_lists_the_runs_findings_causes_first(populated_url, populated_store):
    example = next(r for r in populated_store.list_runs() if r.name == "article-example")
    at = open_page("pages/compare.py", query={"runs": f"{example.id},2"})
    table = next(d.value for d in at.dataframe if "finding" in d.value.columns)
    mine = table[table["run"] == f"#{example.id} article-example"]
    assert mine.iloc[0]["cause"] == "a ReLU before the sigmoid" and mine.iloc[0]["fix"] == "output_relu=false"
    assert set(table["severity"]) <= {"problem", "warning"}


def test_the_run_view_proves_a_fix_in_the_background(populated_url, populated_store, tmp_path, monkeypatch):
    """The article example's fix (no output ReLU) is trained over 3 seeds by a real background process; the
    run's view then says, in words and with a CI, that it helped."""
    from core.jobs import runner

    monkeypatch.setattr(runner, "default_log_dir", lambda: tmp_path)
    run = next(r for r in populated_store.list_runs() if r.name == "article-example")
    at = open_page("pages/runs.py", query={"run": str(run.id)})
    widget(at, "button", f"runs_fix_{run.id}").click().run()
    assert "Proving the fix `output_relu=false`" in text_of(at.info)
    assert runner.wait_fix(populated_store, run.id, timeout=300) == 0
    at.run()
    (verdict,) = [s.value for s in at.success if "The fix helped" in s.value] or [text_of(at.warning)]
    assert "output_relu=false" in verdict and "95% CI" in verdict and "3 seeds" in verdict
    proof = [r for r in populated_store.list_runs() if f"fix:{run.id}" in r.tags]
    assert len(proof) == 6
    populated_store.delete_run(proof[0].id)  # a verdict whose runs are gone is withdrawn: the fix can be proved again
    at.run()
    assert not [s for s in at.success if "The fix helped" in s.value] and "95% CI" not in text_of(at.warning)
    assert widget(at, "button", f"runs_fix_{run.id}").label.startswith("Prove the fix: output_relu=false")


# ---------------------------------------------------------------------- statistics (issue 15)
def test_studies_judge_difference_and_paper_tables(study_url, deferred):
    """Judged on, a difference worth finding, the interactions table and the Markdown/LaTeX downloads."""
    from core.analysis.effects import factor_columns, ranking
    from core.presentation import tables

    at = open_page(STUDIES_PAGE)
    assert widget(at, "button_group", "studies_judge").value == "exact_loss"
    assert widget(at, "number_input", "studies_difference").value is None
    interactions_table = next(d.value for d in at.dataframe if "estimate" in d.value.columns)
    assert list(interactions_table["fields"]) == ["batchnorm × loss"] and "p_holm" in interactions_table
    assert "Holm-corrected across the 3 effects and interactions with a p-value" in text_of(at.caption)

    assert "own_loss compares" not in text_of(at.warning)
    widget(at, "button_group", "studies_judge").set_value("own_loss").run()  # the study varies loss
    assert "own_loss compares each run's own val loss, and this study varies loss" in text_of(at.warning)
    widget(at, "button_group", "studies_judge").set_value("loss_area").run()
    assert not at.exception and "own_loss compares" not in text_of(at.warning)
    with Store(study_url) as store:
        frame = study_frame(store, 1, curves=True)
    judged = study_statistics(frame, "loss_area", difference=0.5)
    assert formatting.escape_markdown(judged.sentences[0]) in text_of(at.markdown)
    ranking_table = next(d.value for d in at.dataframe if "exact_loss_area_mean" in d.value.columns)
    assert ranking_table["exact_loss_area_mean"].is_monotonic_increasing

    widget(at, "number_input", "studies_difference").set_value(0.5).run()
    effects_table = next(d.value for d in at.dataframe if "difference" in d.value.columns)
    assert list(effects_table["seeds_needed"]) == list(judged.effects["seeds_needed"])
    assert formatting.escape_markdown(judged.power_sentences[0]) in text_of(at.markdown)

    name, mime, data = click_download(at, deferred, "studies_export_table_markdown")
    expected = tables.study_tables("t", ranking(frame, metric="exact_loss_area"), factor_columns(frame), judged,
                                   "markdown")
    assert (name, mime) == ("t_loss_area.md", "text/markdown") and data.decode() == expected
    assert data.decode().count("| rank |") == 1 and "### Interactions" in data.decode()
    name, _, data = click_download(at, deferred, "studies_export_table_latex")
    assert name == "t_loss_area.tex" and data.decode().count("\\begin{tabular}") == 3


def test_compare_difference_between_two_groups(study_url):
    """Compare's expander runs only when opened; it splits the runs by a config field, a tag or a pick and gives
    B minus A with Welch's 95% CI."""
    from core.presentation import run_groups

    at = open_page("pages/compare.py", query={"runs": ",".join(map(str, range(1, 9)))})
    assert not [w for w in at.selectbox if w.key == "compare_group_kind"]  # closed: nothing computed
    at.session_state["compare_groups"] = True
    at.run()
    assert widget(at, "selectbox", "compare_group_kind").value == "field:batchnorm"
    assert widget(at, "selectbox", "compare_group_metric").value == "final_val_loss_logits"
    assert "[its page](/studies?study=1) pairs each variant's runs seed by seed" in text_of(at.caption)
    with Store(study_url) as store:
        runs = [r for r in store.list_runs() if r.id <= 8]
        store.add_tag(1, "mine")
        store.add_tag(2, "theirs")
    a, b = run_groups.split_runs(runs, "field:batchnorm", "false", "true")
    assert len(a) == len(b) == 4
    expected = run_groups.difference_sentence(run_groups.group_difference(a, b, "final_val_loss_logits"),
                                              "batchnorm=false", "batchnorm=true", "final_val_loss_logits")
    assert formatting.escape_markdown(expected) in text_of(at.markdown) and "Welch t" in expected
    shown = next(d for d in at.dataframe if "p (Welch)" in d.value.columns)
    table = shown.value
    assert list(table["group"]) == ["batchnorm=false", "batchnorm=true", "B − A"]
    assert shown.proto.placeholder == "–"  # the groups' rows have no p-value: a dash, not "None"

    widget(at, "selectbox", "compare_group_kind").set_value("pick").run()
    widget(at, "multiselect", "compare_group_a_pick").set_value([1, 2, 3])
    widget(at, "multiselect", "compare_group_b_pick").set_value([4, 5, 6]).run()
    assert not at.exception
    picked = run_groups.group_difference([r for r in runs if r.id <= 3], [r for r in runs if 4 <= r.id <= 6],
                                         "final_val_loss_logits")
    assert formatting.escape_markdown(run_groups.difference_sentence(picked, "A", "B", "final_val_loss_logits")) \
        in text_of(at.markdown)
    widget(at, "selectbox", "compare_group_metric").set_value("final_val_acc").run()
    assert "final val accuracy" in text_of(at.markdown)
    widget(at, "selectbox", "compare_group_kind").set_value("tag").run()  # runs 1 and 2 were tagged above
    assert (widget(at, "selectbox", "compare_group_a_tag").value, widget(at, "selectbox", "compare_group_b_tag").value) \
        == ("mine", "theirs")
    assert "each group needs at least 2 finished runs" in text_of(at.markdown)
