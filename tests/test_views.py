"""core.views: the tables, filters, URL selection and form logic behind the dashboard pages."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from core.experiment.config import PRESETS, ExperimentConfig, field_names, preset
from core.presentation import charts, formatting, forms, run_tables, study_views, urls
from core.store import Run

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def make_run(run_id: int, name: str = "", *, status: str = "finished", tags: tuple[str, ...] = (),
             summary: dict | None = None, **config) -> Run:
    cfg = ExperimentConfig().replace(**config).to_dict() if config else ExperimentConfig().to_dict()
    return Run(id=run_id, name=name or f"run {run_id}", status=status, config=cfg, summary=summary or {},
               created_at=T0 + timedelta(minutes=run_id), started_at=T0, wall_time_s=12.5 if status != "running"
               else None, heartbeat_at=T0 + timedelta(seconds=3), device="cpu", tags=tags, progress_step=30,
               total_steps=120)


@pytest.fixture
def runs() -> list[Run]:
    return [
        make_run(3, "mlp relu", hidden=(64, 64), activation="relu", lr=0.01, tags=("mlp", "baseline"),
                 summary={"final_val_loss": 0.25, "best_val_loss": 0.2, "final_val_acc": 0.9, "final_val_auc": 0.95,
                          "peak_clamp_frac": 0.0}),
        make_run(2, "mlp elu", hidden=(64, 64), activation="elu", lr=0.01, status="diverged",
                 summary={"final_val_loss": math.nan}),
        make_run(1, "article", hidden=(), loss="bce", clamp_eps=1e-7, status="running", tags=("article",)),
    ]


# ---------------------------------------------------------------------- formatting
@pytest.mark.parametrize("value, text", [(None, "none"), ([64, 64], "[64, 64]"), ((), "[]"), (0.01, "0.01"),
                                         (1e-05, "1e-05"), (True, "True"), (3, "3"), ("relu", "relu")])
def test_format_value(value, text):
    assert formatting.format_value(value) == text


@pytest.mark.parametrize("seconds, text", [(None, "–"), (math.nan, "–"), (-1, "–"), (0.84, "0.8 s"), (42.4, "42 s"),
                                           (185, "3 min 05 s"), (7440, "2 h 04 min")])
def test_format_duration(seconds, text):
    assert formatting.format_duration(seconds) == text


def test_progress_and_texts(runs):
    running = runs[2]
    assert run_tables.progress(running) == pytest.approx(0.25)
    assert run_tables.progress_text(running) == "step 30 of 120 · 3.0 s"
    assert run_tables.progress(Run(id=9, name="x", status="running", created_at=T0)) is None  # no total yet
    assert run_tables.outcome_text(runs[0]) == "finished after 12 s · val loss 0.2500 · val acc 90.0%"
    failed = Run(id=5, name="f", status="failed", created_at=T0, wall_time_s=1.0, error="TypeError: boom\ntrace")
    assert run_tables.outcome_text(failed) == "failed after 1.0 s · TypeError: boom"


# ---------------------------------------------------------------------- the runs table
def test_runs_table_has_one_row_per_run_with_numbers_that_sort(runs):
    table = run_tables.runs_table(runs)
    assert list(table.index) == [3, 2, 1] and table.index.name == "id"
    assert list(table.columns) == list(run_tables.TABLE_LABELS)
    first = table.loc[3]
    assert first["status"] == "✓ finished"
    assert first["hidden"] == "[64, 64]" and table.loc[1, "hidden"] == "[]"
    assert first["tags"] == ["mlp", "baseline"]
    assert first["final_val_loss"] == 0.25 and first["final_val_auc"] == 0.95
    assert math.isnan(table.loc[2, "final_val_loss"]) and math.isnan(table.loc[1, "best_val_loss"])
    assert table.loc[1, "clamp_eps"] == 1e-7 and math.isnan(table.loc[3, "clamp_eps"])
    assert table.loc[3, "duration_s"] == 12.5
    for column in ("final_val_loss", "lr", "duration_s", "progress", "clamp_eps"):
        assert pd.api.types.is_float_dtype(table[column]), column
    assert table["created"].dt.tz is not None


def test_runs_table_of_no_runs_is_empty_with_the_columns():
    table = run_tables.runs_table([])
    assert table.empty and list(table.columns) == list(run_tables.TABLE_LABELS)


def test_table_key_changes_with_the_rows():
    assert run_tables.table_key("t", [1, 2]) == run_tables.table_key("t", [1, 2])
    assert run_tables.table_key("t", [1, 2]) != run_tables.table_key("t", [2, 1])
    assert run_tables.table_key("t", [1, 2]) != run_tables.table_key("t", [1, 2, 3])


# ---------------------------------------------------------------------- filters
def test_filter_by_status_config_and_text(runs):
    ids = lambda found: [r.id for r in found]  # noqa: E731
    assert ids(run_tables.filter_runs(runs)) == [3, 2, 1]
    assert ids(run_tables.filter_runs(runs, statuses=["running", "diverged"])) == [2, 1]
    assert ids(run_tables.filter_runs(runs, config={"activation": ["elu"]})) == [2]
    assert ids(run_tables.filter_runs(runs, config={"hidden": ["[64, 64]"], "activation": []})) == [3, 2]
    assert ids(run_tables.filter_runs(runs, config={"clamp_eps": ["none"]})) == [3, 2]
    assert ids(run_tables.filter_runs(runs, text="MLP")) == [3, 2]
    assert ids(run_tables.filter_runs(runs, text="baseline")) == [3]  # a tag
    assert ids(run_tables.filter_runs(runs, text="mlp baseline")) == [3]  # every word must match, name or tag
    assert ids(run_tables.filter_runs(runs, text="#1")) == [1]
    assert ids(run_tables.filter_runs(runs, text="2")) == [2]  # one number alone: that run's id too
    assert ids(run_tables.filter_runs(runs, text="nothing like it")) == []
    in_study = [dataclasses.replace(r, study_id=7 if r.id != 2 else None) for r in runs]
    assert ids(run_tables.filter_runs(in_study, studies=[7])) == [3, 1]
    assert ids(run_tables.filter_runs(in_study, studies=[7], text="mlp")) == [3]


def test_an_id_search_is_that_run_and_numbers_in_text_are_text():
    """'#12' is run 12, not #120-129; '10 seeds' finds names with '10 seeds', not run #10 or #100."""
    def run(i: int, name: str) -> Run:
        return Run(id=i, name=name, status="finished", config={}, created_at=None)
    runs = [run(i, f"sweep, 5 seeds: seed={i % 5}") for i in range(1, 130)] + [run(130, "sweep, 10 seeds: seed=0"),
                                                                              run(131, "lr 0.12")]
    found = lambda text: [r.id for r in run_tables.filter_runs(runs, text=text)]  # noqa: E731
    assert found("#12") == [12] and found("#12 sweep") == [12] and found("#999") == []
    assert found("10 seeds") == [130]
    assert found("12") == [12, 131]  # the id, and every name with "12" in it


