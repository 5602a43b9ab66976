"""PNG, SVG and PDF from a figure: Kaleido over a local Chromium, one browser shared by every image of a process.

The browser starts on first use and stops at exit. Without a browser (or without Kaleido) `figure_image` raises
`ExportUnavailable` saying what to install, and `image_export_problem` says it before anyone clicks; HTML and CSV
export keep working.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import numbers
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Mapping

import plotly.graph_objects as go


IMAGE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


DEFAULT_WIDTH = 1000  # px; images are width * scale pixels wide


DEFAULT_HEIGHT = 500  # px, for figures that do not set their own height


DEFAULT_SCALE = {"png": 2.0, "svg": 1.0, "pdf": 1.0}  # PNG at 2x is crisp on slides; vector sizes stay as chosen


INSTALL_HINT = ("On Debian/Ubuntu: `sudo apt-get install chromium`; elsewhere install Google Chrome, or run "
                "`plotly_get_chrome` (downloads a Chrome for Kaleido), or set BROWSER_PATH to the browser's "
                "executable. HTML and CSV export work without it.")


NO_BROWSER = "PNG, SVG and PDF export need Chromium or Google Chrome, and none was found{where}. " + INSTALL_HINT


NO_KALEIDO = "PNG, SVG and PDF export need the kaleido package: `pip install 'kaleido>=1,<2'`. HTML and CSV " \
             "export work without it."


START_TIMEOUT_S = 60.0  # launching Chromium


RENDER_TIMEOUT_S = 60.0  # one image


class ExportUnavailable(RuntimeError):
    """Image export cannot work on this machine (no browser, or no Kaleido); the message says what to install."""


def check_size(name: str, value: Any, *, lo: float = 50, hi: float = 10000) -> int:
    """A width or height in px as an int in [lo, hi], or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a whole number of pixels from {lo:g} to {hi:g}; got {value!r}")
    return int(value)


