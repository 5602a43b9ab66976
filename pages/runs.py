"""Runs: every run in one sortable, filterable table; select runs to compare, edit or delete them, or one to
read its config, every metric and its findings."""

import json

import pandas as pd
import streamlit as st

from core.analysis.effects import change_parts, change_text
from core.analysis.findings import findings
from core.jobs import runner
from core.presentation import calibration, charts, export, formatting, report, run_tables, urls, zoom
from core.store import STATUSES, RunNotFound, Store
from core.store.metrics import traces_frame

if "app_store" not in st.session_state:  # the server's first request came here, before app.py ran
    st.session_state["app_goto"] = ("pages/runs.py", st.query_params.to_dict())
    st.switch_page("app.py")
store: Store = st.session_state["app_store"]
SEVERITY_BOX = {"problem": st.error, "warning": st.warning, "info": st.info, "good": st.success}
SEVERITY_ICON = {"problem": ":material/error:", "warning": ":material/warning:", "info": ":material/info:",
                 "good": ":material/check_circle:"}


@st.cache_data(show_spinner=False, max_entries=32)
def load_series(_store: Store, url: str, run_id: int, token: tuple,
                steps: tuple[int, int] | None = None) -> tuple[pd.DataFrame, bool]:
    """Every metric of one run within `steps` (None: all), read sized to the chart, and whether any was reduced;
    `token` changes when the run logs more, so a running run stays fresh."""
    traces = _store.traces([run_id], None, x_range=steps, max_points=zoom.READ_POINTS)
    return traces_frame(traces), any(t.reduced for t in traces)


def run_zoom(run_id: int) -> zoom.ZoomKeys:
    """Where the run's charts keep their zoom (a box dragged across them, or the whole run)."""
    return zoom.ZoomKeys(steps=f"runs_zoom_{run_id}", version=f"runs_zoom_version_{run_id}",
                         chart=f"runs_metrics_{run_id}")


def table_columns() -> dict:
    number = st.column_config.NumberColumn
    labels = run_tables.TABLE_LABELS
    return {
        "name": st.column_config.TextColumn(labels["name"], width="medium"),
        "progress": st.column_config.ProgressColumn(labels["progress"], min_value=0.0, max_value=1.0,
                                                    format="percent", width="small"),
        "tags": st.column_config.ListColumn(labels["tags"]),
        "created": st.column_config.DatetimeColumn(labels["created"], format="YYYY-MM-DD HH:mm",
                                                   timezone=st.context.timezone),
        "duration_s": number(labels["duration_s"], format="%.1f s"),
        "dataset": st.column_config.TextColumn(labels["dataset"]),
        "batchnorm": st.column_config.CheckboxColumn(labels["batchnorm"], width="small"),
        "clamp_eps": number(labels["clamp_eps"], format="%g"),
        "lr": number(labels["lr"], format="%g"),
        "seed": number(labels["seed"], format="%d", width="small"),
        "final_val_loss": number(labels["final_val_loss"], format="%.4f"),
        "best_val_loss": number(labels["best_val_loss"], format="%.4f"),
        "final_val_acc": number(labels["final_val_acc"], format=run_tables.PERCENT_FORMAT),
        "final_val_auc": number(labels["final_val_auc"], format="%.3f"),
        "peak_clamp_frac": number(labels["peak_clamp_frac"], format=run_tables.PERCENT_FORMAT),
        "notes": st.column_config.TextColumn(labels["notes"], width="medium"),
    }


def save_edits(changes: dict[int, dict], before: pd.DataFrame | None = None) -> bool:
    """Write edited names, tags and notes to the store; False (and a message) when one is refused. With `before`
    (the table as it was), what they replaced is kept for Undo: edits save at once, and one keystroke in the grid
    (Ctrl+A, then Delete) clears every selected run's tags and notes."""
    undo: dict[int, dict] = {}
    for run_id, change in changes.items():
        try:
            if "name" in change:
                store.rename_run(run_id, change["name"])
            if "tags" in change:
                store.set_tags(run_id, change["tags"])
            if "notes" in change:
                store.set_notes(run_id, change["notes"])
        except (ValueError, RunNotFound) as exc:
            st.session_state["runs_edit_error"] = f"Run #{run_id} was not changed: {exc}."
            return False
        if before is not None:
            was = before.loc[run_id]
            undo[run_id] = {field: list(was["tags"]) if field == "tags" else str(was[field] or "")
                            for field in change}
    if undo:
        st.session_state["runs_undo"] = undo
    return True


