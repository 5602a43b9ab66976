"""Export: every file is checked for what it claims (PNG signature and pixel size, SVG as XML with its legend and
axis titles, PDF header and page size, offline HTML that a browser draws without any request, CSV equal to the
stored series), on a temporary store with three tiny real runs, one of them named `<script>alert(1)</script>`.

Image tests need Chromium (Debian: `apt-get install chromium`) and are skipped with that reason without it."""

from __future__ import annotations

import argparse
import io
import math
import re
import struct
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from core.cli import export as export_cli
from core.experiment.config import ConfigError, ExperimentConfig
from core.presentation import export, images, report, run_tables
from core.presentation.charts import run_figure
from core.presentation.export import ExportUnavailable
from core.store import Store, StoreReporter
from core.training.reporting import MetricBatch, MetricRow
from core.training.trainer import train

SCRIPT_NAME = "<script>alert(1)</script>"
NOTE = "<img src=x onerror=alert(2)> lr too high"
METRICS = ["train_loss", "val_loss"]
SVG_NS = "{http://www.w3.org/2000/svg}"

needs_chromium = pytest.mark.skipif(export.find_browser() is None,
                                    reason="no Chromium/Chrome for Kaleido: apt-get install chromium")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three tiny real runs; the third ends with a NaN and an Inf train_loss (a diverging seed)."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('export') / 'runs.db'}")
    base = {"epochs": 2, "hidden": (4,), "n_samples": 120, "device": "cpu"}
    for name, extra in (("baseline", {}), (SCRIPT_NAME, {"activation": "elu", "seed": 1}),
                        ("bn & co", {"batchnorm": True})):
        cfg = ExperimentConfig(**base, **extra)
        run_id = store.create_run(name=name, config=cfg.to_dict())
        assert train(cfg, StoreReporter(store, run_id)).status == "finished"
    ids = [r.id for r in reversed(store.list_runs())]
    store.set_notes(ids[1], NOTE)
    last = int(store.series(ids[2], "train_loss")["step"].max())
    store.log_metrics(ids[2], [MetricRow("train_loss", last + 1, 1, math.nan, 9.0),
                               MetricRow("train_loss", last + 2, 1, math.inf, 9.5)])
    yield store
    export.stop_renderer()
    store.close()


@pytest.fixture(scope="module")
def ids(store):
    return [r.id for r in reversed(store.list_runs())]


@pytest.fixture(scope="module")
def fig(store, ids):
    runs = report.load_runs(store, ids)
    return report.build_comparison(store, runs, metrics=METRICS)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def svg_texts(data: bytes, css_class: str) -> list[str]:
    root = ET.fromstring(data)
    return ["".join(el.itertext()) for el in root.iter(f"{SVG_NS}text") if css_class in el.get("class", "").split()]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(page: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


# ---------------------------------------------------------------------- styling
def test_style_for_export_is_a_light_readable_copy_with_literal_names(fig):
    styled = export.style_for_export(fig, title="Loss <b>& co</b>", width=800, height=450)
    lay = styled.layout
    assert lay.paper_bgcolor == "white" and lay.plot_bgcolor == "white" and lay.showlegend is True
    assert lay.font.size >= 14 and lay.xaxis.title.font.size >= 14 and lay.yaxis.title.font.size >= 14
    assert lay.xaxis.title.text == "step" and lay.yaxis.title.text == "value"
    assert lay.title.text == "Loss &lt;b&gt;&amp; co&lt;/b&gt;"  # plotly.js would render <b> as bold
    assert (lay.width, lay.height) == (800, 450)
    names = {t.name for t in styled.data if t.showlegend is not False}
    assert "#2 &lt;script&gt;alert(1)&lt;/script&gt; · train_loss" in names
    assert any(SCRIPT_NAME in t.name for t in fig.data), "the input figure is left as it was"
    assert fig.layout.paper_bgcolor is None


def test_a_long_title_wraps_to_the_image_width_and_the_top_margin_makes_room(fig):
    title = " vs ".join(f"run number {i} of a long study" for i in range(6))  # 181 characters
    wide = export.style_for_export(fig, title=title, width=2400)
    narrow = export.style_for_export(fig, title=title, width=800)
    assert "<br>" not in wide.layout.title.text  # 2,400 px hold it on one line
    lines = narrow.layout.title.text.split("<br>")
    assert len(lines) == 3 and all(len(line) <= (800 - 40) // 11 for line in lines)
    assert " ".join(lines) == title and narrow.layout.margin.t == wide.layout.margin.t + 2 * 26


def test_style_for_export_gives_a_single_run_figure_one_legend_entry(store, ids):
    single = run_figure(store.metrics_frame([ids[1]], METRICS), run_name=SCRIPT_NAME, keys=METRICS)
    styled = export.style_for_export(single)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert [t.name for t in styled.data if t.showlegend] == [escaped] and styled.layout.title.text == escaped
    assert {t.legendgroup for t in styled.data} == {"run"}, "the one entry toggles every subplot"


# ---------------------------------------------------------------------- images
@needs_chromium
def test_png_signature_pixel_size_and_one_browser_for_many_images(fig):
    styled = export.style_for_export(fig, title="PNG")
    assert png_size(export.figure_image(styled, "png", width=640, height=360, scale=2)) == (1280, 720)
    starts = export.renderer_stats()["starts"]
    assert png_size(export.figure_image(styled, "png", width=500, height=300, scale=1)) == (500, 300)
    # the height from the figure: its own, with room for every legend row in the file's font
    assert png_size(export.figure_image(styled, "png", width=500)) == (1000, 2 * styled.layout.height)
    assert export.renderer_stats()["starts"] == starts, "a warm browser is reused, not started per image"


@needs_chromium
def test_svg_is_xml_with_legend_axis_titles_and_the_script_name_as_text(fig):
    data = export.figure_image(export.style_for_export(fig, title="SVG"), "svg", width=900, height=500)
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg" and (root.get("width"), root.get("height")) == ("900", "500")
    legend = svg_texts(data, "legendtext")
    assert f"#2 {SCRIPT_NAME} · train_loss" in legend and "#3 bn & co · val_loss" in legend and len(legend) == 6
    assert svg_texts(data, "xtitle") == ["step"] and svg_texts(data, "ytitle") == ["value"]
    assert svg_texts(data, "gtitle") == ["SVG"]
    assert not [el for el in root.iter() if el.tag.endswith("script") or el.tag.endswith("foreignObject")]


@needs_chromium
def test_pdf_header_and_page_size(fig):
    data = export.figure_image(export.style_for_export(fig), "pdf", width=800, height=400)
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    box = [float(v) for v in re.search(rb"MediaBox\s*\[([^\]]*)\]", data).group(1).split()]
    assert box[2] == pytest.approx(600, abs=1) and box[3] == pytest.approx(300, abs=1)  # 0.75 pt per px


def test_no_browser_raises_export_unavailable_with_the_install_hint(fig, monkeypatch):
    with pytest.raises(ExportUnavailable) as info:
        export.figure_image(fig, "png", env={"BROWSER_PATH": "/nonexistent/chromium"})
    assert "apt-get install chromium" in str(info.value) and "/nonexistent/chromium" in str(info.value)
    from choreographer.browsers.chromium import Chromium
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **kwargs: None))
    with pytest.raises(ExportUnavailable, match="plotly_get_chrome"):
        export.figure_image(fig, "svg", env={})
    with pytest.raises(ValueError, match="fmt must be one of png, svg, pdf"):
        export.figure_image(fig, "jpg", env={})


