"""Compare: runs side by side. The selection lives in the URL (?runs=3,7,12), the chart settings in the sidebar.

A large selection (a study's 24 runs) stays usable: above `COMPACT_RUNS` runs the picker folds into a popover
behind one summary line, a study's runs are added in one pick, the legend drops the prefix the run names share,
and runs of one study are grouped by its varied fields (one mean line per variant) until the user says otherwise.
"""

import pandas as pd
import streamlit as st

from core.presentation import (charts, export, formatting, legend, report, run_groups, run_tables, selection, urls,
                               zoom)
from core.store import Store
from core.store.metrics import traces_frame

if "app_store" not in st.session_state:  # the server's first request came here, before app.py ran
    st.session_state["app_goto"] = ("pages/compare.py", st.query_params.to_dict())
    st.switch_page("app.py")
store: Store = st.session_state["app_store"]
OPT = "compare_opt_"  # + setting name: the sidebar widgets
LAYOUT_LABELS = {"overlay": "One chart", "metric": "One panel per metric", "field": "One column per config value"}
X_LABELS = {"step": "step", "epoch": "epoch", "time": "time"}
BAND_LABELS = {"std": "± std", "minmax": "min–max", "ci95": "95% CI"}
LIVE_REFRESH_S = 2.0
COMPACT_RUNS = 8  # more runs than this: one summary line, and the picker (a wall of chips by then) in a popover
NONE = ""  # "no field" in the colour and dash pickers (None would read as "nothing chosen yet")
DOWNLOAD_ICONS = {"png": ":material/image:", "svg": ":material/image:", "pdf": ":material/picture_as_pdf:",
                  "html": ":material/code:", "csv": ":material/table_view:", "summary": ":material/table_view:",
                  "differences": ":material/table_view:", "report": ":material/description:"}


@st.cache_data(show_spinner=False, max_entries=16)
def load_series(_store: Store, url: str, ids: tuple[int, ...], metrics: tuple[str, ...], token: tuple,
                steps: tuple[int, int] | None = None, points: int | None = None,
                fields: tuple[str, ...] = ("epoch", "wall_time")) -> tuple[pd.DataFrame, bool]:
    """The chosen metrics of the chosen runs within `steps` (None: all), read sized to `points` per curve (None:
    every point) with the optional `fields` the x axis needs, and whether any curve was reduced; `token` changes
    when any of them logs more."""
    traces = _store.traces(list(ids), list(metrics), x_range=steps, max_points=points, fields=fields)
    return traces_frame(traces), any(t.reduced for t in traces)


@st.cache_data(show_spinner=False, max_entries=16)
def load_metric_keys(_store: Store, url: str, ids: tuple[int, ...], token: tuple) -> list[str]:
    return run_tables.metric_options(_store.metric_keys_for(ids))


def on_pick() -> None:
    """The run picker changed: the URL follows, so the comparison can be shared and reloaded."""
    ids = list(st.session_state["compare_runs"])
    text = urls.format_run_ids(ids)
    st.session_state[OPT + "zoom"] = None  # other runs: the whole of them
    st.session_state["compare_selected"] = ids
    st.session_state["compare_url"] = text
    st.session_state["compare_problems"] = []
    if text:
        st.query_params["runs"] = text
    elif "runs" in st.query_params:
        del st.query_params["runs"]


def on_add_study() -> None:
    """A study was picked in "Add a study's runs": its runs join the selection (and the URL); the picker resets."""
    study_id = st.session_state.get("compare_add_study")
    st.session_state["compare_add_study"] = None
    if study_id is None:
        return
    all_runs = st.session_state["app_store"].list_runs()
    st.session_state["compare_runs"] = selection.with_study_runs(st.session_state.get("compare_runs", []), all_runs,
                                                                  study_id)
    on_pick()


def follow_default(name: str, default) -> None:
    """Setting `name` takes `default` when the default changes (another selection), not on every run: a choice
    the user made stays while the selection keeps the same default."""
    remembered = f"compare_{name}_default"
    if st.session_state.get(remembered) != default:
        if remembered in st.session_state or OPT + name not in st.session_state:
            st.session_state[OPT + name] = default
        st.session_state[remembered] = default


def keep_valid(key: str, allowed: list, default) -> None:
    """A remembered setting that no longer fits the selection falls back to `default`."""
    value = st.session_state.get(key, default)
    if isinstance(value, list):
        value = [v for v in value if v in allowed]
    elif value not in allowed:
        value = default
    st.session_state[key] = value