def undo_edits() -> None:
    """Put back what the last saved edit replaced, and start the editor afresh from the store."""
    save_edits(st.session_state.pop("runs_undo", {}))
    st.session_state["runs_edit_version"] = st.session_state.get("runs_edit_version", 0) + 1


def close_delete() -> None:
    st.session_state.pop("runs_confirm_delete", None)


@st.dialog("Delete runs?", on_dismiss=close_delete)
def confirm_delete(runs: list) -> None:
    st.markdown(f"This deletes **{len(runs)} run{'s' if len(runs) != 1 else ''}** with all their metrics, tags and "
                "notes. It cannot be undone.")
    st.markdown("\n".join(f"- {formatting.escape_markdown(formatting.run_label(r))} ({r.status})" for r in runs))
    if any(r.status == "running" for r in runs):
        st.warning("Runs that are still training stop at their next flush.")
    yes, no = st.columns(2)
    if yes.button("Delete", type="primary", key="runs_delete_confirm", width="stretch"):
        for run in runs:
            try:
                store.delete_run(run.id)
            except RunNotFound:
                pass
        st.session_state["runs_selected"] = []
        close_delete()
        st.rerun()
    if no.button("Keep them", key="runs_delete_cancel", width="stretch"):
        close_delete()
        st.rerun()


def export_run(run, figure) -> None:
    """The run's chart as shown and all its metrics as files, each made when its button is clicked."""
    with st.expander("Export", icon=":material/download:"):
        problem = export.image_export_problem()
        if problem:
            st.warning(problem, icon=":material/hide_image:")
        with st.container(horizontal=True):
            for d in report.run_downloads(store, run, figure=figure):
                if not (d.needs_browser and problem):
                    st.download_button(d.label, d.make, file_name=d.file_name, mime=d.mime, on_click="ignore",
                                       key=f"runs_export_{run.id}_{d.key}", icon=":material/download:")
        st.caption(f"Images are {export.DEFAULT_WIDTH} px wide (the PNG at {export.DEFAULT_SCALE['png']:g}x) in a "
                   "light theme; the CSV holds every stored value of every metric.")


def start_fix(run_id: int) -> None:
    try:
        runner.launch_fix(store, run_id, seeds=3)
    except (ValueError, RunNotFound) as exc:
        st.session_state["runs_fix_error"] = str(exc)


def prove_fix(run, finding) -> None:
    """One click trains the run's config and the fix over 3 seeds in the background and says whether it helped."""
    said = change_text(finding.fix)
    change = ", ".join(f"`{part}`" for part in change_parts(finding.fix))
    state = runner.fix_state(store, run.id)
    if state is None:
        st.button(f"Prove the fix: {said} over 3 seeds", key=f"runs_fix_{run.id}", icon=":material/science:",
                  on_click=start_fix, args=(run.id,),
                  help=f"Trains this run's config and the fixed one with seeds 0, 1, 2 (runs tagged fix:{run.id}) "
                       "and compares their exact validation loss with a 95% CI.")
        if st.session_state.get("runs_fix_error"):
            st.error(st.session_state.pop("runs_fix_error"))
        return

    @st.fragment(run_every=2.0 if state.status == "running" else None)
    def verdict() -> None:
        now = runner.fix_state(store, run.id)
        if now is None or now.status == "running":
            st.info(f"Proving the fix {change}: training 6 runs (tagged fix:{run.id})…", icon=":material/science:")
        elif now.status == "done":
            box = st.success if now.verdict["verdict"] == "helped" else st.warning
            box(now.verdict["sentence"], icon=":material/science:")
        else:
            st.error(f"Proving the fix failed: {now.error}")
    verdict()