# ---------------------------------------------------------------------- HTML
def test_figure_html_is_offline_and_escapes_names(fig):
    page = export.figure_html(export.style_for_export(fig), title=f"runs {SCRIPT_NAME}")
    assert export.external_references(page) == []
    assert all("src" not in attrs and "href" not in attrs for tag, attrs in tags(page) if tag in ("script", "link"))
    assert not [t for t, _ in tags(page) if t in ("img", "iframe", "link", "object", "embed")]
    assert not re.search(r"https?:", page.replace(get_plotlyjs(), "")), "no URL outside the embedded plotly.js"
    assert "mathjax" not in page.lower().replace(get_plotlyjs().lower(), "")
    assert "<title>runs &lt;script&gt;alert(1)&lt;/script&gt;</title>" in page and SCRIPT_NAME not in page
    assert page.count(get_plotlyjs()) == 1 and "Content-Security-Policy" in page


def test_export_figure_serves_a_download_button(fig):
    page = export.export_figure(fig, "html", title="for a button").decode("utf-8")
    assert "<title>for a button</title>" in page and export.external_references(page) == []
    with pytest.raises(ValueError, match="fmt must be one of png, svg, pdf, html"):
        export.export_figure(fig, "csv")
    with pytest.raises(ValueError, match="width must be a whole number of pixels"):
        export.export_figure(fig, "png", width=10**6)


def test_report_has_every_chart_both_tables_and_escaped_text(store, ids):
    page = report.report_html(store, ids, metrics=METRICS, title=f"Compare {SCRIPT_NAME}", smoothing=0.6)
    assert export.external_references(page) == []
    assert page.count('class="plotly-graph-div"') == 3  # the overlay, then train_loss and val_loss
    assert re.findall(r'data-metric="([^"]*)"', page) == ["All metrics", *METRICS]
    for section in ("charts", "config-differences", "summary", "runs"):
        assert f'<section id="{section}">' in page
    found = [t for t, _ in tags(page)]
    assert "img" not in found and found.count("table") == 3
    assert found.count("script") == 1 + 3, "plotly.js once, one inline script per chart, nothing from names"
    assert SCRIPT_NAME not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<title>Compare &lt;script&gt;" in page and "smoothing 0.6" in page
    diff = page.split('<section id="config-differences">')[1].split("</section>")[0]
    assert "activation" in diff and "batchnorm" in diff and "elu" in diff
    summary = page.split('<section id="summary">')[1].split("</section>")[0]
    runs = report.load_runs(store, ids)
    acc = next(r.summary["final_val_acc"] for r in runs if isinstance(r.summary.get("final_val_acc"), float))
    assert f">{acc:.1%}<" in summary  # as the Compare page shows it, not 0.40625


