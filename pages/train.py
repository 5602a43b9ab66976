"""Train: a form over every config field, launched into a background process, watched in a live panel."""

import streamlit as st

from core.experiment.config import (GROUPS, PRESETS, ConfigError, ExperimentConfig, choices, describe, field_comment,
                                    field_kind, field_names, preset)
from core.jobs import runner
from core.presentation import charts, formatting, forms, run_tables, zoom
from core.store import RunNotFound, Store
from core.store.sqlstore import MAX_TEXT, text_problem

if "app_store" not in st.session_state:  # the server's first request came here, before app.py ran
    st.session_state["app_goto"] = ("pages/train.py", st.query_params.to_dict())
    st.switch_page("app.py")
store: Store = st.session_state["app_store"]
FIELD = "train_field_"  # + config field name: the widget of that field
DEFAULTS = "(defaults)"
LIVE_METRICS = ["train_loss", "val_loss"]
LIVE_REFRESH_S = 1.0  # while a run trains
IDLE_REFRESH_S = 5.0  # otherwise: picks up runs started from the command line
LIVE_KEEP = 6  # finished runs of this session kept in the live panel
FORM_COLUMNS = 3


def load_form(cfg: ExperimentConfig) -> None:
    for name, value in forms.form_values(cfg).items():
        st.session_state[FIELD + name] = value


def on_preset() -> None:
    name = st.session_state["train_preset"]
    load_form(ExperimentConfig() if name == DEFAULTS else preset(name))
    st.session_state.pop("train_loaded_from", None)


EXACT_INT = 2**53 - 1  # JavaScript's largest exact integer (Number.MAX_SAFE_INTEGER)


def field_widget(name: str) -> None:
    """The widget of one config field, labelled with the field's name and explained by its comment."""
    kind, key, help_text = field_kind(name), FIELD + name, field_comment(name)
    if kind == "bool":
        st.checkbox(name, key=key, help=help_text)
    elif kind == "int":
        # bounded at the browser's exact integers: past 2**53 it drops the digits it cannot hold and keeps showing
        # them (a seed of 9007199254740993 stayed the last one it could); the config's own range says the rest
        st.number_input(name, key=key, step=1, min_value=-EXACT_INT, max_value=EXACT_INT, help=help_text)
    elif kind == "choice":
        st.selectbox(name, choices(name), key=key, help=help_text)
    else:
        placeholder = {"optional_float": "empty = off", "widths": "e.g. 64, 64 (empty: no hidden layer)"}.get(
            kind, "upload below, or a path" if name == "csv_path" else None)
        st.text_input(name, key=key, help=help_text, placeholder=placeholder)


def live_runs() -> list:
    """Every running run (from here or the command line), then this session's finished ones, newest first."""
    running = store.list_runs(status="running")
    shown = {r.id for r in running}
    recent = []
    for run_id in st.session_state.get("train_launched", []):
        if run_id in shown or len(recent) >= LIVE_KEEP:
            continue
        try:
            recent.append(store.get_run(run_id))
        except RunNotFound:  # deleted on the Runs page
            continue
    return running + recent


