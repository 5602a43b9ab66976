"""Studies: launch a grid of variants over seeds in the background, watch it, and read which choices mattered.
The study shown lives in the URL (?study=3)."""

import os

import pandas as pd
import streamlit as st

from core.analysis.effects import factor_columns, ranking
from core.analysis.judges import DEFAULT_JUDGE, JUDGES, judge_warning
from core.analysis.statistics import StudyStatistics, power_caption, study_statistics
from core.experiment.config import (GROUPS, ConfigError, ExperimentConfig, choices, describe, field_comment, field_kind,
                                    field_names)
from core.jobs import runner
from core.jobs.executors import ENV_SCHEDULER
from core.jobs.studies import (default_workers, existing_study, list_studies_with_progress, load_spec, progress,
                               sort_slots, study_frame)
from core.presentation import charts, export, formatting, forms, run_tables, study_views, tables, urls, zoom
from core.store import RunNotFound, Store

if "app_store" not in st.session_state:  # the server's first request came here, before app.py ran
    st.session_state["app_goto"] = ("pages/studies.py", st.query_params.to_dict())
    st.switch_page("app.py")
store: Store = st.session_state["app_store"]
BASE = "studies_base_"  # + config field name: the base config's widget of that field
VALUES = "studies_values_"  # + varied field name: the widget listing its values
MODES = {"view": "Results", "launch": "New study"}
BAND_LABELS = {"std": "± std", "minmax": "min–max", "ci95": "95% CI"}
DOWNLOAD_ICONS = {"png": ":material/image:", "svg": ":material/image:", "pdf": ":material/picture_as_pdf:",
                  "html": ":material/code:", "csv": ":material/table_view:", "table": ":material/article:"}
LIVE_REFRESH_S = 2.0  # while a study trains
FORM_COLUMNS = 4
STARTS = forms.study_starts()
KEEP = "session"  # the form keeps its values across a visit to another page


@st.cache_data(show_spinner=False, max_entries=16)
def load_series(_store: Store, url: str, ids: tuple[int, ...], metrics: tuple[str, ...], token: tuple) -> pd.DataFrame:
    """The chosen metrics of the study's runs, read sized to the chart; `token` changes when any of them logs more."""
    return _store.metrics_frame(list(ids), keys=list(metrics), max_points=zoom.READ_POINTS)


@st.cache_data(show_spinner=False, max_entries=16)
def load_metric_keys(_store: Store, url: str, ids: tuple[int, ...], token: tuple) -> list[str]:
    return run_tables.metric_options(_store.metric_keys_for(ids))


# ---------------------------------------------------------------------- the form's state
def load_base(cfg: ExperimentConfig) -> None:
    for name, value in forms.form_values(cfg).items():
        st.session_state[BASE + name] = value


def on_start() -> None:
    """A starting point was picked: it fills the base config, the grid, the seeds and the name."""
    start = STARTS[st.session_state["studies_start"]]
    load_base(start.base)
    st.session_state["studies_vary"] = list(start.vary)
    for name, values in start.vary.items():
        st.session_state[VALUES + name] = forms.vary_widget_value(name, values)
    st.session_state["studies_seeds"] = start.seeds
    st.session_state["studies_name"] = ""  # the built-in study's name while its grid is unchanged, else derived
    st.session_state["studies_from_run"] = None
    st.session_state.pop("studies_refused", None)


def on_from_run() -> None:
    run_id = st.session_state["studies_from_run"]
    if run_id is None:
        load_base(STARTS[st.session_state["studies_start"]].base)
        return
    try:
        load_base(ExperimentConfig.from_dict(store.get_run(run_id).config))
    except (ConfigError, RunNotFound) as exc:
        st.session_state["studies_from_run"] = None
        st.session_state["studies_run_problem"] = (f"Run #{run_id}'s config does not load ({exc}); the base is "
                                                   "unchanged.")


def on_vary() -> None:
    """A field was added to the grid: its values start from its base value."""
    for name in st.session_state["studies_vary"]:
        if VALUES + name not in st.session_state:
            st.session_state[VALUES + name] = forms.vary_initial(name, st.session_state.get(BASE + name))


