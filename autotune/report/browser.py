"""Open a report in headless Chromium and check it: the report test and benchmark share this.

Needs the ``playwright`` Python package (the ``dev`` extra) and a Chromium binary; playwright's
own browser download is not needed: Debian's ``chromium`` package works
(``apt-get install -y chromium``, binary ``/usr/bin/chromium``).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: flags for a quiet, offline, sandbox-free headless run (containers, CI)
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

# every Plotly container has drawn its SVG and holds data
_ALL_DRAWN = """() => {
  const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
  return divs.length > 0 && divs.every(d => d.querySelector('svg.main-svg') && d._fullLayout);
}"""

_COUNTS = """() => {
  const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
  return {
    figures: divs.length,
    with_svg: divs.filter(d => d.querySelector('svg.main-svg')).length,
    with_data: divs.filter(d => Array.isArray(d.data) && d.data.length > 0).length,
    svgs: document.querySelectorAll('.plotly-graph-div svg.main-svg').length,
    ids: divs.map(d => d.id),
    error_bars: Object.fromEntries(divs.map(d => [d.id,
      d.querySelectorAll('path.xerror, path.yerror').length])),
    point_texts: Object.fromEntries(divs.map(d => [d.id,
      Array.from(d.querySelectorAll('g.textpoint text')).map(t => t.textContent).filter(t => t)])),
  };
}"""


def _renderer_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each Chromium renderer process under this one."""
    import psutil

    out: dict[int, float] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if "--type=renderer" in " ".join(proc.cmdline()):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def chromium_path() -> str | None:
    """``$AUTOTUNE_CHROMIUM``, else ``/usr/bin/chromium``, else ``chromium`` on PATH."""
    for candidate in (os.environ.get("AUTOTUNE_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    """What the browser saw."""

    figures: int  # Plotly containers
    with_svg: int  # ... that drew their SVG
    with_data: int  # ... that hold at least one trace
    svgs: int  # svg.main-svg elements inside them
    figure_ids: list[str]
    error_bars: dict[str, int] = field(default_factory=dict)  # drawn error bars, per figure id
    point_texts: dict[str, list[str]] = field(default_factory=dict)  # text drawn beside points
    console_errors: list[str] = field(default_factory=list)  # console.error and uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    external_requests: list[str] = field(default_factory=list)  # ... other than the file itself
    open_s: float = float("nan")  # navigation start to every figure drawn
    renderer_cpu_s: float = float("nan")  # CPU time Chromium's renderer processes spent meanwhile
    screenshot: Path | None = None


class Browser:
    """One headless Chromium; ``render(path)`` opens a report in a fresh page."""

    def __init__(self, executable: str | None = None, width: int = 1400, height: int = 900) -> None:
        from playwright.sync_api import sync_playwright

        exe = executable or chromium_path()
        if exe is None:
            raise FileNotFoundError(
                "no Chromium found: apt-get install -y chromium (or set AUTOTUNE_CHROMIUM)"
            )
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=exe, args=list(CHROMIUM_ARGS))
        self.viewport = {"width": width, "height": height}

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._browser.close()
        self._pw.stop()

    def render(
        self, path: str | Path, screenshot: str | Path | None = None, timeout_s: float = 30.0
    ) -> Rendered:
        path = Path(path).resolve()
        url = path.as_uri()
        context = self._browser.new_context(viewport=self.viewport)  # type: ignore[arg-type]
        errors: list[str] = []
        requests: list[str] = []

        def block(route: Any) -> None:  # nothing leaves the file
            requests.append(route.request.url)
            route.abort()

        context.route(lambda u: not u.startswith(("file:", "data:", "blob:", "about:")), block)
        page = context.new_page()
        page.on(
            "console",
            lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None,
        )
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        page.on("request", lambda req: requests.append(req.url))
        page.on("websocket", lambda ws: requests.append(ws.url))
        try:
            cpu0 = _renderer_cpu()
            t0 = time.perf_counter()
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            page.wait_for_function(_ALL_DRAWN, timeout=timeout_s * 1000)
            open_s = time.perf_counter() - t0
            cpu = _renderer_cpu()
            renderer_cpu_s = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu.items())
            counts = page.evaluate(_COUNTS)
            shot = None
            if screenshot is not None:
                shot = Path(screenshot)
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
        seen = list(dict.fromkeys(requests))
        return Rendered(
            figures=counts["figures"],
            with_svg=counts["with_svg"],
            with_data=counts["with_data"],
            svgs=counts["svgs"],
            figure_ids=counts["ids"],
            error_bars=counts["error_bars"],
            point_texts=counts["point_texts"],
            console_errors=errors,
            requests=seen,
            external_requests=[u for u in seen if u != url],
            open_s=open_s,
            renderer_cpu_s=renderer_cpu_s,
            screenshot=shot,
        )