def check_scale(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.1 <= float(value) <= 10:
        raise ValueError(f"scale must be a number from 0.1 to 10; got {value!r}")
    return float(value)


_lock = threading.Lock()  # Streamlit serves sessions from several threads; one render at a time
_renderer: _Renderer | None = None
_stats = {"starts": 0, "renders": 0, "start_s": 0.0, "last_render_s": 0.0}


def find_browser(env: Mapping[str, str] | None = None) -> str | None:
    """The Chromium/Chrome that image export will use, or None.

    `BROWSER_PATH` in `env` wins (None when it is not an executable file); otherwise choreographer's own search:
    a Chrome downloaded by `plotly_get_chrome`, then chromium/chrome on PATH and in the usual places."""
    env = os.environ if env is None else env
    override = env.get("BROWSER_PATH")
    if override:
        return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
    try:
        from choreographer.browsers.chromium import Chromium  # noqa: PLC0415 - kaleido's dependency, optional
    except ImportError:
        return None
    return Chromium.find_browser(skip_local=False)


def figure_image(fig: go.Figure, fmt: str, *, width: int = DEFAULT_WIDTH, height: int | None = None,
                 scale: float | None = None, env: Mapping[str, str] | None = None) -> bytes:
    """The figure as PNG, SVG or PDF bytes, `width` x `height` px (height: the figure's own, else
    DEFAULT_HEIGHT) times `scale` (default: 2 for PNG, 1 for SVG and PDF, whose page is then width x height px,
    i.e. 0.75 pt per px in a PDF). Raises `ExportUnavailable` without a browser or Kaleido."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(IMAGE_FORMATS)}; got {fmt!r}")
    width = check_size("width", width)
    height = check_size("height", height if height is not None else (fig.layout.height or DEFAULT_HEIGHT))
    scale = check_scale(DEFAULT_SCALE[fmt] if scale is None else scale)
    env = os.environ if env is None else env
    browser = find_browser(env)
    if browser is None:
        raise ExportUnavailable(_no_browser(env))
    opts = {"format": fmt, "width": width, "height": height, "scale": scale}
    return _render(browser, fig.to_dict(), opts)


def _no_browser(env: Mapping[str, str]) -> str:
    override = env.get("BROWSER_PATH")
    return NO_BROWSER.format(where=f" (BROWSER_PATH={override!r} is not an executable file)" if override else "")


class _Renderer:
    """One Kaleido (one Chromium, one tab) on an event loop in a daemon thread; renders are sent to it."""

    def __init__(self, browser: str) -> None:
        self.browser = browser
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lossboard-kaleido", daemon=True)
        self._kaleido: Any = None
        # Chromium's profile goes in a folder of ours, removed after the browser closes (`_remove_profile`): left to
        # choreographer, a child process still writing in it at exit made tempfile's cleanup print a traceback
        self.profile = tempfile.mkdtemp(prefix="lossboard-chromium-")
        self._thread.start()
        try:
            self._call(self._open(), START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    async def _open(self) -> None:
        import kaleido  # noqa: PLC0415 - only image export needs it

        # mathjax=False: Kaleido would otherwise load MathJax from a CDN for every page.
        options = dict(n=1, timeout=RENDER_TIMEOUT_S, mathjax=False, path=self.browser)
        try:
            self._kaleido = kaleido.Kaleido(**options, tmp_dir=self.profile)
        except TypeError:  # a choreographer without tmp_dir: its own folder, as before
            self._kaleido = kaleido.Kaleido(**options)
        await self._kaleido.open()

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _close(self) -> None:
        if self._kaleido is not None:
            kaleido, self._kaleido = self._kaleido, None
            await kaleido.close()

    async def _cancel_pending(self) -> None:  # choreographer's watchdog and readers, so the loop closes cleanly
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def render(self, fig: dict[str, Any], opts: dict[str, Any]) -> bytes:
        return self._call(self._kaleido.calc_fig(fig, opts=opts), RENDER_TIMEOUT_S + 5)

    def stop(self) -> None:
        for step in (self._close, self._cancel_pending):
            try:
                self._call(step(), 15)
            except Exception:  # noqa: BLE001 - a dead browser cannot be closed twice; the thread goes anyway
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        if not self._thread.is_alive():
            self._loop.close()
        self._remove_profile()

    def _remove_profile(self, wait_s: float = 3.0) -> None:
        """Remove the profile folder; Chromium's last child processes may still write in it for a moment after
        the browser closed, so a folder that is not empty yet is tried again for up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        while os.path.exists(self.profile):
            shutil.rmtree(self.profile, ignore_errors=True)
            if time.monotonic() > deadline:
                break
            if os.path.exists(self.profile):
                time.sleep(0.1)


def _render(browser: str, fig: dict[str, Any], opts: dict[str, Any]) -> bytes:
    global _renderer
    with _lock:
        for attempt in (1, 2):  # a browser that died (killed, crashed) is restarted once
            if _renderer is not None and _renderer.browser != browser:
                _renderer.stop()
                _renderer = None
            if _renderer is None:
                start = time.perf_counter()
                try:
                    _renderer = _Renderer(browser)
                except ImportError:
                    raise ExportUnavailable("image export needs the kaleido package: "
                                            "`pip install 'kaleido>=1,<2'`") from None
                except Exception as exc:
                    raise ExportUnavailable(f"starting the browser {browser} for image export failed "
                                            f"({_reason(exc)}). {INSTALL_HINT}") from exc
                _stats["starts"] += 1
                _stats["start_s"] = time.perf_counter() - start
            try:
                start = time.perf_counter()
                data = _renderer.render(fig, opts)
            except Exception as exc:
                _renderer.stop()
                _renderer = None
                if isinstance(exc, TimeoutError):
                    raise RuntimeError(f"rendering the {opts['format']} took over {RENDER_TIMEOUT_S:g} s; "
                                       f"try fewer runs or a smaller max_points") from None
                if attempt == 2:
                    raise
                continue
            _stats["renders"] += 1
            _stats["last_render_s"] = time.perf_counter() - start
            return data
    raise AssertionError("unreachable")


def _reason(exc: BaseException) -> str:
    """The first line of an error; choreographer packs its message into a tuple of sentences."""
    first = exc.args[0] if exc.args else ""
    if isinstance(first, tuple):
        first = first[0] if first else ""
    return str(first).strip().rstrip(".") or type(exc).__name__


def stop_renderer() -> None:
    """Stop the shared browser (it starts again on the next image). Runs at interpreter exit."""
    global _renderer
    with _lock:
        if _renderer is not None:
            _renderer.stop()
            _renderer = None


def renderer_stats() -> dict[str, float]:
    """Browser starts and renders so far, the last start's and the last render's seconds."""
    return dict(_stats)


def image_export_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why PNG, SVG and PDF cannot be made on this machine, saying what to install; None when they can.

    Cheap enough for every page run: it looks for the browser and the kaleido package, starting neither."""
    env = os.environ if env is None else env
    if find_browser(env) is None:
        return _no_browser(env)
    if importlib.util.find_spec("kaleido") is None:
        return NO_KALEIDO
    return None


atexit.register(stop_renderer)