def read_draft() -> forms.StudyDraft:
    return forms.study_draft(
        name=st.session_state.get("studies_name", ""),
        base={name: st.session_state.get(BASE + name) for name in field_names()},
        vary={name: st.session_state.get(VALUES + name) for name in st.session_state.get("studies_vary", [])},
        seeds=st.session_state.get("studies_seeds"), workers=st.session_state.get("studies_workers"))


def show_study(study_id: int) -> None:
    st.session_state["studies_selected"] = study_id
    st.session_state["studies_url"] = str(study_id)
    st.query_params["study"] = str(study_id)


def on_launch() -> None:
    """Launch: nothing starts unless every input is valid; then the new study is shown."""
    draft = read_draft()
    if draft.errors:  # shown while the inputs stay bad
        st.session_state["studies_refused"] = {"spec": None, "errors": {}}
        return
    try:
        study_id = runner.launch_study(store, draft.spec, workers=st.session_state["studies_workers"],
                                       executor=executor())
    except ConfigError as exc:  # what only launching can tell (a CSV that does not load): shown until it changes
        st.session_state["studies_refused"] = {"spec": draft.spec.to_dict(),
                                               "errors": {exc.field: forms.error_message(exc)}}
        return
    st.session_state.pop("studies_refused", None)
    st.session_state["studies_mode"] = "view"
    st.session_state["studies_toast"] = f"Study #{study_id} started: {draft.spec.size} runs"
    show_study(study_id)


def on_pick() -> None:
    """The study picker changed: the URL follows, so the view can be shared and reloaded."""
    show_study(st.session_state["studies_pick"])
    st.session_state["studies_problem"] = None


def on_resume(study_id: int) -> None:
    workers = st.session_state.get("studies_workers")  # the form's value, when it is a valid one
    runner.relaunch_study(store, study_id, workers=default_workers() if forms.workers_error(workers) else workers,
                          executor=executor())


def executor() -> str | None:
    """"dask" when a Dask scheduler is configured and chosen; None: the local worker processes."""
    return "dask" if SCHEDULER and st.session_state.get("studies_executor") == "dask" else None


if BASE + "dataset" not in st.session_state:  # first visit: the canonical study
    st.session_state["studies_start"] = next(iter(STARTS))
    on_start()
st.session_state.setdefault("studies_workers", default_workers())
SCHEDULER = os.environ.get(ENV_SCHEDULER, "").strip()


# ---------------------------------------------------------------------- the launch form
def error_under(names: list[str], errors: dict[str, str], columns: int) -> None:
    """The messages of the bad fields in `names`, each under its widget's column."""
    if any(name in errors for name in names):
        for column, name in zip(st.columns(columns), names):
            if name in errors:
                column.error(errors[name], icon=":material/error:")


def base_widget(name: str, disabled: bool) -> None:
    """The base config's widget of one field, as on Train; varied fields and the seed are set by the study."""
    kind, key = field_kind(name), BASE + name
    help_text = field_comment(name) + (" (set by the study)" if disabled else "")
    if kind == "bool":
        st.checkbox(name, key=key, help=help_text, disabled=disabled, persist_state=KEEP)
    elif kind == "int":
        st.number_input(name, key=key, step=1, help=help_text, disabled=disabled, persist_state=KEEP)
    elif kind == "choice":
        st.selectbox(name, choices(name), key=key, help=help_text, disabled=disabled, persist_state=KEEP)
    else:
        placeholder = {"optional_float": "empty = off", "widths": "e.g. 64, 64 (empty: no hidden layer)"}.get(kind)
        st.text_input(name, key=key, help=help_text, placeholder=placeholder, disabled=disabled, persist_state=KEEP)


def values_widget(name: str) -> None:
    """The values of one varied field: picked from its choices, or typed like `--vary` takes them."""
    options = forms.vary_choices(name)
    help_text = f"{field_comment(name)}. The first value is the baseline the effects are measured against."
    if options is not None:
        st.multiselect(name, options, key=VALUES + name, help=help_text, persist_state=KEEP,
                       format_func=forms.study_value, placeholder="pick values")
    else:
        st.text_input(name, key=VALUES + name, help=help_text + " Separate values by commas.", persist_state=KEEP,
                      placeholder=forms.vary_placeholder(name))


