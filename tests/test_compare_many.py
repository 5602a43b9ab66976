"""The Compare page with a study's 24 runs, under Streamlit's AppTest: the selection folds into one line and a
popover, a study's runs are added in one pick, the legend drops the shared "bn-act-loss: ", runs are grouped by
the study's varied fields until the user says otherwise, the legend can be hidden, and `?runs=` still round-trips.

The store holds one run outside any study (#1) and the bn-act-loss study's 24 runs (#2-#25), their metrics
written directly (no training): 40 train_loss steps and 4 val_loss epochs each."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import PROJECT_ROOT
from core.jobs.spec import STUDIES, expand, run_name
from core.store import Store
from core.training.reporting import MetricRow

APP = str(PROJECT_ROOT / "app.py")
PAGE = "pages/compare.py"
TIMEOUT = 60
SPEC = STUDIES["bn-act-loss"]
LOOSE = 1
STUDY_IDS = list(range(2, 26))
STUDY_URL = ",".join(map(str, STUDY_IDS))
VARIED = ["batchnorm", "activation", "loss"]  # the study's vary keys, in the form's order


def open_page(query: dict | None = None, state: dict | None = None) -> AppTest:
    """The app on Compare, run once, with `query` as the URL's query parameters and `state` seeded."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    at.run()
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figure(at: AppTest) -> dict:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def widget(at: AppTest, kind: str, key: str):
    found = [w for w in getattr(at, kind) if w.key == key]
    assert found, f"no {kind} with key {key!r}"
    return found[0]


def block_types_above(at: AppTest, key: str) -> list[str]:
    """The types of the blocks that hold the widget `key`, outermost first."""
    def walk(node, path: list[str]) -> list[str] | None:
        if getattr(node, "key", None) == key and not hasattr(node, "children"):
            return path
        for child in getattr(node, "children", {}).values():
            found = walk(child, [*path, getattr(child, "type", "")] if hasattr(child, "children") else path)
            if found is not None:
                return found
        return None

    found = walk(at._tree.main, [])
    assert found is not None, f"no element with key {key!r}"
    return found