def test_filter_refuses_unknown_status_and_field(runs):
    with pytest.raises(ValueError, match="unknown status 'done'"):
        run_tables.filter_runs(runs, statuses=["done"])
    with pytest.raises(ValueError, match="unknown config field 'colour'"):
        run_tables.filter_runs(runs, config={"colour": ["red"]})


def test_filter_options_are_the_fields_that_differ(runs):
    options = run_tables.filter_options(runs)
    assert options["activation"] == ["elu", "relu"]
    assert sorted(options["hidden"]) == ["[64, 64]", "[]"]
    assert options["clamp_eps"] == ["1e-07", "none"]
    assert "dataset" not in options and "seed" not in options  # the same for all three
    assert list(options) == [f for f in formatting.form_order() if f in options]  # form order


def test_clean_tags_and_edit_frame(runs):
    assert run_tables.clean_tags([" a ", "", "b", "a"]) == ["a", "b"]
    assert run_tables.clean_tags(None) == []
    frame = run_tables.edit_frame(runs[:2])
    assert list(frame.columns) == ["status", "name", "tags", "notes"]
    assert list(frame.index) == [3, 2] and frame.loc[3, "tags"] == ["mlp", "baseline"]


# ---------------------------------------------------------------------- the selection in the URL
@pytest.mark.parametrize("text, ids", [("3,7,12", [3, 7, 12]), (" 3, 7 ,,12, ", [3, 7, 12]), ("3 7", [3, 7]),
                                       ("7,3,7", [7, 3]), ("", []), (None, []), (["3,7", "12"], [3, 7, 12]),
                                       ("#3,#7", [3, 7])])
