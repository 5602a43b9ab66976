"""The dashboard with many long runs, each figure a whole AppTest run of a page from a fresh session (caches
cleared), against what it has to read:

- Compare, 50 runs x 20,000 steps (train_loss, val_loss): the page run, against the hardware floor (the same values
  as one float64 BLOB per series in the same SQLite file, read with numpy.frombuffer), and the figure it sends;
- Compare, 30 runs x 100,000 steps: the page run;
- 1,000 runs x 5,000 steps x 5 metrics in one database: the Runs page, and Compare with 200 of them grouped by a
  config field with a band.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from core import PROJECT_ROOT
from core.store import Store
from core.training.reporting import MetricBatch

METRICS = ("train_loss", "val_loss")
MORE = ("train_loss_logits", "grad_norm", "clamp_frac")  # the 1,000-run database's other metrics


def populate(url: str, *, n_runs: int, n_steps: int, epochs: int = 20, metrics: tuple[str, ...] = METRICS,
             flush: int = 5000) -> list[int]:
    """Runs that look like real ones: a noisy decaying per-step loss (float32, as the trainer logs) with a few
    spikes and a NaN, per-epoch validation loss, written a flush of `flush` steps at a time."""
    store = Store(url)
    rng = np.random.default_rng(0)
    per_epoch = max(1, n_steps // epochs)
    ids = []
    for r in range(n_runs):
        run_id = store.create_run(name=f"run {r}", config={"seed": r % 3, "lr": [0.01, 0.1][r % 2],
                                                           "batchnorm": bool(r % 4 < 2)})
        steps = np.arange(1, n_steps + 1)
        loss = (0.7 * np.exp(-steps / (n_steps / 3)) + 0.05 * rng.random(n_steps) + 0.1).astype(np.float32)
        loss[rng.integers(0, n_steps, 5)] *= 20  # clamp bursts
        loss[n_steps // 2] = np.nan
        extra = {m: (loss * (i + 1.5)).astype(np.float32) for i, m in enumerate(k for k in metrics if k in MORE)}
        for first in range(0, n_steps, flush):
            part = steps[first:first + flush]
            batch = MetricBatch()
            wall = (0.001 * part).tolist()
            epoch = ((part - 1) // per_epoch).tolist()
            batch.add_series("train_loss", part.tolist(), epoch, loss[first:first + flush].astype(float).tolist(), wall)
            for m, values in extra.items():
                batch.add_series(m, part.tolist(), epoch, values[first:first + flush].astype(float).tolist(), wall)
            ends = [e for e in range(epochs) if first < (e + 1) * per_epoch <= first + flush]
            batch.add_series("val_loss", [(e + 1) * per_epoch for e in ends], ends,
                             [float(np.float32(0.8 * np.exp(-e / 6) + 0.15)) for e in ends], [0.001 * e for e in ends])
            store.log_metrics(run_id, batch)
        store.finish_run(run_id, status="finished", summary={"final_val_loss": 0.2})
        ids.append(run_id)
    store.close()
    return ids


def page_once(url: str, page: str, query: dict[str, str] | None = None,
              state: dict | None = None) -> tuple[float, int]:
    """One fresh AppTest session of the app, switched to `page`: (seconds of the page's run, figure bytes)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()  # every repeat pays for its reads, as a fresh browser session would
    st.cache_resource.clear()
    os.environ["LOSSBOARD_DB"] = url
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=300)
    at.query_params.update(query or {})
    at.run()
    for key, value in (state or {}).items():
        at.session_state[key] = value
    t = time.perf_counter()
    at.switch_page(page).run()
    elapsed = time.perf_counter() - t
    assert not at.exception, [e.value for e in at.exception]
    charts = at.get("plotly_chart")
    return elapsed, len(charts[0].proto.spec.encode()) if charts else 0


def compare_once(url: str, ids: list[int], state: dict | None = None) -> tuple[float, int]:
    elapsed, size = page_once(url, "pages/compare.py", {"runs": ",".join(map(str, ids))}, state)
    assert size, "the Compare page drew no chart"
    return elapsed, size