def launch_form(draft: forms.StudyDraft, errors: dict[str, str], resumes: int | None, refused: bool,
                todo: list[ExperimentConfig] | None = None) -> None:
    runs = store.list_runs()
    start, from_run, name_box = st.columns([2, 2, 3], vertical_alignment="bottom")
    start.selectbox("Start from", list(STARTS), key="studies_start", on_change=on_start, persist_state=KEEP,
                    format_func=lambda k: STARTS[k].label,
                    help="Fills the base config, the grid and the seeds from a built-in study, or the base config "
                         "from a preset.")
    from_run.selectbox("Base config from a run", [None, *(r.id for r in runs)], key="studies_from_run",
                       on_change=on_from_run, persist_state=KEEP, placeholder="optional",
                       format_func=lambda i: "none: the starting point's" if i is None else
                       formatting.run_label(next(r for r in runs if r.id == i)),
                       help="Takes every base field from that run's config.")
    name_box.text_input("Study name", key="studies_name", persist_state=KEEP, max_chars=255,
                        placeholder=draft.spec.name if draft.spec else "default: named after the grid",
                        help="Empty: a built-in study's own name while its grid is unchanged, else one derived "
                             "from the grid (as the command line names it). A stored study's name with the same "
                             "grid resumes it.")
    if "name" in errors:
        name_box.error(errors["name"], icon=":material/error:")
    problem = st.session_state.pop("studies_run_problem", None)
    if problem:
        st.warning(problem)

    st.subheader("Vary", divider="gray")
    vary = st.multiselect("Fields to vary", forms.vary_fields(), key="studies_vary", on_change=on_vary,
                          persist_state=KEEP, placeholder="pick config fields",
                          help="Every combination of their values is one variant; each variant trains once per "
                               "seed.")
    for first in range(0, len(vary), FORM_COLUMNS - 1):
        row = vary[first:first + FORM_COLUMNS - 1]
        for column, name in zip(st.columns(FORM_COLUMNS - 1), row):
            with column:
                values_widget(name)
        error_under(row, errors, FORM_COLUMNS - 1)

    seeds, workers, count, button = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
    # no min or max: the browser would keep an out-of-range number to itself, and launch with the last good one
    seeds.number_input("Seeds", step=1, key="studies_seeds", persist_state=KEEP,
                       help="Each variant trains with seeds 0..N-1: the effects' intervals are over seeds.")
    workers.number_input("Workers", step=1, key="studies_workers", persist_state=KEEP,
                         help=f"Worker processes training at once (this machine has {default_workers()} cores): "
                              "the runs that differ only in fields a population batches (seed, lr, activation, "
                              "loss, BatchNorm, ...) train side by side as one batched model a worker, the others "
                              "one at a time.")
    with count.container(key="studies_run_count"):
        at_once = None if "workers" in errors else int(st.session_state.get("studies_workers") or 1)
        workers_text = f", on {at_once} worker{'s' if at_once > 1 else ''}" if draft.runs and at_once else ""
        st.markdown(forms.run_count_text(draft) + workers_text
                    + (f" · resumes study #{resumes}" if resumes else "")
                    + (f", {len(todo)} left to train" if resumes and todo is not None else ""))
        how = forms.population_text(draft, at_once or 1, todo) if executor() is None else None  # Dask claims its own
        if how:
            st.caption(how)
    if SCHEDULER:  # only where a Dask scheduler is configured
        st.radio("Executor", ["local", "dask"], key="studies_executor", horizontal=True,
                 help=f"local: worker processes on this machine; dask: the Dask cluster at {SCHEDULER}, each cell "
                      "claimed through the store")
    button.button("Launch", key="studies_launch", type="primary", icon=":material/rocket_launch:", width="stretch",
                  on_click=on_launch)
    if "seeds" in errors:
        seeds.error(errors["seeds"], icon=":material/error:")
    if "workers" in errors:
        workers.error(errors["workers"], icon=":material/error:")
    shown = {"name", "seeds", "workers", *vary, *field_names()}
    for field_name, message in errors.items():
        if field_name not in shown:
            st.error(f"{field_name}: {message}", icon=":material/error:")
    if refused and errors:
        fields = ", ".join(f"`{f}`" for f in errors)
        st.error(f"Nothing was started: {fields} {'needs' if len(errors) == 1 else 'need'} fixing (marked here).",
                 icon=":material/block:")

    st.subheader("Base config", divider="gray")
    st.caption("Every run of the study starts from this config; the varied fields and the seed are set per run.")
    for group, names in GROUPS.items():
        st.markdown(f"**{group}**")
        for first in range(0, len(names), FORM_COLUMNS):
            row = names[first:first + FORM_COLUMNS]
            for column, name in zip(st.columns(FORM_COLUMNS, vertical_alignment="bottom"), row):
                with column:
                    base_widget(name, disabled=name in vary or name == "seed")
            error_under(row, {k: v for k, v in errors.items() if k not in vary}, FORM_COLUMNS)