def test_parse_run_ids(text, ids):
    assert urls.parse_run_ids(text) == ids


@pytest.mark.parametrize("text, bad", [("3,abc", "'abc'"), ("0", "'0'"), ("-1", "'-1'"), ("3.5", "'3.5'"),
                                       ("1,x,y", "'x'")])
def test_parse_run_ids_names_every_bad_piece(text, bad):
    with pytest.raises(urls.SelectionError, match=bad) as info:
        urls.parse_run_ids(text)
    assert "e.g. ?runs=3,7,12" in str(info.value)
    if text == "1,x,y":
        assert "'y'" in str(info.value)


def test_a_link_names_several_runs_by_repeating_or_by_commas():
    assert urls.pieces(["5", "6"]) == urls.pieces(["5,6"]) == urls.pieces([" 5 6 ", "5"]) == ["5", "6"]
    assert urls.pieces(["7"]) == ["7"] and urls.pieces([]) == []


def test_split_run_ids_keeps_the_good_ones():
    ids, problems = urls.split_run_ids("4,oops,5")
    assert ids == [4, 5] and len(problems) == 1 and "'oops' is not a run id" in problems[0]
    # characters str.isdigit calls digits and int() refuses ('²', '①'), or reads as another run ('٣' is 3)
    ids, problems = urls.split_run_ids("1,²,①,٣,#²")
    assert ids == [1] and len(problems) == 4


def test_unicode_digits_in_a_search_or_a_name_are_text(runs):
    assert run_tables.filter_runs(runs, text="²") == [] and run_tables.filter_runs(runs, text="#²") == []
    assert formatting.natural_key("run x² 10") == ((1, 0, "run x² "), (0, 10, ""))
    assert sorted(["b²", "b10", "b2"], key=formatting.natural_key) == ["b2", "b10", "b²"]


def test_format_round_trips():
    assert urls.format_run_ids([3, 7, 12, 3]) == "3,7,12"
    assert urls.parse_run_ids(urls.format_run_ids([12, 3])) == [12, 3]
    assert urls.format_run_ids([]) == ""


def test_resolve_selection_reports_unknown_runs():
    sel = urls.resolve_selection("3,99,x,4,98", known_ids=[3, 4, 5])
    assert sel.ids == (3, 4)
    assert any("'x'" in p for p in sel.problems)
    assert any("#99, #98" in p for p in sel.problems)
    assert urls.resolve_selection("3", [3]).problems == ()


# ---------------------------------------------------------------------- compare frames
def test_chart_runs_is_what_comparison_figure_expects(runs):
    frame = run_tables.chart_runs(runs)
    assert frame.index.name == "run_id" and list(frame.index) == [3, 2, 1]
    assert list(frame.columns) == ["name", *field_names()]
    assert frame.loc[3, "name"] == "#3 mlp relu"
    series = pd.DataFrame({"run_id": [3, 3, 2, 2], "key": ["train_loss"] * 4, "step": [1, 2, 1, 2],
                           "epoch": [0, 0, 0, 0], "value": [0.7, 0.6, 0.7, 0.8], "wall_time": [0.1, 0.2, 0.1, 0.2]})
    fig = charts.comparison_figure(series, frame, metrics=["train_loss"], color_by="activation")
    assert sorted(t.meta["run_id"] for t in fig.data) == [2, 3]
    assert {t.name for t in fig.data} == {"#3 mlp relu", "#2 mlp elu"}


