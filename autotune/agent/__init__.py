"""The measurement agent: an HTTP server on an edge device that measures ONNX models for
``autotune`` running elsewhere (protocol v1, ``docs/agent-protocol.md``).

On the device (this project's wheel with the agent extra, no torch; ``autotune agent-wheel``
builds it: ``pip install './autotune_hw-<version>-py3-none-any.whl[agent]'``)::

    autotune agent --host 0.0.0.0 --port 8765 --token-file ~/.autotune-token

On the workstation, a device profile with ``backend: remote`` and ``agents: [http://jetson:8765]``
(see :mod:`autotune.devices.remote`).

Layout (one concept per module):

- :mod:`autotune.agent.schemas` -- the typed requests and responses of protocol v1 (pydantic);
- :mod:`autotune.agent.store` -- content-addressed model storage (``<root>/models/<sha256>.onnx``);
- :mod:`autotune.agent.worker` -- the agent side of a job subprocess, with per-phase timeouts;
- :mod:`autotune.agent.job` -- the job subprocess itself (``python -m autotune.agent.job``);
- :mod:`autotune.agent.scheduler` -- one measurement at a time: a queue, coalescing, cancel;
- :mod:`autotune.agent.health` -- psutil and tegrastats readings for ``GET /v1/info``;
- :mod:`autotune.agent.config` -- :class:`AgentConfig`, the loopback check, the listening socket;
- :mod:`autotune.agent.state` -- :class:`Agent`, the state behind the routes;
- :mod:`autotune.agent.jobcheck` -- the job validator (``POST /v1/jobs`` bodies);
- :mod:`autotune.agent.routes` -- the FastAPI app, bearer-token auth, Host and Content-Type checks;
- :mod:`autotune.agent.guard` -- header timeout and per-address connection cap (uvicorn protocol);
- :mod:`autotune.agent.tls` -- the self-signed certificate and the fingerprint clients pin;
- :mod:`autotune.agent.modelcheck` -- the upload validator (run in a job subprocess);
- :mod:`autotune.agent.server` -- :func:`serve`;
- :mod:`autotune.agent.process` -- start a local agent process (tests, benchmarks, scripts).

Imports are lazy: the job subprocess imports neither FastAPI nor pydantic.
"""

from __future__ import annotations

import importlib
from typing import Any

from autotune.wire import PROTOCOL_VERSION

_LAZY = {
    "AgentConfig": "autotune.agent.config",
    "Agent": "autotune.agent.state",
    "create_app": "autotune.agent.routes",
    "serve": "autotune.agent.server",
    "AgentProcess": "autotune.agent.process",
}

__all__ = [*_LAZY, "PROTOCOL_VERSION"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autotune.agent' has no attribute {name!r}")