def show_run(run) -> None:
    """One run: headline numbers, then findings, every metric, the whole config and the raw summary."""
    st.header(formatting.escape_markdown(formatting.run_label(run)))  # a name is text, not markup
    tags = ", ".join(f"“{formatting.escape_markdown(t)}”" for t in run.tags)  # quoted: a tag may hold a comma
    st.caption(f"{formatting.status_label(run.status)} · created {run.created_at:%Y-%m-%d %H:%M} UTC · "
               f"{formatting.format_duration(run.duration_s)} on {run.device or '–'} ({run.dtype or '–'}) · "
               f"torch {run.torch_version or '–'}" + (f" · tags: {tags}" if tags else ""))
    if run.status == "running":
        st.progress(run_tables.progress(run) or 0.0, text=run_tables.progress_text(run))
    summary = run.summary
    headline = [("final val loss", "final_val_loss", "{:.4f}"), ("best val loss", "best_val_loss", "{:.4f}"),
                ("val acc", "final_val_acc", "{:.1%}"), ("val AUC", "final_val_auc", "{:.3f}"),
                ("peak clamp_frac", "peak_clamp_frac", "{:.1%}")]
    for col, (label, key, fmt) in zip(st.columns(len(headline)), headline):
        value = summary.get(key)
        col.metric(label, fmt.format(value) if isinstance(value, (int, float)) and value == value else "–")
    if run.notes:
        st.markdown(f"**Notes:** {run.notes}")

    tab_findings, tab_metrics, tab_config, tab_summary = st.tabs(["Findings", "Metrics", "Config", "Summary"])
    with tab_findings:
        found = findings(run)
        if not found:
            st.caption("Nothing to report for this run.")
        for f in found:
            fix = ", ".join(f"`{part}`" for part in change_parts(f.fix or {}))
            SEVERITY_BOX[f.severity](f"**{f.title}**" + (f"\n\n{f.detail}" if f.detail else "")
                                     + (f"\n\n**Cause:** {f.cause}" if f.cause else "")
                                     + (f" · **fix:** {fix}" if fix else ""), icon=SEVERITY_ICON[f.severity])
        if run.error and run.status in ("failed", "diverged", "interrupted"):
            st.code(run.error, language=None)
        fixable = next((f for f in found if f.fix), None)
        if fixable is not None:
            prove_fix(run, fixable)
    with tab_metrics:
        keys_of_zoom = run_zoom(run.id)
        steps = keys_of_zoom.current(st.session_state)
        series, reduced = load_series(store, store.url, run.id, run_tables.cache_token([run]), steps)
        if len(series):
            keys = run_tables.metric_options(series["key"].unique())  # the losses first, per-layer norms last
            figure = zoom.zoomable(charts.run_figure(series, run_name=run.name, keys=keys), steps)
            st.plotly_chart(figure, key=keys_of_zoom.chart_key(st.session_state), on_select="rerun",
                            selection_mode="box")
            with st.container(horizontal=True, vertical_alignment="center"):
                st.caption(zoom.zoom_caption(steps, reduced=reduced))
                if steps is not None:
                    st.button("Whole run", key=f"runs_whole_run_{run.id}", icon=":material/zoom_out_map:",
                              on_click=keys_of_zoom.set, args=(st.session_state, None))
            export_run(run, figure)
        else:
            st.caption("This run has not logged any metric yet.")
        reliability = calibration.calibration_figure(summary)
        if reliability is not None:
            st.plotly_chart(reliability, key=f"runs_calibration_{run.id}")
            st.caption("Each point is a bin of validation predictions: its mean predicted probability against the "
                       "share of positives in it (marker size: samples). On the diagonal the probabilities mean what "
                       "they say; below it the model is over-confident.")
    with tab_config:
        st.dataframe(run_tables.config_table(run.config), hide_index=True,
                     column_config={"changed": st.column_config.CheckboxColumn("≠ default", width="small"),
                                    "meaning": st.column_config.TextColumn("meaning", width="large")})
        st.caption("The same config as JSON, for `python -m core train --config FILE`:")
        st.code(json.dumps(run.config, indent=2), language="json")
        if st.button("Train again with this config", key=f"runs_retrain_{run.id}", icon=":material/replay:"):
            st.session_state["train_load_config"] = (run.id, run.config)
            st.switch_page("pages/train.py")
    with tab_summary:
        # the value column sized for a float written out in full (5.0782715996389616e+29): sized to the short
        # values, the grid cut long ones with nothing to show it ("5.07827")
        st.dataframe({"value": {k: formatting.format_value(v) for k, v in summary.items()}}, width="content",
                     column_config={"value": st.column_config.TextColumn("value", width="large")})
        st.caption(f"host {run.host or '–'} · pid {run.pid or '–'} · started "
                   f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC" if run.started_at else "not started")


# ---------------------------------------------------------------------- the page
st.title("Runs")
runs = store.list_runs()
if not runs:
    st.info("**No runs yet.** Train one on the Train page, launch an article preset from the Overview, or run "
            "`python -m core train --preset article-example` in a terminal: every run lands here.",
            icon=":material/inventory_2:")
    st.page_link("pages/train.py", label="Configure and train a run", icon=":material/play_circle:")
    st.stop()
by_id = {r.id: r for r in runs}

# A link to one run, /runs?run=7, opens its view: the run is selected, and the filters that would hide it are cleared.
url_run = st.query_params.get("run")
if url_run != st.session_state.get("runs_url"):
    st.session_state["runs_url"] = url_run
    given = urls.pieces(st.query_params.get_all("run"))  # ?run=5&run=6 or ?run=5,6 names two: said, not one taken
    run_id, problem = urls.resolve_run(given if len(given) > 1 else url_run, by_id)
    if len(given) > 1:
        both = ",".join(given)
        problem = (f"it names {len(given)} runs ({', '.join(given)}), and a run's view shows one: tick one below, "
                   f"or see them side by side on Compare: [/compare?runs={both}](/compare?runs={both})")
    st.session_state["runs_url_problem"] = problem
    if run_id is not None:
        st.session_state["runs_selected"] = [run_id]
        for key in [k for k in st.session_state if str(k).startswith(("runs_search", "runs_status", "runs_filter_"))]:
            del st.session_state[key]
url_warning = st.empty()  # filled once the table's selection is known: ticking a run settles the link

in_studies = sorted({r.study_id for r in runs if r.study_id is not None})
options = run_tables.filter_options(runs)
# A filter keeps only values some run still has: a value whose last run was deleted cannot show in its box, and
# kept, it hid every run with nothing on screen to clear it
for key, allowed in [("runs_filter_study", in_studies)] + [(f"runs_filter_{f}", v) for f, v in options.items()]:
    if st.session_state.get(key):
        st.session_state[key] = [v for v in st.session_state[key] if v in allowed]
for key in [k for k in st.session_state if str(k).startswith("runs_filter_") and k != "runs_filter_study"
            and k.removeprefix("runs_filter_") not in options]:
    del st.session_state[key]  # a field every run now shares, or none has
if in_studies:
    search, status_box, study_box, more = st.columns([3, 2, 2, 1], vertical_alignment="bottom")
else:
    search, status_box, more = st.columns([3, 3, 1], vertical_alignment="bottom")
text = search.text_input("Search", key="runs_search", placeholder="name, tag or #id")
statuses = status_box.multiselect("Status", STATUSES, key="runs_status", format_func=formatting.status_label,
                                  placeholder="any status")
studies: list[int] = []
if in_studies:
    study_names = {s.id: s.name for s in store.list_studies()}
    studies = study_box.multiselect("Study", in_studies, key="runs_filter_study", placeholder="any study",
                                    format_func=lambda i: f"#{i} {study_names.get(i, '')}".strip())
config_filter = {field: st.session_state.get(f"runs_filter_{field}") or [] for field in options}
active_filters = sum(bool(v) for v in config_filter.values())
with more.popover("Config filters", icon=":material/filter_list:", width="stretch"):
    if not options:
        st.caption("All runs share the same config.")
    for field, values in options.items():
        st.multiselect(field, values, key=f"runs_filter_{field}", placeholder="any")

shown = run_tables.filter_runs(runs, statuses=statuses, config=config_filter, text=text, studies=studies)
st.caption(f"{len(shown)} of {len(runs)} runs" + (f" · {active_filters} config filter(s) on" if active_filters else "")
           + " · click a column header to sort · tick the boxes at the left to select runs")

table = run_tables.runs_table(shown)
ids = [int(i) for i in table.index]
remembered = [i for i in st.session_state.get("runs_selected", []) if i in ids]
columns = [c for c in table.columns if c != "progress" or any(r.status == "running" for r in shown)]
event = st.dataframe(run_tables.in_percent(table), key=run_tables.table_key("runs_table", ids), on_select="rerun",
                     selection_mode="multi-row",
                     selection_default={"selection": {"rows": [ids.index(i) for i in remembered]}},
                     column_config=table_columns(), column_order=columns, placeholder="–")
selected = [ids[row] for row in event.selection.rows]
st.session_state["runs_selected"] = selected
# The URL follows the selection: one run is a link to its view (/runs?run=7); none or several, no run in the URL.
one = str(selected[0]) if len(selected) == 1 else None
if one != st.query_params.get("run") and not (one is None and st.session_state.get("runs_url_problem")):
    if one is None:
        del st.query_params["run"]
    else:
        st.query_params["run"] = one
    st.session_state["runs_url"] = one
    st.session_state["runs_url_problem"] = None
if st.session_state.get("runs_url_problem"):
    url_warning.warning(f"In the link's `?run=`: {st.session_state['runs_url_problem']}.", icon=":material/link_off:")

if not selected:
    st.info("Tick one run to read its config, metrics and findings; tick several to compare, tag or delete them.",
            icon=":material/check_box:")
    st.stop()

chosen = [by_id[i] for i in selected]
count = f"{len(chosen)} run{'s' if len(chosen) != 1 else ''} selected"
with st.container(horizontal=True, vertical_alignment="center"):
    st.markdown(f"**{count}**")
    if st.button("Open in Compare", key="runs_open_compare", type="primary", icon=":material/stacked_line_chart:"):
        st.switch_page("pages/compare.py", query_params={"runs": urls.format_run_ids(selected)})
    if st.button("Delete…", key="runs_delete", icon=":material/delete:"):
        st.session_state["runs_confirm_delete"] = selected
if st.session_state.get("runs_confirm_delete"):  # kept in state, so the dialog survives its own reruns
    confirm_delete([by_id[i] for i in st.session_state["runs_confirm_delete"] if i in by_id])

if "runs_edit_error" in st.session_state:
    st.error(st.session_state.pop("runs_edit_error"))
original = run_tables.edit_frame(chosen)
edited = st.data_editor(
    original, key=run_tables.table_key("runs_edit", selected) + f"_{st.session_state.get('runs_edit_version', 0)}",
    disabled=["status"], column_config={
        "name": st.column_config.TextColumn("name", required=True, width="medium"),
        "tags": st.column_config.ListColumn("tags", help="Type a tag and press Enter"),
        "notes": st.column_config.TextColumn("notes", width="large")})
undo = st.session_state.get("runs_undo")
if undo and set(undo) <= set(selected):  # the last edit, while its runs are on show
    fields = [f for f in ("name", "tags", "notes") if any(f in change for change in undo.values())]
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"Saved the {', '.join(fields)} of run{'s' if len(undo) > 1 else ''} "
                   + ", ".join(f"#{i}" for i in undo) + ".")
        st.button("Undo", key="runs_undo_button", icon=":material/undo:", on_click=undo_edits,
                  help="Put back what this edit replaced")
else:
    st.caption("Double-click a name, tag or note to edit it; changes are saved at once, and the last can be undone.")
changes = run_tables.edit_changes(original, edited)
if changes:
    if not save_edits(changes, original):  # start the editor afresh from what the store holds
        st.session_state["runs_edit_version"] = st.session_state.get("runs_edit_version", 0) + 1
    st.rerun()  # the table above shows the new values

if len(chosen) == 1:
    st.divider()
    show_run(chosen[0])
else:
    st.caption("Select a single run to see its config, every metric and its findings.")