def test_config_differences_show_only_what_differs(runs):
    diff = run_tables.config_differences(runs)
    assert list(diff.index) == [3, 2, 1]
    assert set(diff.columns) == {"name", "hidden", "activation", "clamp_eps"}
    assert diff.loc[1, "hidden"] == "[]" and diff.loc[2, "clamp_eps"] == "none"
    assert run_tables.varying_fields(runs[:1]) == []


def test_run_tables_show_shares_as_percentages_with_one_decimal(runs):
    table = run_tables.runs_table(runs)
    shown = run_tables.in_percent(table)
    assert shown.loc[3, "final_val_acc"] == pytest.approx(90.0) and math.isnan(shown.loc[1, "final_val_acc"])
    assert table.loc[3, "final_val_acc"] == 0.9  # the frame itself is unchanged
    assert shown.loc[3, "final_val_loss"] == table.loc[3, "final_val_loss"]  # losses are not shares
    assert run_tables.PERCENT_FORMAT % shown.loc[3, "final_val_acc"] == "90.0%"  # as `summary_cell` writes it
    assert run_tables.PERCENT_FORMAT % 40.625 == "40.6%"


def test_the_ranking_writes_a_judged_loss_as_the_losses_beside_it():
    assert study_views.judged_format("final_val_loss_logits") == "%.4f"  # 0.3180, as final val loss beside it
    assert study_views.judged_format("final_val_acc") == "%.4f"
    assert study_views.judged_format("best_exact_epoch") == "%.4g"  # 12, not 12.0000
    assert "%.4f" % 0.318 == "0.3180"


def test_summary_table(runs):
    table = run_tables.summary_table(runs)
    assert list(table.columns) == ["name", "status", "duration_s", *run_tables.SUMMARY_METRICS]
    assert table.loc[3, "final_val_acc"] == 0.9 and table.loc[1, "final_val_acc"] is None  # none: not NaN
    assert table.loc[2, "status"] == "↯ diverged"


def test_metric_options_and_defaults():
    keys = ["grad_norm/fc10", "val_loss", "grad_norm/fc2", "clamp_frac", "train_loss", "zeta"]
    assert run_tables.metric_options(keys) == ["train_loss", "val_loss", "clamp_frac", "grad_norm/fc2", "grad_norm/fc10",
                                          "zeta"]
    assert run_tables.default_metrics(["train_loss", "val_loss", "val_acc"]) == ["train_loss", "val_loss"]
    assert run_tables.default_metrics(["val_acc", "grad_norm"]) == ["val_acc"]
    assert run_tables.default_metrics([]) == []


def test_config_table_lists_every_field_with_what_changed():
    cfg = preset("article-example").to_dict()
    table = run_tables.config_table(cfg)
    assert sorted(table["field"]) == sorted(field_names())
    row = table.set_index("field").loc["output_relu"]
    assert row["group"] == "Architecture" and row["value"] == "True" and bool(row["changed"])
    assert not bool(table.set_index("field").loc["seed", "changed"])
    assert table.set_index("field").loc["lr", "meaning"] == "learning rate"


def test_cache_token_follows_progress(runs):
    before = run_tables.cache_token(runs)
    moved = [runs[0], runs[1], Run(**{**runs[2].__dict__, "progress_step": 31})]
    assert run_tables.cache_token(moved) != before and run_tables.cache_token(runs) == before


# ---------------------------------------------------------------------- the train form
@pytest.mark.parametrize("name", list(PRESETS))
def test_form_round_trips_every_preset(name):
    cfg = preset(name)
    values = forms.form_values(cfg)
    assert isinstance(values["lr"], str) and isinstance(values["epochs"], int) and isinstance(values["hidden"], str)
    back, errors = forms.config_from_form(values)
    assert errors == {} and back == cfg


def test_form_reports_every_bad_field_at_once():
    values = forms.form_values(ExperimentConfig())
    values.update(lr="abc", epochs=0, hidden="64, x", clamp_eps="0.7")
    cfg, errors = forms.config_from_form(values)
    assert cfg is None
    assert set(errors) == {"lr", "epochs", "hidden", "clamp_eps"}
    assert errors["lr"] == "'abc' is not a finite number"
    assert errors["epochs"].startswith("must be a whole number from 1")
    assert not errors["clamp_eps"].startswith("clamp_eps:")  # the field name is the widget's label already