# ---------------------------------------------------------------------- the selection, from the URL
st.title("Compare")
runs = store.list_runs()
if not runs:
    st.info("**Nothing to compare yet.** Train two or more runs (the Overview launches the article's presets in one "
            "click), then pick them here or tick them on the Runs page and press *Open in Compare*.",
            icon=":material/stacked_line_chart:")
    st.page_link("pages/overview.py", label="Go to the Overview", icon=":material/home:")
    st.stop()
by_id = {r.id: r for r in runs}

url_value = ",".join(st.query_params.get_all("runs"))
if url_value != st.session_state.get("compare_url"):
    if not url_value and st.session_state.get("compare_selected"):
        # Back from another page without ?runs=: keep the last comparison, and show it in the URL again.
        url_value = urls.format_run_ids([i for i in st.session_state["compare_selected"] if i in by_id])
        if url_value:
            st.query_params["runs"] = url_value
    else:
        from_url = urls.resolve_selection(url_value, by_id)
        st.session_state["compare_selected"] = list(from_url.ids)
        st.session_state["compare_problems"] = list(from_url.problems)
    st.session_state["compare_url"] = url_value
for problem in st.session_state.get("compare_problems", []):
    st.warning(f"In the link's `?runs=`: {problem}.", icon=":material/link_off:")

st.session_state["compare_runs"] = [i for i in st.session_state.get("compare_selected", []) if i in by_id]
study_names = {s.id: s.name for s in store.list_studies()} if any(r.study_id for r in runs) else {}
study_choices = selection.study_options(runs, study_names)


def run_picker() -> None:
    st.multiselect("Runs", list(by_id), key="compare_runs", on_change=on_pick, placeholder="Pick runs to compare",
                   format_func=lambda i: f"{formatting.run_label(by_id[i])} · {by_id[i].status}")


def study_picker() -> None:
    if study_choices:
        st.selectbox("Add a study's runs", list(study_choices), index=None, key="compare_add_study",
                     on_change=on_add_study, format_func=study_choices.get, placeholder="Add a study's runs",
                     label_visibility="collapsed", width=280,
                     help="Adds every run of the study to the selection, oldest first.")


chosen = [by_id[i] for i in st.session_state["compare_runs"]]
if len(chosen) > COMPACT_RUNS:
    with st.container(horizontal=True, vertical_alignment="center", key="compare_selection"):
        st.markdown(f"**{formatting.escape_markdown(selection.selection_summary(chosen, study_names))}**",
                    width="content")
        with st.popover("Edit selection", icon=":material/edit:", key="compare_selection_popover"):
            run_picker()
        study_picker()
else:
    with st.container(horizontal=True, vertical_alignment="bottom"):
        run_picker()
        study_picker()
if not chosen:
    st.info("Pick runs above, or tick them on the Runs page and press *Open in Compare*. The selection is kept in "
            "the address bar, so a comparison can be bookmarked or shared.", icon=":material/arrow_upward:")
    st.stop()
ids = tuple(r.id for r in chosen)

# ---------------------------------------------------------------------- chart settings
available = load_metric_keys(store, store.url, ids, run_tables.cache_token(chosen))
fields = run_tables.varying_fields(chosen)
keep_valid(OPT + "metrics", available, run_tables.default_metrics(available))
if not st.session_state[OPT + "metrics"]:
    st.session_state[OPT + "metrics"] = run_tables.default_metrics(available)
keep_valid(OPT + "facet", fields, fields[0] if fields else None)
keep_valid(OPT + "color", [NONE, *fields], NONE)
keep_valid(OPT + "dash", [NONE, *fields], NONE)
# Runs of one study start grouped by its varied fields (24 runs: 8 mean lines over seeds). The default is applied
# when it changes (another selection), so a grouping the user chose stays while the selection keeps the same default.
group_default = selection.default_group_by(chosen, selection.study_fields(store, chosen))
follow_default("group", group_default)
keep_valid(OPT + "group", fields, group_default)
# The legend starts off for a large ungrouped selection (it takes longer to draw than the curves)
legend_default = selection.legend_default(len(chosen), bool(st.session_state[OPT + "group"]))
follow_default("legend", legend_default)
for key, default in (("layout", "overlay"), ("x", "step"), ("smoothing", 0.0), ("log_y", False),
                     ("robust_y", False), ("band", "std"), ("legend", True)):
    st.session_state.setdefault(OPT + key, default)