def live_card(run) -> None:
    with st.container(border=True, key=f"train_live_run_{run.id}"):
        head, action = st.columns([5, 1], vertical_alignment="center")
        label = formatting.escape_markdown(formatting.run_label(run))  # a name is text, not markup
        head.markdown(f"**{label}** &nbsp; {formatting.status_label(run.status)}")
        if run.status == "running":
            if run.cancel_requested:
                action.caption("cancelling…")
            else:
                action.button("Cancel", key=f"train_cancel_{run.id}", on_click=runner.cancel, args=(store, run.id))
            st.progress(run_tables.progress(run) or 0.0, text=run_tables.progress_text(run))
        else:
            st.caption(run_tables.outcome_text(run))
            st.page_link("pages/runs.py", label="Open its view: findings, every metric, export",
                         icon=":material/open_in_new:", query_params={"run": str(run.id)})
        series = store.metrics_frame([run.id], keys=LIVE_METRICS, max_points=zoom.READ_POINTS // 2)
        if len(series):
            st.plotly_chart(charts.run_figure(series, run_name=run.name, keys=LIVE_METRICS, cols=2),
                            key=f"train_live_chart_{run.id}", config={"displayModeBar": False})


# ---------------------------------------------------------------------- form state
if "train_load_config" in st.session_state:  # "Train again" on the Runs page hands a config over
    run_id, config = st.session_state.pop("train_load_config")
    try:
        load_form(ExperimentConfig.from_dict(config))
        st.session_state["train_loaded_from"] = run_id
    except ConfigError as exc:
        st.warning(f"Run #{run_id}'s config no longer loads ({exc}); the form keeps its values.")
elif FIELD + "dataset" not in st.session_state:  # first visit
    st.session_state.setdefault("train_preset", "article-example")
    on_preset()

upload = st.session_state.get("train_csv_upload")
if upload is not None and st.session_state.get("train_csv_saved") != upload.file_id:
    saved = forms.save_upload(upload.getvalue(), upload.name, forms.uploads_dir(store.url))
    st.session_state[FIELD + "csv_path"] = str(saved)
    st.session_state["train_csv_saved"] = upload.file_id

cfg, errors = forms.config_from_form({name: st.session_state.get(FIELD + name) for name in field_names()})
run_name = st.session_state.get("train_name") or ""
name_problem = text_problem(run_name) if run_name.strip() else None  # blank: a name made from the config
if name_problem:
    errors = {**errors, "Run name": f"Run name {name_problem}."}

# ---------------------------------------------------------------------- the page
st.title("Train")
st.caption("Start from a preset, change any field, launch. Each run trains in its own process: close the tab or "
           "restart the dashboard whenever you like, the run goes on and shows up on Runs.")
form_col, live_col = st.columns([3, 2], gap="large")

with form_col:
    picker, name_box, button = st.columns([2, 2, 1], vertical_alignment="bottom")
    picker.selectbox("Start from", [DEFAULTS, *PRESETS], key="train_preset", on_change=on_preset,
                     help="Fills every field below from a named config.")
    name_box.text_input("Run name", key="train_name", max_chars=MAX_TEXT,
                        placeholder=describe(cfg) if cfg else "default: a short description of the config")
    launch = button.button("Launch", key="train_launch", type="primary", icon=":material/rocket_launch:",
                           width="stretch")
    if "train_loaded_from" in st.session_state:
        st.caption(f"Filled from run #{st.session_state['train_loaded_from']}.")
    elif st.session_state["train_preset"] in forms.PRESET_NOTES:
        st.caption(forms.PRESET_NOTES[st.session_state["train_preset"]])

    # "Nothing was started" stays until the fields are fixed or a launch succeeds: the live panel reruns the page
    # whenever a run starts or ends anywhere, which had wiped it within seconds
    if launch and errors:
        st.session_state["train_not_started"] = True
    if not errors:
        st.session_state.pop("train_not_started", None)
    if errors and st.session_state.get("train_not_started"):
        fields = ", ".join(f"`{f}`" for f in errors)
        st.error(f"Nothing was started: {fields} {'needs' if len(errors) == 1 else 'need'} fixing (marked below).")
    if name_problem:
        st.error(errors["Run name"], icon=":material/error:")
    if launch:
        if not errors:
            new_id = runner.launch(store, cfg, name=st.session_state.get("train_name", "").strip() or None)
            st.session_state.setdefault("train_launched", []).insert(0, new_id)
            st.toast(f"Run #{new_id} started", icon=":material/rocket_launch:")

    for group, names in GROUPS.items():
        st.subheader(group, divider="gray")
        for start in range(0, len(names), FORM_COLUMNS):
            row = names[start:start + FORM_COLUMNS]
            for column, name in zip(st.columns(FORM_COLUMNS, vertical_alignment="bottom"), row):
                with column:
                    field_widget(name)
            if any(name in errors for name in row):  # the message goes right under its field
                for column, name in zip(st.columns(FORM_COLUMNS), row):
                    if name in errors:
                        column.error(errors[name], icon=":material/error:")
        if group == "Data" and st.session_state.get(FIELD + "dataset") == "csv":
            st.file_uploader("Upload a CSV file (it fills csv_path)", type=["csv"], key="train_csv_upload",
                             help="A header row, numeric feature columns and the label column named in csv_label "
                                  "with exactly two values. Saved in an uploads folder next to the database.")

with live_col:
    st.subheader("Live", divider="gray")
    shown = live_runs()
    active = tuple(r.id for r in shown if r.status == "running")

    @st.fragment(run_every=LIVE_REFRESH_S if active else IDLE_REFRESH_S)
    def live_panel(active_before: tuple[int, ...]) -> None:
        runner.refresh(store)  # a run whose process died becomes "interrupted"
        runs = live_runs()
        with st.container(key="train_live"):
            if not runs:
                st.caption("No run is training. Launch one: it shows up here with a progress bar and its loss, "
                           "and several can train at once.")
            for run in runs:
                live_card(run)
        if tuple(r.id for r in runs if r.status == "running") != active_before:
            st.rerun()  # a run started or ended: rerun the page so the refresh rate follows

    live_panel(active)
