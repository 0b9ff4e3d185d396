"""Which plotly.js to embed: the vendored cartesian bundle when it fits, else plotly.py's full one.

The cartesian bundle (``_vendor/plotly-cartesian.min.js``, 1.5 MB) is used only when its version
is the plotly.js version of the installed plotly.py (so figure JSON and library agree) and every
trace type in the report is one it contains. Otherwise the full bundle (4.8 MB) is embedded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

from plotly.offline import get_plotlyjs, get_plotlyjs_version

VENDORED = Path(__file__).parent / "_vendor" / "plotly-cartesian.min.js"
#: trace types in plotly.js-cartesian-dist-min
CARTESIAN_TRACES = frozenset(
    {
        "bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour",
        "image", "pie", "scatter", "scatterternary", "violin",
    }
)  # fmt: skip


@functools.cache
def _vendored() -> tuple[str, str] | None:
    """(version, source) of the vendored bundle, or None if it is missing or unreadable."""
    try:
        text = VENDORED.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"plotly\.js \(cartesian - minified\) v(\S+)", text[:300])
    return (match.group(1), text) if match else None


def bundle(trace_types: Iterable[str]) -> tuple[str, str]:
    """``(javascript, label)`` for a report whose figures use ``trace_types``."""
    vendored = _vendored()
    version = get_plotlyjs_version()
    if vendored is not None and vendored[0] == version and set(trace_types) <= CARTESIAN_TRACES:
        return vendored[1], f"plotly.js {version} (cartesian bundle)"
    return get_plotlyjs(), f"plotly.js {version}"