if not fields and st.session_state[OPT + "layout"] == "field":
    st.session_state[OPT + "layout"] = "overlay"

with st.sidebar:
    st.header("Chart")
    metrics = st.multiselect("Metrics", available, key=OPT + "metrics")
    layouts = [name for name in LAYOUT_LABELS if name != "field" or fields]
    layout = st.radio("Layout", layouts, key=OPT + "layout", format_func=LAYOUT_LABELS.get)
    facet = st.selectbox("One column per value of", fields, key=OPT + "facet") if layout == "field" else None
    x = st.segmented_control("x axis", list(X_LABELS), key=OPT + "x", format_func=X_LABELS.get,
                             help="time: seconds since the run started") or "step"
    smoothing = st.slider("Smoothing", 0.0, 0.99, step=0.01, key=OPT + "smoothing",
                          help="TensorBoard's debiased exponential moving average; the raw line stays faint "
                               "behind. 0 is off.")
    log_y = st.toggle("Log y", key=OPT + "log_y")
    robust_y = st.toggle("Ignore outliers in the y range", key=OPT + "robust_y",
                         help="Fit the y axis to the bulk of the values, so a single spike does not flatten "
                              "every curve.")
    st.header("Style and groups")
    if not fields:
        st.caption("The selected runs share one config: nothing to colour, dash or group by.")
    color_by = st.selectbox("Colour by", [NONE, *fields], key=OPT + "color",
                            format_func=lambda f: f or "each run its own colour") or None
    dash_by = st.selectbox("Dash by", [NONE, *fields], key=OPT + "dash",
                           format_func=lambda f: f or "none") or None
    group_by = st.multiselect("Group runs by", fields, key=OPT + "group", placeholder="no grouping",
                              help="Runs with the same values of these fields become one mean line with a band, "
                                   "aligned on a common x grid (seeds of one config, say).")
    band = st.segmented_control("Band", list(BAND_LABELS), key=OPT + "band", format_func=BAND_LABELS.get,
                                disabled=not group_by) or "std"
    show_legend = st.toggle("Legend", key=OPT + "legend",
                            help="Hide it to give the plot the room; a long legend sits below the plot.")

running = any(r.status == "running" for r in chosen)


def download_buttons(downloads: list) -> None:
    with st.container(horizontal=True):
        for d in downloads:  # on_click="ignore": a download does not rerun the page
            st.download_button(d.label, d.make, file_name=d.file_name, mime=d.mime, key=f"compare_export_{d.key}",
                               icon=DOWNLOAD_ICONS.get(d.key), on_click="ignore")


def export_area(figure, fresh: list, settings: dict) -> None:
    """Downloads of the chart as shown, its data and tables, and the report; files are made when clicked."""
    for key, default in (("export_width", export.DEFAULT_WIDTH), ("export_height", None),
                         ("export_scale", export.DEFAULT_SCALE["png"])):
        st.session_state.setdefault(OPT + key, default)
    with st.expander("Export", icon=":material/download:"):
        problem = export.image_export_problem()
        st.markdown("**Image** · the chart as shown, in a light theme with its title, legend and axis titles")
        sizes = {}
        if problem:
            st.warning(problem, icon=":material/hide_image:")
        else:
            row = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
            own_height = figure.layout.height or export.DEFAULT_HEIGHT
            sizes = {
                "width": row[0].number_input("Width (px)", 50, 10000, step=50, key=OPT + "export_width"),
                "height": row[1].number_input("Height (px)", 50, 10000, step=50, key=OPT + "export_height",
                                              placeholder=f"auto ({own_height})",
                                              help="Empty: the chart's own height, which grows with its panels."),
                "png_scale": row[2].number_input("PNG scale", 0.5, 10.0, step=0.5, key=OPT + "export_scale",
                                                 help="Image pixels per px: 2 is crisp on slides. SVG and PDF are "
                                                      "vector, drawn at width × height."),
            }
        downloads = report.comparison_downloads(store, fresh, figure=figure, metrics=metrics, settings=settings,
                                                **sizes)
        if not problem:
            with row[3]:
                download_buttons([d for d in downloads if d.needs_browser])
        st.markdown("**Interactive and data** · HTML works offline; CSV holds every stored value, not the "
                    "reduced points the chart draws")
        download_buttons([d for d in downloads if not d.needs_browser])


