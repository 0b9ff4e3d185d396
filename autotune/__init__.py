"""autotune: find the most accurate compressed model that meets a latency budget on a device.

>>> import autotune
>>> result = autotune.search(model, example_inputs, evaluate=my_eval, budget="10ms",
...                          device="cpu", trials=60)                       # doctest: +SKIP
>>> result.best.export("best.onnx")                                        # doctest: +SKIP

Imports are lazy: an edge agent (``autotune agent``) runs without torch installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "search": "autotune.api",
    "Task": "autotune.task",
    "Runner": "autotune.task",
    "ParetoSet": "autotune.result",
    "TrialResult": "autotune.result",
    "UserError": "autotune.errors",
    "CandidateError": "autotune.errors",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")