# ---------------------------------------------------------------------- the study view
def download_buttons(downloads: list[export.Download]) -> None:
    with st.container(horizontal=True):
        for d in downloads:  # on_click="ignore": a download does not rerun the page; the file is made on click
            st.download_button(d.label, d.make, file_name=d.file_name, mime=d.mime, key=f"studies_export_{d.key}",
                               icon=DOWNLOAD_ICONS.get(d.key.split("_")[0]), on_click="ignore")


def table_download(key: str, label: str, table: pd.DataFrame, name: str, tail: str) -> export.Download:
    return export.Download(key, label, export.safe_filename(name, tail=tail, ext="csv"), export.MIME_TYPES["csv"],
                           lambda: export.table_csv(table).encode("utf-8"))


def effects_section(name: str, frame: pd.DataFrame, factors: list[str]) -> StudyStatistics | None:
    """What mattered, judged as the user picks: interactions, then main effects, in words and as tables, with
    Holm-corrected p-values and the seeds each effect would need."""
    st.subheader("What mattered", divider="gray")
    if not factors:
        st.caption("This study varies nothing but the seed: there are no choices to compare.")
        return None
    judge_box, difference_box = st.columns([3, 1], vertical_alignment="bottom")
    judge = judge_box.segmented_control(
        "Judged on", list(study_views.JUDGE_LABELS), key="studies_judge", format_func=study_views.JUDGE_LABELS.get,
        required=True, default=DEFAULT_JUDGE,
        help="The exact val loss (BCE on the logits, logged for every run) compares clamped BCE and logits runs on "
             "one yardstick; a run's own loss does not. Best epoch and area come from the exact val loss curve.")
    difference = difference_box.number_input(
        "A difference worth finding", value=None, key="studies_difference", format="%g", placeholder="e.g. 0.05",
        help="In the judged metric's units: the seeds each effect needs to find it 80% of the time.")
    stats = study_statistics(frame, judge, difference=difference or None)
    if warning := judge_warning(judge, factors):
        st.warning(warning, icon=":material/straighten:")
    with st.container(border=True, key="studies_effects_words"):
        for sentence, clear, held in zip(stats.sentences, stats.clear, stats.held):
            text = formatting.escape_markdown(sentence)
            st.markdown(f":material/check_circle: **{text}**" if held else
                        f":material/help: {text}" if clear else f":material/remove: {text}")
        if len(stats.effects) and not any(stats.clear) and (stats.effects["n_seeds"] >= 2).any():
            st.caption("No difference is clear yet: every 95% interval includes 0. More seeds narrow the "
                       "intervals.")
    st.caption("Each difference is the change from the first value, averaged over the other fields' values, per "
               "seed; an interaction is how much one change's effect moves when the other field changes too. The "
               "95% confidence intervals are over seeds (paired t). Bold, ticked: the interval excludes 0 and "
               "Holm's correction keeps it; a question mark: it excludes 0 before the correction only. Only "
               f"finished runs count. {power_caption(stats.family)}")
    number = st.column_config.NumberColumn
    common = {"n_seeds": number("seeds", format="%d"), "sd": None, "p_value": number("p", format="%.3g"),
              "p_holm": number("p (Holm)", format="%.3g", help="Holm-corrected across the effects and "
                                                               "interactions that have a p-value"),
              "clear": st.column_config.CheckboxColumn("clear"),
              "clear_holm": st.column_config.CheckboxColumn("clear (Holm)"),
              "ci_low": number("95% CI low", format="%+.4g"), "ci_high": number("95% CI high", format="%+.4g"),
              "detectable": number("detectable", format="%.4g", help="the smallest difference these seeds find "
                                                                     "80% of the time"),
              "seeds_needed": number("seeds needed", format="%.0f", help="for the difference you named")}
    effects_table = study_views.effects_view(stats.effects)
    st.dataframe(effects_table, hide_index=True, key="studies_effects_table", column_config={
        **common,
        "level": st.column_config.TextColumn("level", width="medium"),
        "baseline": st.column_config.TextColumn("baseline", width="medium"),
        "level_mean": number("mean at level", format="%.4g"),
        "baseline_mean": number("mean at baseline", format="%.4g"),
        "difference": number("difference", format="%+.4g"),
        "level_diverged": number("diverged at level", format="%d", help="its runs that diverged: no result, not "
                                 "in the mean"),
        "baseline_diverged": number("diverged at baseline", format="%d"), "level_ended": None,
        "baseline_ended": None}, placeholder="–")
    interactions_table = study_views.interactions_view(stats.interactions)
    if len(interactions_table):
        st.markdown("**Interactions** · one field's effect with the other field at its baseline and at the level")
        st.dataframe(interactions_table, hide_index=True, key="studies_interactions_table", column_config={
            **common, "estimate": number("interaction", format="%+.4g"),
            **{c: number(c.replace("_", " "), format="%+.4g") for c in interactions_table.columns
               if c.startswith("effect_at")}}, placeholder="–")
    with st.expander("How many seeds", icon=":material/functions:"):
        for line in stats.power_sentences:
            st.markdown(f"- {formatting.escape_markdown(line)}")
    download_buttons([
        table_download("csv_effects", "Effects (CSV)", effects_table.set_index("factor"), name, f"effects {judge}"),
        table_download("csv_interactions", "Interactions (CSV)", interactions_table.set_index("fields"),
                       name, f"interactions {judge}")])
    return stats