ZOOM = zoom.ZoomKeys(steps=OPT + "zoom", version="compare_zoom_version", chart="compare_chart")


def typed_zoom() -> None:
    try:
        ZOOM.set(st.session_state, zoom.check_range(st.session_state["compare_zoom_first"],
                                                    st.session_state["compare_zoom_last"]))
        st.session_state.pop("compare_zoom_error", None)
    except ValueError as exc:
        st.session_state["compare_zoom_error"] = str(exc)


@st.fragment(run_every=LIVE_REFRESH_S if running else None)
def chart_and_summary() -> None:
    fresh = [r for r in store.list_runs() if r.id in ids]
    fresh.sort(key=lambda r: ids.index(r.id))
    steps = ZOOM.current(st.session_state) if x == "step" else None
    # a smoothed zoom reads from the runs' start: the EMA at a step depends on every step before it
    read = (0, steps[1]) if steps and smoothing else steps
    series, reduced = load_series(store, store.url, ids, tuple(metrics), run_tables.cache_token(fresh), read,
                                  zoom.read_points(smoothing), zoom.X_FIELDS[x])
    if steps and not series.empty and not series["step"].between(*steps).any():
        series = series.iloc[:0]  # nothing in the zoomed range itself
    last_step = max((int(s) for s in (r.summary.get("steps") for r in fresh) if isinstance(s, int)), default=None)
    if not metrics:
        st.info("Pick at least one metric in the sidebar.")
    else:
        if steps and series.empty:  # a typed range past the runs' ends: say where they end
            st.info(f"No values of these metrics between steps {steps[0]:,} and {steps[1]:,}"
                    + (f": these runs end by step {last_step:,}" if last_step is not None else "")
                    + ". Press *Whole run*, or type another range.", icon=":material/zoom_out:")
        settings = dict(x=x, smoothing=smoothing, log_y=log_y, layout=layout, facet_field=facet, color_by=color_by,
                        dash_by=dash_by, group_by=group_by, band=band, robust_y=robust_y, show_legend=show_legend)
        frame, prefix = selection.legend_runs(fresh)
        try:
            figure = charts.comparison_figure(series, frame, metrics=metrics, title=legend.prefix_title(prefix) or None,
                                              diverged=run_tables.diverged_ids(fresh), window=steps, **settings)
        except ValueError as exc:
            st.error(f"This chart cannot be drawn: {exc}")
        else:
            if x == "step":  # dragging picks a range of steps to read again at full resolution
                zoom.zoomable(figure, steps)
            if not show_legend and not legend_default:
                st.caption(f"The legend is off for {len(chosen):,} runs: it takes longer to draw than the curves. "
                           "Hover a line for its run, or turn the legend on under Style and groups.")
            st.plotly_chart(figure, key=ZOOM.chart_key(st.session_state), config={"displaylogo": False},
                            on_select="rerun" if x == "step" else "ignore", selection_mode="box")
            with st.container(horizontal=True, vertical_alignment="center"):
                if not (steps and series.empty):  # a range past the runs' ends is said above the chart
                    st.caption(zoom.zoom_caption(steps, reduced=reduced) if x == "step" else
                               "Zooming into a range of steps works on the step axis.")
                if steps is not None:
                    st.button("Whole run", key="compare_whole_run", icon=":material/zoom_out_map:",
                              on_click=ZOOM.set, args=(st.session_state, None))
                with st.popover("Steps…", icon=":material/zoom_in:", disabled=x != "step"):
                    st.number_input("From step", min_value=0, step=100, key="compare_zoom_first",
                                    value=steps[0] if steps else 0)
                    st.number_input("To step", min_value=1, step=100, key="compare_zoom_last",
                                    value=steps[1] if steps else max(1, last_step or 1000))
                    st.button("Zoom", key="compare_zoom_apply", on_click=typed_zoom)
                    if st.session_state.get("compare_zoom_error"):
                        st.error(st.session_state["compare_zoom_error"])
            export_area(figure, fresh, settings)
    if running:
        st.caption("Some of these runs are still training: the chart refreshes every few seconds.")
    st.subheader("Summary")
    # as text: the grid's own "%.4g" writes 6.5e18 out in full, and a missing value as "None"
    st.dataframe(run_tables.summary_display(run_tables.summary_table(fresh)), column_config={
        "duration_s": st.column_config.TextColumn("duration"),
        **{key: st.column_config.TextColumn(label) for key, label in run_tables.SUMMARY_METRICS.items()}})
    found = run_tables.findings_table(fresh)
    with st.expander(f"Findings: {len(found)} (problems and warnings)" if len(found) else
                     "Findings: no problem or warning", icon=":material/troubleshoot:",
                     expanded=bool(len(found)) and len(fresh) <= 8):
        if len(found):
            st.dataframe(found, hide_index=True, column_config={
                "finding": st.column_config.TextColumn("finding", width="large")})
            st.caption("Causes come first; `python -m core fix RUN_ID` proves a fix over seeds.")
        else:
            st.caption("None of these runs shows a problem or a warning.")