@needs_chromium
def test_exported_html_draws_in_a_browser_without_any_request(store, ids, fig, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    files = {"figure": tmp_path / "figure.html", "report": tmp_path / "report.html"}
    files["figure"].write_text(export.figure_html(export.style_for_export(fig), title="figure"), encoding="utf-8")
    files["report"].write_text(report.report_html(store, ids, metrics=METRICS), encoding="utf-8")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=export.find_browser(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            outside, problems = [], []
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else (outside.append(route.request.url), route.abort()))
            page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            for name, n_charts in (("figure", 1), ("report", 3)):
                page.goto(files[name].as_uri())
                page.wait_for_function(f"document.querySelectorAll('.plotly-graph-div .main-svg').length >= "
                                       f"{n_charts}", timeout=20_000)
                assert page.locator(".plotly-graph-div").count() == n_charts
                assert page.locator(".scatterlayer .trace").count() >= 6
                assert any(SCRIPT_NAME in t for t in page.locator(".legendtext").all_text_contents())
            assert outside == [] and problems == []
        finally:
            browser.close()


# ---------------------------------------------------------------------- CSV
def test_series_csv_reads_back_equal_to_the_stored_series(store, ids):
    text = export.series_csv(store, ids, METRICS)
    back = pd.read_csv(io.StringIO(text))
    stored = store.metrics_frame(ids, METRICS)
    assert list(back.columns) == list(export.SERIES_CSV_COLUMNS) and len(back) == len(stored)
    for col in ("run_id", "step", "epoch"):
        np.testing.assert_array_equal(back[col].to_numpy(), stored[col].to_numpy())
    np.testing.assert_array_equal(back["value"].to_numpy(), stored["value"].to_numpy())  # NaN == NaN here
    np.testing.assert_array_equal(back["wall_time"].to_numpy(), stored["wall_time"].to_numpy())
    assert back["key"].tolist() == stored["key"].tolist()
    assert back["value"].isna().sum() == 1 and np.isposinf(back["value"]).sum() == 1 and ",NaN," in text
    names = dict(zip(back["run_id"], back["run_name"]))
    assert names == {ids[0]: "baseline", ids[1]: SCRIPT_NAME, ids[2]: "bn & co"}
    full = store.metrics_frame(ids)
    assert len(pd.read_csv(io.StringIO(export.series_csv(store, ids)))) == len(full), "keys=None: every metric"


def test_table_csv_of_summary_and_config_differences(store, ids):
    runs = report.load_runs(store, ids)
    text = export.table_csv(run_tables.summary_table(runs, for_file=True))
    summary = pd.read_csv(io.StringIO(text), index_col=0)
    assert summary.index.tolist() == ids and summary["name"].tolist() == ["baseline", SCRIPT_NAME, "bn & co"]
    assert set(summary["status"]) <= {"finished", "diverged", "failed", "cancelled", "interrupted"}  # no icons
    steps = [line.split(",")[list(summary.columns).index("steps") + 1] for line in text.splitlines()[1:]]
    assert steps == [str(r.summary["steps"]) for r in runs]  # whole numbers: 320, not 320.0
    assert summary["steps"].tolist() == [r.summary["steps"] for r in runs]
    assert summary["diverged_step"].isna().all()  # None in the summary -> an empty cell -> NA read back
    # a NaN a run measured is written NaN; a value a run does not have is left empty
    runs[0].summary.update(final_train_loss=math.nan, final_val_auc=None)
    line = export.table_csv(run_tables.summary_table(runs, for_file=True)).splitlines()[1].split(",")
    header = text.splitlines()[0].split(",")
    assert line[header.index("final_train_loss")] == "NaN" and line[header.index("final_val_auc")] == ""
    assert line[header.index("diverged_step")] == ""
    diff = pd.read_csv(io.StringIO(export.table_csv(run_tables.config_differences(runs))), index_col=0)
    assert {"activation", "batchnorm", "seed"} <= set(diff.columns) and diff["activation"].tolist()[1] == "elu"


# ---------------------------------------------------------------------- download buttons
@pytest.fixture
def renders(monkeypatch) -> list[tuple]:
    """Every image `export_figure` asks for, as (format, width, height, scale, title); each answers b'image'."""
    calls = []

    def fake(fig, fmt, *, width, height, scale, env):
        calls.append((fmt, width, height, scale, fig.layout.title.text))
        return b"image"

    monkeypatch.setattr(export, "figure_image", fake)
    return calls


def test_figure_downloads_make_each_file_only_when_clicked(fig, renders):
    downloads = export.figure_downloads(fig, title="Loss <b>", width=640, height=320, png_scale=3)
    assert renders == [], "nothing is rendered before a click"
    assert [(d.key, d.label, d.file_name, d.mime, d.needs_browser) for d in downloads] == [
        ("png", "PNG", "Loss_b.png", "image/png", True), ("svg", "SVG", "Loss_b.svg", "image/svg+xml", True),
        ("pdf", "PDF", "Loss_b.pdf", "application/pdf", True),
        ("html", "HTML (interactive)", "Loss_b.html", "text/html", False)]
    made = {d.key: d.make() for d in downloads}
    assert renders == [("png", 640, 320, 3, "Loss &lt;b&gt;"), ("svg", 640, 320, None, "Loss &lt;b&gt;"),
                       ("pdf", 640, 320, None, "Loss &lt;b&gt;")]  # SVG and PDF: vector, at width x height
    page = made["html"].decode("utf-8")
    assert "<title>Loss &lt;b&gt;</title>" in page and export.external_references(page) == []
    assert '"width":640' not in page and '"height":320' not in page, "the HTML page fills the window"
    defaults = export.figure_downloads(fig, title=None, name=SCRIPT_NAME, formats=("png",))
    assert [d.file_name for d in defaults] == ["script_alert(1)_script.png"]
    defaults[0].make()
    assert renders[-1][:4] == ("png", export.DEFAULT_WIDTH, None, None)


def test_figure_downloads_check_sizes_and_formats_before_any_button(fig):
    with pytest.raises(ValueError, match="width must be a whole number of pixels"):
        export.figure_downloads(fig, title="x", width=10)
    with pytest.raises(ValueError, match="scale must be a number"):
        export.figure_downloads(fig, title="x", png_scale=0)
    with pytest.raises(ValueError, match="formats must be among png, svg, pdf, html; got 'csv'"):
        export.figure_downloads(fig, title="x", formats=("png", "csv"))


def test_image_export_problem_says_what_to_install(monkeypatch):
    problem = export.image_export_problem({"BROWSER_PATH": "/nonexistent/chromium"})
    assert "apt-get install chromium" in problem and "/nonexistent/chromium" in problem
    assert "HTML and CSV export work without it" in problem
    if export.find_browser() is not None:
        assert export.image_export_problem() is None
        real = images.importlib.util.find_spec
        monkeypatch.setattr(images.importlib.util, "find_spec",
                            lambda name, *a: None if name == "kaleido" else real(name, *a))
        assert "pip install 'kaleido" in export.image_export_problem()


def test_comparison_downloads_are_the_page_chart_its_data_tables_and_report(store, ids, fig, renders):
    runs = report.load_runs(store, ids)
    settings = {"smoothing": 0.6, "layout": "overlay", "facet_field": None, "group_by": []}
    downloads = report.comparison_downloads(store, runs, figure=fig, metrics=METRICS, settings=settings,
                                            width=800, height=400, png_scale=2)
    by_key = {d.key: d for d in downloads}
    assert list(by_key) == ["png", "svg", "pdf", "html", "csv", "parquet", "summary", "differences", "report"]
    stem = "train_loss_val_loss_baseline_vs_script_alert(1)_script_vs_bn_co"
    assert {k: d.file_name for k, d in by_key.items()} == {
        "png": f"{stem}.png", "svg": f"{stem}.svg", "pdf": f"{stem}.pdf", "html": f"{stem}.html",
        "csv": f"{stem}.csv", "parquet": f"{stem}.parquet",
        "summary": "baseline_vs_script_alert(1)_script_vs_bn_co_summary.csv",
        "differences": "baseline_vs_script_alert(1)_script_vs_bn_co_config_differences.csv",
        "report": "baseline_vs_script_alert(1)_script_vs_bn_co_report.html"}
    assert [d.key for d in downloads if d.needs_browser] == ["png", "svg", "pdf"]
    assert renders == []
    by_key["png"].make()
    assert renders == [("png", 800, 400, 2, "train_loss, val_loss: baseline vs &lt;script&gt;alert(1)&lt;/script&gt; "
                                            "vs bn &amp;<br>co")]  # 70 characters: wrapped to fit 800 px
    assert by_key["csv"].make().decode() == export.series_csv(store, ids, METRICS)
    parquet = pd.read_parquet(io.BytesIO(by_key["parquet"].make()))
    assert len(parquet) == len(store.metrics_frame(ids, METRICS)) and set(parquet["key"]) == set(METRICS)
    summary = pd.read_csv(io.StringIO(by_key["summary"].make().decode()), index_col=0)
    assert summary.index.tolist() == ids and summary["name"].tolist() == ["baseline", SCRIPT_NAME, "bn & co"]
    diff = pd.read_csv(io.StringIO(by_key["differences"].make().decode()), index_col=0)
    assert diff["activation"].tolist()[1] == "elu"
    page = by_key["report"].make().decode()
    assert "smoothing 0.6" in page and page.count('class="plotly-graph-div"') == 3
    assert "<title>baseline vs &lt;script&gt;alert(1)&lt;/script&gt; vs bn &amp; co</title>" in page
    assert SCRIPT_NAME not in page and export.external_references(page) == []
    with pytest.raises(ConfigError) as info:
        report.comparison_downloads(store, runs, figure=fig, metrics=METRICS, settings={"x": "wall"})
    assert info.value.field == "x"


def test_run_downloads_are_its_small_multiples_and_every_metric(store, ids, renders):
    run = store.get_run(ids[1])
    figure = run_figure(store.metrics_frame([run.id]), run_name=run.name)
    downloads = report.run_downloads(store, run, figure=figure)
    stem = "2_script_alert(1)_script"
    assert [(d.key, d.file_name) for d in downloads] == [
        ("png", f"{stem}.png"), ("svg", f"{stem}.svg"), ("pdf", f"{stem}.pdf"), ("html", f"{stem}.html"),
        ("csv", f"{stem}.csv"), ("parquet", f"{stem}.parquet"), ("report", f"{stem}_report.html")]
    made = {d.key: d for d in downloads}
    made["png"].make()
    made["pdf"].make()
    assert renders == [(fmt, export.DEFAULT_WIDTH, None, None, "&lt;script&gt;alert(1)&lt;/script&gt;")
                       for fmt in ("png", "pdf")]
    back = pd.read_csv(io.StringIO(made["csv"].make().decode()))
    assert len(back) == len(store.metrics_frame([run.id])) and set(back["key"]) == set(store.metric_keys(run.id))
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>" in made["html"].make().decode()
    page = made["report"].make().decode()  # this run's report: its curves, summary, config and findings, escaped
    assert "<h1>#2 &lt;script&gt;alert(1)&lt;/script&gt;</h1>" in page and "<script>alert(1)" not in page
    assert page.count('<figure class="chart"') == 3 and '<section id="findings">' in page
    assert export.external_references(page) == []


# ---------------------------------------------------------------------- file names
@pytest.mark.parametrize("text", ["../../etc/passwd", "a/b\\c", "..hidden", "tab\there\nnew\x00line\x7f",
                                  SCRIPT_NAME, "   ", "", "-rf", "con", "x" * 500, "Lösung 日本語 " * 20,
                                  "C:\\Windows\\run?.png", "\u202eevil"])
def test_safe_filename(text):
    name = export.safe_filename(text, ext="png")
    stem = name[:-4]
    assert name.endswith(".png") and stem and len(name.encode()) <= export.MAX_FILENAME_BYTES
    assert not re.search(r'[/\\\x00-\x1f\x7f<>:"|?*\s]', name), name
    assert not stem.startswith((".", "-")) and not stem.endswith(".") and stem.lower() != "con"
    assert all(not (0x202a <= ord(c) <= 0x202e) for c in name)


def test_a_long_name_is_cut_before_what_the_file_is():
    """Files of one long title keep what tells them apart (the summary, the config differences)."""
    title = "lr x batchnorm x activation on gaussian, 10 seeds (3a7a1017): lr=0.003 batchnorm=false seed=0 " * 2
    summary = export.safe_filename(title, tail="summary", ext="csv")
    differences = export.safe_filename(title, tail="config differences", ext="csv")
    assert summary.endswith("_summary.csv") and differences.endswith("_config_differences.csv")
    assert all(export.MAX_FILENAME_BYTES - 2 <= len(n) <= export.MAX_FILENAME_BYTES for n in (summary, differences))
    assert export.safe_filename("", tail="report", ext="html") == "report.html"
    assert export.safe_filename("run", tail="../x", ext="csv") == "run_x.csv"


def test_a_title_of_many_runs_says_what_they_share_and_how_many():
    runs = [run_tables.Run(id=i, name=f"bn-act-loss: batchnorm={b} seed={i}", status="finished", config={},
                           created_at=None) for i, b in enumerate(("true", "false") * 3)]
    assert report.comparison_title(runs, ["val_loss"]) == "val_loss: bn-act-loss (6 runs)"
    assert report.comparison_title(runs[:3]) == " vs ".join(r.name for r in runs[:3])
    loose = [run_tables.Run(id=i, name=n, status="finished", config={}, created_at=None)
             for i, n in enumerate(("a", "b", "c", "d", "e"))]
    assert report.comparison_title(loose) == "a, b, c and 2 more"


def test_safe_filename_keeps_readable_names():
    assert export.safe_filename("mlp-bn (lr 0.05)", ext="svg") == "mlp-bn_(lr_0.05).svg"
    assert export.safe_filename(SCRIPT_NAME, ext="csv") == "script_alert(1)_script.csv"
    assert export.safe_filename("", ext="html") == "export.html"
    with pytest.raises(ValueError, match="ext"):
        export.safe_filename("x", ext="../png")


# ---------------------------------------------------------------------- the command line
def run_export(store, *argv) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    export_cli.add_export_parser(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    code = export_cli.cmd_export(parser.parse_args(["export", *argv]), store, out, err)
    return code, out.getvalue(), err.getvalue()


def check_file(path: Path, fmt: str) -> None:
    data = path.read_bytes()
    if fmt == "png":
        assert png_size(data) == (1200, 800)
    elif fmt == "svg":
        assert f"#2 {SCRIPT_NAME} · val_loss" in svg_texts(data, "legendtext")
    elif fmt == "pdf":
        assert data.startswith(b"%PDF-")
    elif fmt == "csv":
        assert len(pd.read_csv(path)) > 0
    elif fmt == "parquet":
        table = pd.read_parquet(path)
        assert list(table.columns) == list(export.SERIES_CSV_COLUMNS) and len(table) > 0
    else:
        page = data.decode()
        assert page.startswith("<!DOCTYPE html>") and export.external_references(page) == []
        assert page.count('class="plotly-graph-div"') == (1 if fmt == "html" else 3)


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_cli_export_writes_a_valid_file_for_each_format(store, ids, tmp_path, fmt):
    if fmt in export.IMAGE_FORMATS and export.find_browser() is None:
        pytest.skip("no Chromium/Chrome for Kaleido: apt-get install chromium")
    path = tmp_path / f"out.{fmt}"
    code, out, err = run_export(store, "--runs", ",".join(map(str, ids)), "--metric", "train_loss",
                                "--metric", "val_loss", "--smoothing", "0.5", "--format", fmt, "--out", str(path),
                                "--width", "600", "--height", "400", "--scale", "2")
    # an option this format does not use is said to be unused, in one line each, and the file written
    unused = {"csv": ["smoothing", "width", "height", "scale"], "parquet": ["smoothing", "width", "height", "scale"],
              "report": ["width", "height", "scale"], "html": ["scale"]}.get(fmt, [])
    assert code == 0 and out.startswith(f"wrote {path}")
    assert [line.split()[1] for line in err.splitlines()] == [f"--{flag}" for flag in unused]
    assert all(line.startswith("note: ") and line.endswith("and was not used") for line in err.splitlines())
    check_file(path, fmt)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file left behind"


def test_cli_export_says_which_runs_have_none_of_the_metrics(store, ids, tmp_path):
    empty = store.create_run(name="no metrics yet", config={})
    path = tmp_path / "x.csv"
    code, _, err = run_export(store, "--runs", f"{ids[0]},{empty}", "--metric", "train_loss", "--out", str(path))
    assert code == 0 and err == f"note: run #{empty} has no train_loss: nothing of it is drawn or written\n"
    assert set(pd.read_csv(path)["run_id"]) == {ids[0]}
    code, _, err = run_export(store, "--runs", str(ids[0]), "--metric", "train_loss", "--out", str(path))
    assert (code, err) == (0, "")


def test_cli_export_refuses_a_format_its_file_name_contradicts_and_two_contrary_group_options(store, ids, tmp_path):
    for args, field in ((["--format", "csv", "--out", str(tmp_path / "x.png")], "format"),
                        (["--format", "png", "--out", str(tmp_path / "x.html")], "format"),
                        (["--no-group", "--group-by", "lr", "--out", str(tmp_path / "x.csv")], "group-by")):
        with pytest.raises(ConfigError) as refused:
            run_export(store, "--runs", str(ids[0]), *args)
        assert refused.value.field == field
    assert list(tmp_path.iterdir()) == []
    for name in ("x.htm", "x.html"):  # a report is an HTML page too; any other suffix is the user's to choose
        assert run_export(store, "--runs", str(ids[0]), "--format", "report", "--out", str(tmp_path / name))[0] == 0
    assert run_export(store, "--runs", str(ids[0]), "--format", "csv", "--out", str(tmp_path / "x.txt"))[0] == 0


def test_cli_export_into_a_folder_names_the_file_safely(store, ids, tmp_path):
    code, out, _ = run_export(store, "--runs", f"{ids[1]}", "--format", "csv", "--out", str(tmp_path))
    assert code == 0 and [p.name for p in tmp_path.iterdir()] == ["train_loss_val_loss_script_alert(1)_script.csv"]


def test_cli_export_writes_through_a_link_and_into_a_pipe_and_wants_its_folder(store, ids, tmp_path):
    import os
    import threading

    assert run_export(store, "--runs", str(ids[0]), "--out", str(tmp_path / "plain.csv"))[0] == 0
    expected = (tmp_path / "plain.csv").read_text()
    real = tmp_path / "real"
    real.mkdir()
    (real / "target.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to(real / "target.csv")
    code, out, _ = run_export(store, "--runs", str(ids[0]), "--out", str(tmp_path / "link.csv"))
    assert code == 0 and (tmp_path / "link.csv").is_symlink()  # the link stays a link ...
    assert (real / "target.csv").read_text() == expected  # ... and its file holds the export
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    code, _, _ = run_export(store, "--runs", str(ids[0]), "--out", str(fifo))
    reader.join(timeout=30)
    assert code == 0 and got == [expected] and fifo.is_fifo()  # written into, not replaced by a file
    # "figures/" names a folder: missing, it is an error, not a file called "figures"
    from core.experiment.config import ConfigError

    with pytest.raises(ConfigError, match=r"out: folder '.*figures/' does not exist"):
        run_export(store, "--runs", str(ids[0]), "--format", "csv", "--out", str(tmp_path / "figures") + "/")
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize("argv, message", [
    (["--study", "1", "--out", "a.csv"], "study: --study is for --format table"),
    (["--judge", "auc", "--out", "a.csv"], "judge: --judge is for --format table"),
    (["--table-format", "latex", "--out", "a.csv"], "table-format: --table-format is for --format table"),
])
def test_cli_export_refuses_the_table_options_on_a_chart(store, ids, tmp_path, argv, message):
    argv = [a if a != "a.csv" else str(tmp_path / "a.csv") for a in argv]
    with pytest.raises(ConfigError, match=message):
        run_export(store, "--runs", str(ids[0]), *argv)
    with pytest.raises(ConfigError, match="runs: --format table writes a study's tables"):
        run_export(store, "--runs", str(ids[0]), "--format", "table", "--study", "1", "--out", "-")
    assert not (tmp_path / "a.csv").exists()


def test_cli_export_groups_a_studys_runs_as_compare_does(tmp_path):
    from core.jobs.spec import StudySpec
    from core.jobs.studies import open_study

    store = Store(f"sqlite:///{tmp_path / 'study.db'}")
    base = ExperimentConfig(epochs=2, hidden=(4,), n_samples=120, device="cpu")
    spec = StudySpec(name="lr", base=base.to_dict(), vary={"lr": [0.01, 0.1]}, seeds=2)
    study_id = open_study(store, spec)
    for lr in (0.01, 0.1):
        for seed in (0, 1):
            cfg = base.replace(lr=lr, seed=seed)
            (run_id,) = store.create_runs([(f"lr: lr={lr} seed={seed}", cfg.to_dict())], study_id=study_id)
            assert train(cfg, StoreReporter(store, run_id)).status == "finished"
    ids = ",".join(str(r.id) for r in store.list_runs())
    code, _, _ = run_export(store, "--runs", ids, "--metric", "train_loss", "--out", str(tmp_path / "g.html"))
    grouped = (tmp_path / "g.html").read_text()
    assert code == 0 and "lr=0.01 (n=2)" in grouped and "lr=0.1 (n=2)" in grouped  # a mean line per variant
    code, _, _ = run_export(store, "--runs", ids, "--metric", "train_loss", "--no-group", "--out",
                            str(tmp_path / "u.html"))
    assert code == 0 and "lr=0.01 (n=2)" not in (tmp_path / "u.html").read_text()  # every run its own line
    store.close()


def test_cli_image_export_without_a_browser_fails_in_one_line_while_html_works(store, ids, tmp_path, monkeypatch):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chromium"))
    code, _, err = run_export(store, "--runs", str(ids[0]), "--format", "png", "--out", str(tmp_path / "a.png"))
    assert code == 1 and err.count("\n") == 1 and "apt-get install chromium" in err
    assert not (tmp_path / "a.png").exists()
    assert run_export(store, "--runs", str(ids[0]), "--out", str(tmp_path / "a.html"))[0] == 0  # format from suffix


@pytest.mark.parametrize("argv, field", [
    (["--runs", "999"], "runs"),
    (["--runs", "1,x"], "runs"),
    (["--runs", "{first}", "--metric", "no_such_metric"], "metric"),
    (["--runs", "{first}", "--format", "gif"], "format"),
    (["--runs", "{first}", "--out", "{tmp}/missing/dir/out.png"], "out"),
    (["--runs", "{first}", "--out", "{tmp}/afile/out.png"], "out"),
    (["--runs", "{first}", "--x", "wall"], "x"),
    (["--runs", "{first}", "--group-by", "no_field"], "group_by"),
    (["--runs", "{first}", "--smoothing", "1.5"], "smoothing"),
    (["--runs", "{first}", "--band", "iqr"], "band"),
    (["--runs", "{first}", "--layout", "grid"], "layout"),
    (["--runs", "{first}", "--width", "5"], "width"),
    (["--runs", "{first}", "--scale", "0"], "scale"),
    (["--runs", "{first}", "--format", "png", "--out", "-"], "out"),  # binary: not to standard output
    (["--runs", "{first}", "--out", "-", "--format", "parquet"], "out"),
])
def test_cli_bad_input_raises_config_error_naming_the_field(store, ids, tmp_path, argv, field):
    (tmp_path / "afile").write_text("not a folder")
    argv = [a.format(first=ids[0], tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out.csv"), *([] if "--format" in argv else ["--format", "csv"])]
    with pytest.raises(ConfigError) as info:
        run_export(store, *argv)
    assert info.value.field == field
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("fmt", ["csv", "html"])
def test_cli_export_to_standard_output_writes_no_file(store, ids, tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_export(store, "--runs", str(ids[0]), "--format", fmt, "--out", "-")
    assert (code, err) == (0, "") and list(tmp_path.iterdir()) == []
    path = tmp_path / f"file.{fmt}"
    assert run_export(store, "--runs", str(ids[0]), "--format", fmt, "--out", str(path))[0] == 0
    if fmt == "csv":
        assert out == path.read_text()  # the same bytes the file gets
        assert out.startswith(",".join(export.SERIES_CSV_COLUMNS))
    else:  # (a figure's div id is drawn afresh each time)
        assert out.startswith("<!DOCTYPE html>") and len(out) == len(path.read_text())


def test_cli_export_names_an_unknown_suffix_not_the_whole_path(store, ids, tmp_path):
    with pytest.raises(ConfigError, match=r"got the file suffix '\.gif'$"):
        run_export(store, "--runs", str(ids[0]), "--out", str(tmp_path / "a.gif"))


def test_cli_main_runs_export_when_wired(store, ids, tmp_path):
    from core.cli import main as cli
    if "export" not in cli.COMMANDS:
        pytest.skip("core.cli does not wire the export subcommand yet")
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--db", store.url, "export", "--runs", str(ids[0]), "--format", "csv", "--out",
                     str(tmp_path / "a.csv")], out=out, err=err, env={})
    assert code == 0, err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--db", store.url, "export", "--runs", "999", "--out", str(tmp_path / "b.csv")], out=out,
                    err=err, env={})
    assert code == 2 and err.getvalue().startswith("error: runs:") and err.getvalue().count("\n") == 1


def test_a_browser_that_does_not_start_raises_export_unavailable_instead_of_hanging(fig):
    """Last, as it stops the shared browser. (Behind kaleido.start_sync_server, callers would wait forever.)"""
    with pytest.raises(ExportUnavailable, match="starting the browser /bin/false .* apt-get install chromium"):
        export.figure_image(fig, "png", env={"BROWSER_PATH": "/bin/false"})


def long_legend_figure(*, show_legend: bool):
    """40 curves of a 20-run study as the Compare page draws them: the legend below the plot, scrolling."""
    import plotly.graph_objects as go

    from core.presentation.legend import LegendEntry, plan_legend

    names = [f"#{i} lr={lr} batchnorm={bn} activation=relu seed=0 · {m}" for i, (lr, bn) in
             enumerate(((lr, bn) for lr in (0.003, 0.01, 0.03, 0.1, 0.3) for bn in ("false", "true", "x", "y")), 1)
             for m in ("train_loss", "val_loss")]
    plan = plan_legend([LegendEntry(None, None, n) for n in names], show=show_legend)
    fig = go.Figure([go.Scatter(x=[0, 500], y=[0.7, 0.3], name=n) for n in names])
    fig.update_layout(height=600 + plan.height_px, showlegend=show_legend, legend=plan.layout)  # as charts does
    return fig


@pytest.mark.parametrize("show_legend", [True, False])
def test_a_long_legend_is_whole_in_the_file_below_the_plot(show_legend):
    """On the page a long legend below the plot scrolls (legend.maxheight), or is hidden; a file cannot scroll, so
    the export lays every entry out below the plot and grows the figure by the rows, in the file's larger font."""
    fig = long_legend_figure(show_legend=show_legend)
    out = export.style_for_export(fig)
    assert out.layout.showlegend is True and out.layout.legend.orientation == "h"
    assert out.layout.legend.maxheight > 320 and fig.layout.legend.maxheight == (320 if show_legend else None)
    same = export.style_for_export(long_legend_figure(show_legend=not show_legend))
    assert out.layout.height == same.layout.height > fig.layout.height  # hidden on the page or not: one file
    assert fig.layout.showlegend is show_legend  # the page's figure is left as it was


@needs_chromium
def test_an_image_holds_every_legend_entry_and_its_title_above_the_plot():
    """Rendered: all 40 entries, the legend below the plot and inside the image, nothing scrolled, the plot
    still tall, and a title of two lines ending above the plot."""
    fig = long_legend_figure(show_legend=True)
    title = "train_loss, val_loss: lr x batchnorm x activation on gaussian, 10 seeds (3a7a1017) (20 runs)"
    svg = export.export_figure(fig, "svg", title=title, width=1000).decode()
    height = float(re.search(r'<svg[^>]*height="([\d.]+)"', svg).group(1))
    top, plot = map(float, re.search(r'class="xgrid crisp"[^>]*d="M0,([\d.]+)v([\d.]+)"', svg).groups())
    legend_y = float(re.search(r'class="legend"[^>]*transform="translate\([\d.]+,([\d.]+)\)"', svg).group(1))
    legend_h = float(re.search(r'class="legend".*?<rect class="bg"[^>]*height="([\d.]+)"', svg).group(1))
    assert svg.count('class="legendtext"') == 40
    assert re.search(r'class="scrollbar"[^>]*height="0"', svg), "the legend does not scroll"
    assert top + plot <= legend_y and legend_y + legend_h <= height + 1 and plot >= 400
    lines = re.findall(r'<tspan class="line"[^>]*y="([\d.]+)"', svg.split('class="g-gtitle"')[1].split("</g>")[0])
    assert len(lines) == 2 and float(lines[0]) + 26 * 2 <= top


def test_csv_and_parquet_hold_every_stored_value_exactly(tmp_path):
    """Both data exports equal the stored values bit for bit: NaN, +-Inf, -0.0, a subnormal and huge steps."""
    with Store(f"sqlite:///{tmp_path / 'exact.db'}") as store:
        run_id = store.create_run(name="exact", config={})
        values = [0.1, math.nan, math.inf, -math.inf, -0.0, 5e-324, 1 / 3, 123456.789]
        batch = MetricBatch()
        batch.add_series("loss", [1, 2, 3, 2**40, 2**40 + 1, 2**40 + 2, 2**40 + 3, 2**40 + 4], [0] * 8, values,
                         [0.5 * i for i in range(8)])
        store.log_metrics(run_id, batch)
        stored = store.metrics_frame([run_id])
        table = pd.read_parquet(io.BytesIO(export.series_parquet(store, [run_id])))
        from_csv = pd.read_csv(io.StringIO(export.series_csv(store, [run_id])))
    assert table["value"].to_numpy().view(np.uint64).tolist() == stored["value"].to_numpy().view(np.uint64).tolist()
    assert table["step"].tolist() == stored["step"].tolist() and table["run_name"].unique().tolist() == ["exact"]
    csv_values = from_csv["value"].to_numpy()
    np.testing.assert_array_equal(csv_values, np.array(values))  # NaN equal to NaN here; repr keeps every digit
    assert from_csv["step"].tolist() == stored["step"].tolist()


def test_the_report_lists_each_runs_findings_with_cause_and_fix(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'f.db'}") as store:
        bad = store.create_run(name="<b>unscaled</b>", config=ExperimentConfig(
            dataset="breast_cancer", standardize=False).to_dict())
        store.finish_run(bad, status="finished", summary={"input_std_max": 596.0, "input_abs_max": 4000.0,
                                                          "peak_clamp_frac": 1.0})
        fine = store.create_run(name="fine", config={})
        store.finish_run(fine, status="finished", summary={})
        for run_id in (bad, fine):
            store.log_metrics(run_id, [MetricRow("train_loss", 1, 0, 0.5, 0.1)])
        page = report.report_html(store, [bad, fine], metrics=["train_loss"])
    section = page.split('<section id="findings">')[1].split("</section>")[0]
    assert "[problem] The inputs are not scaled" in section and "unscaled inputs" in section
    assert "{&quot;standardize&quot;: true}" in section  # the fix, escaped like every text
    assert "&lt;b&gt;unscaled&lt;/b&gt;" in section and "<b>unscaled" not in section
    assert "Nothing to report." in section