def test_form_reports_a_cross_field_error_on_its_field():
    values = forms.form_values(preset("article-fixed"))
    values["clamp_eps"] = "1e-7"
    _, errors = forms.config_from_form(values)
    assert list(errors) == ["clamp_eps"] and "only applies to loss 'bce'" in errors["clamp_eps"]


def test_form_checks_the_split_of_a_small_data_set():
    values = forms.form_values(ExperimentConfig())
    values.update(n_samples=10, val_fraction="0.01")
    _, errors = forms.config_from_form(values)
    assert list(errors) == ["val_fraction"] and "validation samples" in errors["val_fraction"]


def test_form_refuses_a_device_this_machine_lacks_before_any_run_exists():
    import torch

    values = ExperimentConfig().to_dict()
    for device, present in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available())):
        cfg, errors = forms.config_from_form({**values, "device": device})
        if present:
            assert cfg is not None and not errors
        else:  # the command line's words, on the field
            assert cfg is None and list(errors) == ["device"] and f"device '{device}' was asked for" in errors["device"]
    assert forms.config_from_form({**values, "device": "cpu"})[1] == {}


def test_form_checks_the_csv(tmp_path: Path):
    values = forms.form_values(ExperimentConfig(dataset="csv", csv_path="x"))
    values["csv_path"] = ""
    assert list(forms.config_from_form(values)[1]) == ["csv_path"]
    values["csv_path"] = str(tmp_path / "missing.csv")
    assert "no such file" in forms.config_from_form(values)[1]["csv_path"]
    one_class = tmp_path / "one.csv"
    one_class.write_text("a,b,label\n1,2,0\n3,4,0\n")
    values["csv_path"] = str(one_class)
    assert "exactly two classes" in forms.config_from_form(values)[1]["csv_label"]
    good = tmp_path / "good.csv"
    good.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    values["csv_path"] = str(good)
    cfg, errors = forms.config_from_form(values)
    assert errors == {} and cfg.csv_path == str(good)
    assert forms.config_from_form({**values, "csv_path": str(tmp_path / "missing.csv")}, check_data=False)[1] == {}


def test_uploads_dir_is_next_to_the_database(tmp_path: Path):
    assert forms.uploads_dir(f"sqlite:///{tmp_path}/runs.db") == tmp_path / "uploads"
    assert forms.uploads_dir("sqlite://") == forms.PROJECT_ROOT / "uploads"
    assert forms.uploads_dir("postgresql://u@h/db") == forms.PROJECT_ROOT / "uploads"


def test_save_upload_names_files_by_content(tmp_path: Path):
    folder = tmp_path / "uploads"
    first = forms.save_upload(b"a,label\n1,0\n", "my data (v2).csv", folder)
    again = forms.save_upload(b"a,label\n1,0\n", "my data (v2).csv", folder)
    other = forms.save_upload(b"a,label\n2,1\n", "../../etc/passwd", folder)
    assert first == again and first.parent == folder and first.name.endswith("-my_data_v2.csv")
    assert other.parent == folder and other.read_bytes() == b"a,label\n2,1\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.name, other.name])


def test_edit_changes_finds_what_was_edited(runs):
    before = run_tables.edit_frame(runs)
    after = before.copy()
    after.at[3, "name"] = "renamed"
    after.at[2, "tags"] = [" new ", "new", ""]
    after.at[1, "notes"] = None  # an emptied cell
    assert run_tables.edit_changes(before, after) == {3: {"name": "renamed"}, 2: {"tags": ["new"]}}
    after.at[1, "notes"] = "a note"
    after.at[3, "tags"] = ["mlp", " baseline", " "]  # the same tags once cleaned
    assert run_tables.edit_changes(before, after)[1] == {"notes": "a note"}
    assert 3 in run_tables.edit_changes(before, after) and "tags" not in run_tables.edit_changes(before, after)[3]
    assert run_tables.edit_changes(before, before.copy()) == {}