def markdown(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


@pytest.fixture(scope="module")
def study_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("study") / "runs.db"
    with Store(f"sqlite:///{path}") as store:
        loose = store.create_run(name="baseline", config={"seed": 0})
        store.log_metrics(loose, [MetricRow("train_loss", s, 0, 1.0 / s, s * 0.1) for s in range(1, 41)])
        store.finish_run(loose, status="finished", summary={})
        study_id = store.create_study(SPEC.name, SPEC.to_dict())
        for slot in expand(SPEC):
            run_id = store.create_run(name=run_name(SPEC, slot.variant, slot.seed), config=slot.cfg.to_dict(),
                                      study_id=study_id)
            rng = np.random.default_rng(run_id)
            level = 0.2 + 0.3 * slot.variant["batchnorm"] + 0.1 * (slot.variant["loss"] == "bce")
            rows = [MetricRow("train_loss", s, (s - 1) // 10, level + 1 / s + 0.01 * rng.random(), s * 0.1)
                    for s in range(1, 41)]
            rows += [MetricRow("val_loss", s, s // 10 - 1, level + 1.2 / s, s * 0.1) for s in range(10, 41, 10)]
            store.log_metrics(run_id, rows, progress_step=40)
            store.finish_run(run_id, status="finished", summary={"final_val_loss": level})
    return path


@pytest.fixture
def study_url(study_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "runs.db"
    with sqlite3.connect(study_template) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("LOSSBOARD_DB", url)
    return url


def test_the_store_holds_the_study(study_url):
    with Store(study_url) as store:
        runs = store.list_runs(study_id=1)
        assert sorted(r.id for r in runs) == STUDY_IDS
        assert all(r.name.startswith("bn-act-loss: ") for r in runs)


# ---------------------------------------------------------------------- the selector
def test_a_studys_runs_fold_into_one_line_and_a_popover(study_url):
    at = open_page({"runs": STUDY_URL})
    assert "**24 runs · study bn-act-loss**" in markdown(at).splitlines()
    assert widget(at, "multiselect", "compare_runs").value == STUDY_IDS
    assert block_types_above(at, "compare_runs") == ["flex_container", "popover"], "the 24 chips sit in the popover"


def test_a_few_runs_keep_the_picker_on_the_page(study_url):
    at = open_page({"runs": "2,3,4"})
    assert "popover" not in block_types_above(at, "compare_runs")
    assert "runs · study" not in markdown(at)
    assert widget(at, "selectbox", "compare_add_study").options == ["bn-act-loss · 24 runs"]


def test_adding_a_study_puts_its_runs_in_the_url_and_folds_the_picker(study_url):
    at = open_page({"runs": str(LOOSE)})
    widget(at, "selectbox", "compare_add_study").set_value(1).run()
    assert not at.exception
    assert widget(at, "multiselect", "compare_runs").value == [LOOSE, *STUDY_IDS]
    assert at.query_params["runs"] == f"{LOOSE},{STUDY_URL}"
    assert widget(at, "selectbox", "compare_add_study").value is None, "ready for the next pick"
    assert "25 runs · 24 of study bn" in markdown(at) and "1 outside a study" in markdown(at)
    assert block_types_above(at, "compare_runs")[-1] == "popover"
    assert widget(at, "multiselect", "compare_opt_group").value == [], "a mixed selection is not grouped"


def test_the_url_round_trips_through_the_popover_picker(study_url):
    at = open_page({"runs": STUDY_URL})
    widget(at, "multiselect", "compare_runs").set_value(STUDY_IDS[:12]).run()
    assert at.query_params["runs"] == ",".join(map(str, STUDY_IDS[:12]))
    assert at.session_state["compare_selected"] == STUDY_IDS[:12]
    assert at.session_state["compare_url"] == at.query_params["runs"]
    again = open_page({"runs": at.query_params["runs"]})
    assert widget(again, "multiselect", "compare_runs").value == STUDY_IDS[:12]
    back = open_page(state={"compare_selected": STUDY_IDS})  # back from another page, without ?runs=
    assert back.query_params["runs"] == STUDY_URL
    assert widget(back, "multiselect", "compare_runs").value == STUDY_IDS


# ---------------------------------------------------------------------- the chart
def test_a_study_is_grouped_by_its_varied_fields_one_mean_per_variant(study_url):
    at = open_page({"runs": STUDY_URL})
    assert widget(at, "multiselect", "compare_opt_group").value == VARIED
    fig = figure(at)
    means = [t for t in fig["data"] if t["meta"]["kind"] == "mean"]
    assert len(means) == 16, "8 variants x 2 metrics"
    assert {len(t["meta"]["run_ids"]) for t in means} == {3}, "each over its 3 seeds"
    assert {t["meta"]["kind"] for t in fig["data"]} == {"mean", "band"}
    assert len({t["meta"]["group"] for t in means}) == 8
    assert fig["layout"]["title"]["text"] == "bn-act-loss"
    assert fig["layout"]["legend"]["orientation"] == "h" and fig["layout"]["height"] >= 550


def test_the_user_can_ungroup_and_the_legend_drops_the_study_name(study_url):
    at = open_page({"runs": STUDY_URL})
    widget(at, "multiselect", "compare_opt_group").set_value([]).run()
    fig = figure(at)
    names = [t["name"] for t in fig["data"] if t.get("showlegend") is not False]
    assert len(names) == 48 and len(set(names)) == 48
    assert not any("bn-act-loss" in t["name"] for t in fig["data"])
    assert names[0] == "#2 batchnorm=false activation=relu loss=bce seed=0 · train_loss"
    assert {t["meta"]["kind"] for t in fig["data"]} == {"raw"}
    widget(at, "slider", "compare_opt_smoothing").set_value(0.5).run()
    assert widget(at, "multiselect", "compare_opt_group").value == [], "the user's choice stays"


def test_a_new_selection_gets_its_own_default_grouping(study_url):
    at = open_page({"runs": STUDY_URL})
    bn_true = [i for i in STUDY_IDS if (i - 2) % 8 >= 4]  # expand(): batchnorm is the slowest varied field
    widget(at, "multiselect", "compare_runs").set_value(bn_true).run()
    assert widget(at, "multiselect", "compare_opt_group").value == ["activation", "loss"]
    means = [t for t in figure(at)["data"] if t["meta"]["kind"] == "mean"]
    assert len(means) == 8 and {len(t["meta"]["run_ids"]) for t in means} == {3}
    assert figure(at)["layout"]["title"]["text"] == "bn-act-loss: batchnorm=true"


def test_hiding_the_legend(study_url):
    at = open_page({"runs": STUDY_URL})
    toggle = widget(at, "toggle", "compare_opt_legend")
    assert toggle.value is True
    shown_height = figure(at)["layout"]["height"]
    toggle.set_value(False).run()
    fig = figure(at)
    assert fig["layout"]["showlegend"] is False
    assert "legend" not in fig["layout"] or "orientation" not in fig["layout"]["legend"]
    assert 550 <= fig["layout"]["height"] < shown_height, "the legend's rows are no longer added"
    assert at.session_state["compare_opt_legend"] is False


def test_a_large_ungrouped_selection_starts_without_its_legend(study_url):
    from core.presentation.selection import LEGEND_RUNS, legend_default

    assert legend_default(24, grouped=False) and legend_default(LEGEND_RUNS, grouped=False)
    assert not legend_default(LEGEND_RUNS + 1, grouped=False)  # 1,000 runs: 22 s to show in Chromium, 5.6 s without
    assert legend_default(1000, grouped=True)  # an entry per group
    at = open_page({"runs": STUDY_URL})  # 24 runs, grouped: the legend is on, no caption about it
    assert widget(at, "toggle", "compare_opt_legend").value is True
    assert not [c for c in at.caption if "The legend is off" in c.value]