def bench_dashboard(repeats: int, quick: bool, workdir: Path):
    from benchmarks.bench import Row, interleaved, paired
    from benchmarks.store import read_floor, write_floor

    rows = []
    n_runs, n_steps = (10, 5000) if quick else (50, 20_000)
    path = workdir / "dashboard.db"
    url = f"sqlite:///{path}"
    ids = populate(url, n_runs=n_runs, n_steps=n_steps)
    with Store(url) as store:
        write_floor(path, store, ids, list(METRICS))
    pages: list[tuple[float, int]] = []
    compare_once(url, ids)  # warm-up: the first run imports the page's modules
    t = interleaved({"floor": lambda: read_floor(path, ids, list(METRICS)),
                     "page": lambda: pages.append(compare_once(url, ids))}, repeats)
    t["page"] = [p[0] for p in pages]  # the page's own run, without AppTest's start-up on the app's front page
    ratio = paired(t["page"], t["floor"])
    label = f"Compare page, {n_runs} runs x {n_steps:,} steps ({', '.join(METRICS)}), fresh session"
    page_s = float(np.median(t["page"]))
    rows += [Row("dashboard", f"{label}: page run (budget 0.2 s) vs frombuffer of the same values, same file",
                 page_s, float(np.median(t["floor"])), "s", "<= 0.2 s and <= 3x the floor",
                 page_s <= 0.2 and ratio[0] <= 3, ratio),
             Row("dashboard", f"{label}: figure JSON sent to the browser, vs the 2 MB budget", pages[0][1] / 1e6, 2.0,
                 "MB", "< 1 (under 2 MB)", pages[0][1] < 2_000_000)]
    # what Streamlit's run of the page costs with nothing to draw: the part of the page run no store can change
    empty = [page_once(url, "pages/compare.py")[0] for _ in range(repeats)]
    rows.append(Row("dashboard", "Compare page with no run chosen, fresh session: page run (Streamlit's own cost of "
                    "the page) vs frombuffer of the 50-run values above", float(np.median(empty)),
                    float(np.median(t["floor"])), "s", "-", None))
    # the page's own read, as it calls it (sized to the chart, the fields the step axis needs), against the floor
    from core.presentation import zoom  # noqa: PLC0415

    with Store(url) as store:
        t = interleaved({"floor": lambda: read_floor(path, ids, list(METRICS)),
                         "read": lambda: store.traces(ids, list(METRICS), max_points=zoom.read_points(0.0),
                                                      fields=zoom.X_FIELDS["step"])}, repeats)
    ratio = paired(t["read"], t["floor"])
    rows.append(Row("dashboard", f"{label}: the page's store read (sized to the chart) vs frombuffer of every value, "
                    "same file", float(np.median(t["read"])), float(np.median(t["floor"])), "s", "<= 3x the floor",
                    ratio[0] <= 3, ratio))
    if quick:
        return rows

    url = f"sqlite:///{workdir / 'long.db'}"
    ids = populate(url, n_runs=30, n_steps=100_000, flush=10_000)
    times = [compare_once(url, ids)[0] for _ in range(repeats)]
    page_s = float(np.median(times))
    rows.append(Row("dashboard", "Compare page, 30 runs x 100,000 steps (train_loss, val_loss), fresh session: page "
                    "run vs the 0.4 s budget", page_s, 0.4, "s", "<= 0.4 s", page_s <= 0.4))

    url = f"sqlite:///{workdir / 'many.db'}"
    ids = populate(url, n_runs=1000, n_steps=5000, metrics=METRICS + MORE)
    runs_times = [page_once(url, "pages/runs.py")[0] for _ in range(repeats)]
    page_s = float(np.median(runs_times))
    rows.append(Row("dashboard", "Runs page, 1,000 runs x 5,000 steps x 5 metrics in one database, fresh session: page "
                    "run vs the 1 s budget", page_s, 1.0, "s", "<= 1 s", page_s <= 1.0))
    grouped = {"compare_opt_group": ["lr"], "compare_opt_band": "ci95"}
    times = [compare_once(url, ids[:200], grouped)[0] for _ in range(repeats)]
    page_s = float(np.median(times))
    rows.append(Row("dashboard", "Compare page, 200 of those runs grouped by lr with a 95% CI band, fresh session: "
                    "page run vs the 1 s budget", page_s, 1.0, "s", "<= 1 s", page_s <= 1.0))
    return rows