# ---------------------------------------------------------------------- studies
from core.analysis.effects import effects, ranking  # noqa: E402
from core.jobs.spec import STUDIES, auto_name, expand  # noqa: E402
from core.jobs.studies import StudyProgress
from core.store import Study  # noqa: E402

STUDY_FORM = forms.form_values(ExperimentConfig(epochs=1, n_samples=200))


def test_study_starts_fill_the_form_from_a_built_in_study_a_preset_or_the_defaults():
    starts = forms.study_starts()
    canonical = starts["study:bn-act-loss"]
    assert (canonical.seeds, list(canonical.vary)) == (3, ["batchnorm", "activation", "loss"])
    assert canonical.label == "bn-act-loss (built-in study, 24 runs)"
    assert starts["preset:mlp-bn-logits"].base == preset("mlp-bn-logits") and starts["defaults"].vary == {}
    form = dict(base=forms.form_values(canonical.base),
                vary={k: forms.vary_widget_value(k, v) for k, v in canonical.vary.items()})
    draft = forms.study_draft(name="", seeds=canonical.seeds, **form)
    assert draft.spec == STUDIES["bn-act-loss"]  # the form, filled and read back, is the built-in study, by name
    changed = forms.study_draft(name="", seeds=2, **form).spec  # another grid: named after it, not the study
    assert changed.name == auto_name(changed.base, changed.vary, 2) != "bn-act-loss"
    assert forms.study_draft(name=" mine ", seeds=3, **form).spec.name == "mine"


def test_vary_widgets_pick_choices_and_type_the_rest():
    assert "seed" not in forms.vary_fields() and forms.vary_fields()[0] == "dataset"
    assert forms.vary_choices("batchnorm") == [False, True]
    assert forms.vary_choices("loss") == ["bce", "bce_with_logits"] and forms.vary_choices("lr") is None
    assert forms.vary_widget_value("hidden", [(32,), (64, 64)]) == "[32], [64, 64]"
    assert forms.vary_widget_value("lr", [0.01, 0.1]) == "0.01, 0.1"
    assert forms.vary_initial("batchnorm", True) == [True, False]
    assert forms.vary_initial("activation", "elu") == ["elu"]
    assert forms.vary_initial("hidden", "64, 64") == "[64, 64]" and forms.vary_initial("lr", "0.01") == "0.01"


def test_study_draft_reads_picked_and_typed_values():
    draft = forms.study_draft(name="", base=STUDY_FORM, vary={"batchnorm": [False, True],
                                                             "hidden": "[4], [8, 8]", "lr": "0.01, 0.1"}, seeds=2)
    assert draft.errors == {} and (draft.variants, draft.seeds, draft.runs) == (8, 2, 16)
    spec = draft.spec
    assert spec.vary == {"batchnorm": (False, True), "hidden": ((4,), (8, 8)), "lr": (0.01, 0.1)}
    assert spec.base == ExperimentConfig(epochs=1, n_samples=200).to_dict()
    assert spec.name == auto_name(spec.base, spec.vary, 2)  # blank name: the one the command line derives
    assert forms.run_count_text(draft) == "**16 runs**: 8 variants × 2 seeds"
    assert study_views.grid_text(spec) == ("batchnorm: false, true × hidden: [4], [8, 8] × lr: 0.01, 0.1 × 2 seeds "
                                     "= 16 runs")


