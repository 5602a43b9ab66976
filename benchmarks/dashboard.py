"""The Compare page with many long runs: a whole AppTest run of the page versus the store read it needs, and the
size of the figure it sends to the browser."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from core import PROJECT_ROOT
from core.store import Store
from core.training.reporting import MetricRow

METRICS = ("train_loss", "val_loss")


def populate(url: str, *, n_runs: int, n_steps: int, epochs: int = 20) -> list[int]:
    """Runs that look like real ones: a noisy decaying per-step loss with a few spikes and a NaN, and a
    per-epoch validation loss."""
    store = Store(url)
    rng = np.random.default_rng(0)
    per_epoch = max(1, n_steps // epochs)
    ids = []
    for r in range(n_runs):
        run_id = store.create_run(name=f"run {r}", config={"seed": r % 3, "lr": [0.01, 0.1][r % 2],
                                                           "batchnorm": bool(r % 4 < 2)})
        steps = np.arange(1, n_steps + 1)
        loss = 0.7 * np.exp(-steps / (n_steps / 3)) + 0.05 * rng.random(n_steps) + 0.1
        loss[rng.integers(0, n_steps, 5)] *= 20  # clamp bursts
        loss[n_steps // 2] = np.nan
        rows = [MetricRow("train_loss", int(s), int((s - 1) // per_epoch), float(v), 0.001 * s)
                for s, v in zip(steps, loss)]
        rows += [MetricRow("val_loss", (e + 1) * per_epoch, e, float(0.8 * np.exp(-e / 6) + 0.15), 0.001 * e)
                 for e in range(epochs)]
        for start in range(0, len(rows), 50_000):
            store.log_metrics(run_id, rows[start:start + 50_000])
        store.finish_run(run_id, status="finished", summary={"final_val_loss": 0.2})
        ids.append(run_id)
    store.close()
    return ids


def compare_once(url: str, ids: list[int]) -> tuple[float, int]:
    """One fresh AppTest session of the app opened on Compare with these runs in the URL: (seconds, figure bytes)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()  # every repeat pays for its reads, as a fresh browser session would
    st.cache_resource.clear()
    os.environ["LOSSBOARD_DB"] = url
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=300)
    at.query_params["runs"] = ",".join(map(str, ids))
    at.run()
    t = time.perf_counter()
    at.switch_page("pages/compare.py").run()
    elapsed = time.perf_counter() - t
    assert not at.exception, [e.value for e in at.exception]
    charts = at.get("plotly_chart")
    assert charts, "the Compare page drew no chart"
    figure = charts[0].proto.spec
    traces = json.loads(figure)["data"]
    assert len(traces) >= len(ids), f"{len(traces)} traces for {len(ids)} runs"
    return elapsed, len(figure.encode())


def bench_dashboard(repeats: int, quick: bool, workdir: Path):
    from benchmarks.bench import Row, interleaved, paired

    n_runs, n_steps = (10, 5000) if quick else (50, 20_000)
    url = f"sqlite:///{workdir / 'dashboard.db'}"
    ids = populate(url, n_runs=n_runs, n_steps=n_steps)
    store = Store(url)
    pages: list[tuple[float, int]] = []

    def read() -> None:
        store.metrics_frame(ids, list(METRICS))

    def page() -> None:
        pages.append(compare_once(url, ids))

    page()  # warm-up: the first run imports the page's modules
    pages.clear()
    t = interleaved({"read": read, "page": page}, repeats)
    store.close()
    t["page"] = [p[0] for p in pages]  # the page's own run, without AppTest's start-up on the app's front page
    ratio = paired(t["page"], t["read"])
    size = pages[0][1]
    label = f"Compare page, {n_runs} runs x {n_steps:,} steps ({', '.join(METRICS)})"
    return [Row("dashboard", f"{label}: page run vs the store read it needs", float(np.median(t["page"])),
                float(np.median(t["read"])), "s", "< 2x", ratio[0] < 2, ratio),
            Row("dashboard", f"{label}: figure JSON sent to the browser, vs the 2 MB budget", size / 1e6, 2.0, "MB",
                "< 1 (under 2 MB)", size < 2_000_000)]