def ranking_section(name: str, frame: pd.DataFrame, factors: list[str], stats: StudyStatistics | None) -> None:
    st.subheader("Ranking", divider="gray")
    judge = stats.judge if stats is not None else JUDGES[DEFAULT_JUDGE]
    ranked = ranking(frame, metric=judge.column)
    table = study_views.judged_ranking_view(ranked, factors, judge.column)
    st.caption(f"Variants by mean {judge.label} over their finished runs (with its 95% CI over seeds), best first; "
               "± is the sd over seeds.")
    number, shown = st.column_config.NumberColumn, study_views.judged_format(judge.column)
    st.dataframe(table, key="studies_ranking_table", column_config={
        **{f: st.column_config.TextColumn(f, width="medium") for f in factors},
        "n": number("n", help="finished runs counted"),
        **{f"{m}_{s}": number(label if s == "mean" else "± sd", format="%.4f",
                              help=f"{label}: {'mean' if s == 'mean' else 'standard deviation'} over seeds")
           for m, label in study_views.STUDY_METRICS.items() for s in ("mean", "sd")},
        f"{judge.column}_mean": number(judge.label, format=shown, help=f"{judge.label}: mean over seeds"),
        f"{judge.column}_ci_low": number("95% CI low", format=shown),
        f"{judge.column}_ci_high": number("95% CI high", format=shown)}, placeholder="–")
    downloads = [table_download("csv_ranking", "Ranking (CSV)", table, name, "ranking")]
    if stats is not None:  # tables for papers: ranking, effects and interactions, mean ± 95% CI, n seeds
        for kind, label in (("markdown", "Tables (Markdown)"), ("latex", "Tables (LaTeX)")):
            downloads.append(export.Download(
                f"table_{kind}", label, export.safe_filename(name, tail=judge.name, ext=tables.EXTENSIONS[kind]),
                tables.MIME_TYPES[kind], lambda kind=kind: tables.study_tables(name, ranked, factors, stats,
                                                                               kind).encode("utf-8")))
    download_buttons(downloads)