def test_study_draft_reports_every_bad_input_on_its_field():
    draft = forms.study_draft(name="x", base={**STUDY_FORM, "epochs": 0},
                              vary={"lr": "abc, 0.1", "loss": [], "hidden": "  ", "batch_size": "8, 8"}, seeds=0)
    assert draft.spec is None
    assert set(draft.errors) == {"epochs", "lr", "loss", "hidden", "batch_size", "seeds"}
    assert draft.errors["lr"] == "'abc' is not a finite number"
    assert draft.errors["loss"] == "pick at least one value"
    assert draft.errors["hidden"].startswith("give at least one value")
    assert draft.errors["seeds"] == "must be a whole number from 1 to 100, got 0"
    assert draft.variants == 2 * 0 * 0 * 2 and draft.runs is None
    assert forms.run_count_text(draft) == "0 variants × ? seeds"
    # values that are fine one by one but not together are the spec's to refuse, still on their field
    twice = forms.study_draft(name="x", base=STUDY_FORM, vary={"batch_size": "8, 8"}, seeds=1)
    assert twice.errors == {"batch_size": "the value 8 is given twice"} and twice.variants == 2
    combo = forms.study_draft(name="x", base=STUDY_FORM, vary={"n_samples": "5, 200"}, seeds=1)
    assert set(combo.errors) == {"n_samples"} and "(in the variant n_samples=5)" in combo.errors["n_samples"]
    # every bad value of a field at once, each said as it is wrong
    many = forms.study_draft(name="x", base=STUDY_FORM, vary={"lr": "abc, -1, 0.1, 0.1"}, seeds=1)
    assert many.errors["lr"] == ("'abc' is not a finite number; must be a number greater than 0 and less than 100, "
                                 "got -1.0 (in the variant lr=-1.0); the value 0.1 is given twice")


def test_study_progress_texts():
    counts = {"running": 2, "finished": 3, "diverged": 0, "failed": 0, "cancelled": 1, "interrupted": 0,
              "total": 8, "pending": 2}
    assert study_views.study_progress_text(counts) == "3 of 8 runs done · 2 running · 1 cancelled · 2 not started"
    assert study_views.study_fraction(counts) == 3 / 8
    done = {**counts, "running": 0, "finished": 7, "diverged": 1, "cancelled": 0, "pending": 0}
    assert study_views.study_progress_text(done) == "All 8 runs done: 7 finished, 1 diverged."
    assert study_views.study_progress_text({**done, "finished": 8, "diverged": 0}) == "All 8 runs finished."
    assert study_views.study_fraction(done) == 1.0
    assert study_views.study_active(counts, scheduler_alive=False)
    assert study_views.study_active({**counts, "running": 0}, scheduler_alive=True)
    assert not study_views.study_active({**counts, "running": 0}, scheduler_alive=False)
    assert not study_views.study_active(done, scheduler_alive=True)  # only wrapping up
    item = StudyProgress(Study(id=3, name="grid", created_at=T0), counts)
    assert study_views.study_label(item) == "#3 grid · 3/8 done · 2 running"


@pytest.mark.parametrize("value, expected", [
    ("2", (2, None)), ("", (None, None)), (None, (None, None)),
    ("abc", (None, "no study is named 'abc': use a study's name or id, e.g. ?study=bn-act-loss or ?study=3")),
    ("9", (None, "no study #9: deleted, or from another database")),
])
def test_resolve_study(value, expected):
    assert urls.resolve_study(value, [1, 2]) == expected


def _study_frame() -> pd.DataFrame:
    rows = [{"run_id": i + 1, "name": f"r{i}", "status": "finished", "variant": "", "batchnorm": bn,
             "hidden": hidden, "seed": seed, "final_val_loss": 0.5 - 0.1 * bn + 0.01 * seed, "best_val_loss": 0.4,
             "final_val_auc": 0.9, "wall_time_s": 1.0, "error": None}
            for i, (bn, hidden, seed) in enumerate((bn, h, s) for bn in (False, True) for h in ((4,), (8, 8))
                                                   for s in (0, 1))]
    frame = pd.DataFrame(rows)
    frame["hidden"] = pd.Series([r["hidden"] for r in rows], dtype=object)
    frame["variant"] = [f"batchnorm={str(b).lower()}" for b in frame["batchnorm"]]
    return frame


def test_study_tables_show_the_varied_values_as_text():
    frame = _study_frame()
    table = study_views.ranking_view(ranking(frame), ["batchnorm", "hidden"])
    assert table.index.name == "rank" and list(table.index) == [1, 2, 3, 4] and "variant" not in table
    assert list(table["batchnorm"]) == ["true", "true", "false", "false"]
    assert set(table["hidden"]) == {"[4]", "[8, 8]"}
    fx = study_views.effects_view(effects(frame, "final_val_loss"))
    assert "metric" not in fx and list(fx["level"]) == ["true", "[8, 8]"] and list(fx["baseline"]) == ["false", "[4]"]
    assert fx.loc[0, "difference"] == pytest.approx(-0.1)
    runs = study_views.study_runs_view(frame, ["batchnorm", "hidden"])
    assert runs.index.name == "id" and runs.loc[1, "status"] == "✓ finished" and runs.loc[1, "hidden"] == "[4]"
    assert study_views.study_group_fields(["batchnorm"]) == ["batchnorm"] and study_views.study_group_fields([]) == ["dataset"]