chart_and_summary()


def group_picker(side: str, kind: str, column, options: list, default_index: int) -> object:
    """Group `side`'s members: a field value, a tag, or runs picked by name."""
    key = f"compare_group_{side.lower()}_{kind}"  # one widget per kind: each keeps its own choice
    if kind == "pick":
        return column.multiselect(f"Group {side}", options, key=key, placeholder="pick runs",
                                  format_func=lambda i: formatting.run_label(by_id[i]))
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[min(default_index, len(options) - 1)]
    return column.selectbox(f"Group {side}", options, key=key)


def group_difference_section() -> None:
    """Two groups of the compared runs and the difference of a summary number with Welch's 95% CI. The expander
    runs its body only while open, so it costs the page nothing otherwise."""
    with st.expander("Difference between two groups", icon=":material/compare_arrows:", key="compare_groups",
                     on_change="rerun") as box:
        if not box.open:
            return
        tags = run_groups.run_tags(chosen)
        kinds = [*(f"field:{f}" for f in fields), *(["tag"] if len(tags) >= 2 else []), "pick"]
        kind_box, metric_box = st.columns(2)
        kind = kind_box.selectbox("Groups by", kinds, key="compare_group_kind",
                                  format_func=lambda k: f"config field {k[6:]}" if k.startswith("field:") else
                                  run_groups.GROUP_KINDS[k].lower())
        metric = metric_box.selectbox("Compared on", list(run_groups.GROUP_METRICS), key="compare_group_metric",
                                      format_func=run_groups.GROUP_METRICS.get,
                                      help="A number from each run's summary; the exact val loss is one yardstick "
                                           "for clamped BCE and logits runs alike.")
        options = (run_groups.field_values(chosen, kind[6:]) if kind.startswith("field:") else
                   tags if kind == "tag" else [r.id for r in chosen])
        left, right = st.columns(2)
        a = group_picker("A", kind, left, options, 0)
        b = group_picker("B", kind, right, options, 1)
        group_a, group_b = run_groups.split_runs(chosen, kind, a, b)
        if kind == "pick":
            name_a, name_b = "A", "B"
        else:
            name_a, name_b = (f"{kind[6:]}={v}" if kind != "tag" else f"tag {v}" for v in (a, b))
        result = run_groups.group_difference(group_a, group_b, metric)
        st.markdown(formatting.escape_markdown(run_groups.difference_sentence(
            result, name_a, name_b, metric, unfinished=run_groups.left_out(group_a, group_b))))
        st.dataframe(run_groups.groups_table(result, name_a, name_b), hide_index=True, key="compare_group_table",
                     column_config={c: st.column_config.NumberColumn(c, format="%.4g")
                                    for c in ("mean", "sd", "95% CI low", "95% CI high", "p (Welch)")},
                     placeholder="–")
        study = selection.common_study(chosen)
        st.caption("B minus A over the finished runs of each group (runs without the number left out). The groups "
                   "are not paired, so the 95% interval is Welch's t interval, which does not assume equal variances."
                   + (f" These runs are one study's: [its page](/studies?study={study}) pairs each variant's runs "
                      "seed by seed and averages over the other fields' levels, so it can find a difference this "
                      "leaves unclear." if study is not None else ""))


group_difference_section()

st.subheader("Config differences")
if fields:
    st.dataframe(run_tables.config_differences(chosen), placeholder="–")
else:
    st.caption("The selected runs have the same config" + (" (one run)." if len(chosen) == 1 else "."))