def curves_section(name: str, runs: list, factors: list[str]) -> None:
    st.subheader("Curves by variant", divider="gray")
    ids = tuple(r.id for r in runs)
    token = run_tables.cache_token(runs)
    available = load_metric_keys(store, store.url, ids, token)
    if not available:
        st.caption("No run of this study has logged a metric yet.")
        return
    if st.session_state.get("studies_chart_metric") not in available:
        st.session_state["studies_chart_metric"] = "val_loss" if "val_loss" in available else available[0]
    st.session_state.setdefault("studies_band", "std")
    metric_box, band_box, log_box = st.columns([2, 2, 1], vertical_alignment="bottom")
    metric = metric_box.selectbox("Metric", available, key="studies_chart_metric")
    band = band_box.segmented_control("Band over seeds", list(BAND_LABELS), key="studies_band", required=True,
                                      format_func=BAND_LABELS.get)
    log_y = log_box.toggle("Log y", key="studies_log_y")
    series = load_series(store, store.url, ids, (metric,), token)
    title = f"{name}: {metric}"
    try:
        figure = charts.comparison_figure(series, run_tables.chart_runs(runs), metrics=[metric], log_y=log_y, band=band,
                                          group_by=study_views.study_group_fields(factors), title=title)
    except ValueError as exc:
        st.error(f"This chart cannot be drawn: {exc}")
        return
    st.plotly_chart(figure, key="studies_chart", config={"displaylogo": False})
    st.caption("One line per variant: the mean over its seeds, with the band around it.")
    problem = export.image_export_problem()  # the chart as shown, in a light theme with its title and legend
    download_buttons([d for d in export.figure_downloads(figure, title=title) if not (d.needs_browser and problem)])
    if problem:
        st.warning(problem, icon=":material/hide_image:")


def study_view(study_id: int, active_before: bool) -> None:
    runner.refresh(store)  # a run whose process died becomes "interrupted"
    study = store.get_study(study_id)
    spec = load_spec(store, study_id)
    counts = progress(store, study_id)
    active = study_views.study_active(counts, scheduler_alive=runner.study_running(store, study_id))
    runs = store.list_runs(study_id=study_id)
    runs.sort(key=lambda r: r.id)
    judge = JUDGES[st.session_state.get("studies_judge") or DEFAULT_JUDGE]
    frame = study_frame(store, study_id, curves=judge.needs_curves)  # best epoch and area read the curves
    factors = factor_columns(frame)

    st.header(f"#{study.id} {formatting.escape_markdown(study.name)}")
    st.caption(f"{study_views.grid_text(spec)} · base: {describe(ExperimentConfig.from_dict(spec.base))} · created "
               f"{study.created_at:%Y-%m-%d %H:%M} UTC")
    with st.container(key="studies_progress"):
        bar, actions = st.columns([5, 1], vertical_alignment="center")
        bar.progress(study_views.study_fraction(counts), text=study_views.study_progress_text(counts))
        if any(r.status == "running" and r.cancel_requested for r in runs):
            actions.caption("cancelling…")
        elif active:
            actions.button("Cancel", key="studies_cancel", icon=":material/stop:", width="stretch",
                           on_click=runner.cancel_study, args=(store, study_id),
                           help="Running runs stop within a second; no more start. Resume reruns them.")
        elif study_views.study_fraction(counts) < 1:
            actions.button("Resume", key="studies_resume", icon=":material/play_arrow:", width="stretch",
                           type="primary", on_click=on_resume, args=(study_id,),
                           help="Trains the runs that have no result yet, in the background; finished runs are "
                                "kept.")
    if active:
        st.caption("Training in the background: this view refreshes every few seconds. Closing the tab does not "
                   "stop it.")
    if active != active_before:
        st.rerun()  # started or ended: rerun the page, so the refresh rate follows

    stats = effects_section(study.name, frame, factors)
    ranking_section(study.name, frame, factors, stats)
    if runs:
        curves_section(study.name, runs, factors)
        st.page_link("pages/compare.py", label=f"Open these {len(runs)} runs in Compare",
                     icon=":material/stacked_line_chart:",
                     query_params={"runs": urls.format_run_ids(r.id for r in runs)})
        with st.expander(f"The {len(runs)} runs of this study"):
            st.dataframe(study_views.study_runs_view(frame, factors), column_config={
                "wall_time_s": st.column_config.NumberColumn("wall time", format="%.1f s"),
                **{m: st.column_config.NumberColumn(label, format="%.4f")
                   for m, label in study_views.STUDY_METRICS.items()}}, placeholder="–")