def test_escape_markdown_keeps_text_literal():
    assert formatting.escape_markdown("bce_with_logits *x* [a](b) -0.3 $1") == r"bce\_with\_logits \*x\* \[a\](b) -0.3 \$1"


def test_population_text_says_how_the_scheduler_will_batch_the_runs():
    """As `groups.tasks` splits a study on its workers: cells differing only in batched fields share a model."""
    def text(vary: dict, seeds: int, workers: int) -> str | None:
        draft = forms.study_draft(name="x", base=STUDY_FORM, vary=vary, seeds=seeds, check_data=False)
        assert draft.errors == {}
        return forms.population_text(draft, workers)

    canonical = {"batchnorm": [False, True], "activation": ["relu", "elu"], "loss": ["bce", "bce_with_logits"]}
    assert text(canonical, 3, 2) == "Trains as 2 batched models of 12 runs each, side by side."
    assert text(canonical, 3, 1) == "Trains as one batched model of 24 runs, side by side."
    # 24 runs on 8 workers: no population under 4 members, so 6 of 4
    assert text(canonical, 3, 8) == "Trains as 6 batched models of 4 runs each, side by side."
    # 13 runs on 3 workers: ceil(13 / 3) = 5 a model, the last one smaller
    lrs = ", ".join(str(0.01 * (k + 1)) for k in range(13))
    assert text({"lr": lrs}, 1, 3) == "Trains as 3 batched models of 5, 5 and 3 runs, side by side."
    # widths are not batched: two models of 2 runs; three widths with one seed: every run on its own
    assert text({"hidden": "[4], [8]", "lr": "0.01, 0.1"}, 1, 2) == \
        "Trains as 2 batched models of 2 runs each, side by side."
    assert text({"hidden": "[4], [8], [16]"}, 1, 2) == "Each run trains on its own, one per worker at a time."
    assert text({"hidden": "[4]"}, 1, 2) is None  # one run: nothing to say
    bad = forms.study_draft(name="x", base=STUDY_FORM, vary={"lr": "abc"}, seeds=1, check_data=False)
    assert forms.population_text(bad, 2) is None
    # a resumed study: only the runs it still has to train (`studies.sort_slots`), or none
    draft = forms.study_draft(name="x", base=STUDY_FORM, vary=canonical, seeds=3, check_data=False)
    left = [slot.cfg for slot in expand(draft.spec)][14:]
    assert forms.population_text(draft, 2, left) == "Trains as 2 batched models of 5 runs each, side by side."
    assert forms.population_text(draft, 2, left[:1]) is None
    assert forms.population_text(draft, 2, []) == \
        "Nothing left to train: every run of this grid has a result or is running."


def test_summary_cells_are_short_whatever_the_size():
    assert run_tables.summary_cell("final_train_loss", 6539935843941876000.0) == "6.54e+18"
    assert run_tables.summary_cell("final_val_loss", 0.156412) == "0.1564"
    assert run_tables.summary_cell("final_val_acc", 0.875) == "87.5%"
    assert run_tables.summary_cell("steps", 320.0) == "320" and run_tables.summary_cell("duration_s", 2.04) == "2.0 s"
    assert run_tables.summary_cell("steps", None) == "–"  # a run without the value
    assert run_tables.summary_cell("final_train_loss", math.nan) == "NaN"  # ... a value the run measured
    assert run_tables.summary_cell("final_train_loss", -math.inf) == "-inf"


def test_summary_display_is_text_of_the_cells(runs):
    shown = run_tables.summary_display(run_tables.summary_table(runs))
    assert shown.loc[3, "final_val_acc"] == "90.0%" and shown.loc[1, "final_val_acc"] == "–"