# ---------------------------------------------------------------------- the page
st.title("Studies")
st.caption("A study trains every combination of the values you vary, each over several seeds, in background "
           "processes, then says which choices mattered and by how much. Close the tab whenever you like: the "
           "study goes on, and a stopped one resumes where it left off.")
toast = st.session_state.pop("studies_toast", None)
if toast:
    st.toast(toast, icon=":material/rocket_launch:")

studies = list_studies_with_progress(store)
by_id = {item.study.id: item for item in studies}
st.session_state.setdefault("studies_mode", "view" if studies else "launch")
mode = st.segmented_control("Show", list(MODES), key="studies_mode", format_func=MODES.get, required=True,
                            label_visibility="collapsed")

if mode == "launch":
    draft = read_draft()
    errors = dict(draft.errors)
    resumes, todo = None, None
    if draft.spec is not None:
        try:
            resumes = existing_study(store, draft.spec)
        except ConfigError as exc:
            errors["name"] = forms.error_message(exc)
        if resumes is not None:  # what a launch would still train (a dead run's cell counts as busy until then)
            todo = [slot.cfg for slot in sort_slots(store, resumes).todo]
    refused = st.session_state.get("studies_refused")
    if refused and refused["spec"] is None and not draft.errors:  # refused for bad inputs, now fixed
        st.session_state.pop("studies_refused")
        refused = None
    if refused and refused["spec"] is not None:  # refused by the launch itself: until the inputs change
        if draft.spec is not None and draft.spec.to_dict() == refused["spec"]:
            errors |= refused["errors"]
        else:
            refused = None
    launch_form(draft, errors, resumes, refused=bool(refused), todo=todo)
    st.stop()

# ---------------------------------------------------------------------- the selection, from the URL
if not studies:
    st.info("**No studies yet.** Press *New study* above: the canonical one (BatchNorm × activation × loss, 3 seeds, "
            "24 runs) is filled in, or build your own grid. From a terminal: `python -m core study --study "
            "bn-act-loss`.", icon=":material/science:")
    st.stop()

url_value = st.query_params.get("study", "")
if url_value != st.session_state.get("studies_url"):
    named = [i for i, s in by_id.items() if s.study.name == url_value.strip()] if url_value else []
    chosen, problem = (named[0], None) if named else urls.resolve_study(url_value, by_id)  # a name, or an id
    if chosen is None and not url_value:
        chosen = st.session_state.get("studies_selected")  # back from another page without ?study=
    st.session_state["studies_selected"] = chosen
    st.session_state["studies_problem"] = problem
    st.session_state["studies_url"] = url_value
selected = st.session_state.get("studies_selected")
if selected not in by_id:
    selected = studies[0].study.id  # the newest
if st.session_state.get("studies_problem"):  # and which study is shown instead, since the link does not say
    st.warning(f"In the link's `?study=`: {st.session_state['studies_problem']}. Showing the newest study, "
               f"#{selected}.", icon=":material/link_off:")
if st.query_params.get("study") != str(selected) and not st.session_state.get("studies_problem"):
    show_study(selected)  # a bad link stays in the address bar, with its warning, until another study is picked
st.session_state["studies_pick"] = selected
st.selectbox("Study", list(by_id), key="studies_pick", on_change=on_pick,
             format_func=lambda i: study_views.study_label(by_id[i]))

active = study_views.study_active(by_id[selected].counts, scheduler_alive=runner.study_running(store, selected))
st.fragment(study_view, run_every=LIVE_REFRESH_S if active else None)(selected, active)
