"""The job subprocess: ``python -m autotune.agent.job measure|validate``.

Everything that touches untrusted bytes or a runtime (onnx parsing and checking, session
creation, engine builds, inference) runs here, never in the agent process, so a crash, a hang
or a leak costs one job, not the agent. The agent keeps one such process warm for measurements
(recycled after a failure and every N jobs) and one for upload validation.

Wire format (JSON lines): requests on stdin, events on a private copy of the original stdout
(fd 1 itself is pointed at stderr, so a library that prints cannot corrupt the stream)::

    -> {"op": "measure", "spec": {...}} | {"op": "validate", "path": ...} | {"op": "info"}
    <- {"event": "ready"} once, then per request {"event": "phase", "phase": ...} ... and
       {"event": "result", ...}

Inputs arrive as raw bytes (base64) with dtype and shape -- never pickles. When stdin closes
(the agent is gone) the process exits at once, releasing the device.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from autotune._util import error_line
from autotune.agent.modelcheck import validate_model
from autotune.wire import PROTOCOL_VERSION, decode_inputs, json_safe

#: set to "1" in the agent's environment to let jobs carry test hooks (sleep, crash)
TEST_HOOKS_ENV = "AUTOTUNE_AGENT_TEST_HOOKS"
#: the job process's address-space budget in bytes, set by the agent (0 or unset: none)
MEMORY_ENV = "AUTOTUNE_AGENT_JOB_MEMORY"
#: backends that allocate only host memory: they run under the address-space limit
CPU_BACKENDS = ("ort-cpu",)

MAX_SAMPLES_RETURNED = 4096
_OOM_MARKERS = ("out of memory", "bad_alloc", "failed to allocate", "cudaerrormemoryallocation", "oom")


def test_hooks_enabled() -> bool:
    return os.environ.get(TEST_HOOKS_ENV) == "1"


def apply_memory_limit(backend: str | None = None) -> None:
    """Let this process's address space grow by at most the agent's job budget from here
    (``RLIMIT_AS`` soft limit), so a model that allocates too much fails as ``oom`` instead of
    waking the kernel's OOM killer. ``backend`` None: the process itself (start-up, validation).

    CUDA reserves far more address space than memory, so GPU backends (and the backend probe
    behind ``/v1/info``) run with the soft limit lifted; the hard limit stays unlimited for
    that reason. The budget counts from the current size, so a process that already mapped a
    GPU runtime can still run CPU jobs under it.
    """
    import resource

    budget = int(os.environ.get(MEMORY_ENV) or 0)
    if budget <= 0:
        return
    if backend is not None and backend not in CPU_BACKENDS:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        return
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + budget, resource.RLIM_INFINITY))


def _address_space() -> int:
    """This process's virtual memory size in bytes (``VmSize``)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- measurement


def _run_hook(test: dict[str, Any] | None, phase: str) -> None:
    """Test-only: sleep or crash in a given phase. Inert unless the agent enabled hooks."""
    if not test or not test_hooks_enabled() or test.get("phase", "measure") != phase:
        return
    if test.get("sleep_s"):
        time.sleep(float(test["sleep_s"]))
    crash = test.get("crash")
    if crash == "abort":
        os.abort()
    elif crash == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif crash == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif crash == "raise":
        raise RuntimeError("test hook: runtime failure")


class Runner:
    """Serves requests in this process; device instances are kept between jobs."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.devices: dict[str, Any] = {}

    def emit(self, **event: Any) -> None:
        self.out.write(json.dumps(json_safe(event)) + "\n")
        self.out.flush()

    def info(self) -> dict[str, Any]:
        from dataclasses import fields

        apply_memory_limit("info")  # probing GPU backends may initialise CUDA

        from autotune import __version__
        from autotune.devices import BACKENDS, Protocol, RuntimeOptions, host_fingerprint

        backends: dict[str, Any] = {}
        for name, cls in BACKENDS.items():
            if name == "remote":
                continue  # an agent measures locally; it does not chain to other agents
            try:
                ok, why = cls.available()
                fp = self._device(name).fingerprint() if ok else {}
            except Exception as exc:  # noqa: BLE001 - a broken backend is reported, not fatal
                ok, why, fp = False, error_line(exc), {}
            backends[name] = {"available": bool(ok), "reason": why, "fingerprint": fp}
        return {
            "backends": backends,
            "host": {**host_fingerprint(), "agent_version": __version__},
            "runtime_fields": [f.name for f in fields(RuntimeOptions)],
            "protocol_fields": [f.name for f in fields(Protocol)],
        }

    def _device(self, name: str) -> Any:
        from autotune.devices import BACKENDS

        if name not in self.devices:
            self.devices[name] = BACKENDS[name]()
        return self.devices[name]

    def measure(self, spec: dict[str, Any]) -> dict[str, Any]:
        from autotune import __version__
        from autotune.devices import (
            BACKENDS,
            LOCK_TIMEOUT_ENV,
            DeviceBusy,
            Measurement,
            Protocol,
            Reference,
            RuntimeOptions,
        )

        backend = spec["backend"]
        if spec.get("lock_timeout_s") is not None:  # read by device_lock
            os.environ[LOCK_TIMEOUT_ENV] = str(float(spec["lock_timeout_s"]))
        test = spec.get("test")
        _run_hook(test, "prepare")
        inputs = decode_inputs(spec.get("inputs", []))
        runtime = RuntimeOptions.from_dict(spec.get("options", {}))
        protocol = Protocol.from_dict(spec.get("protocol", {}))
        cls = BACKENDS.get(backend)
        ok, why = cls.available() if cls is not None else (False, "unknown backend")
        if not ok:
            m = Measurement(status="build_error", backend=backend, error=f"backend {backend} unusable: {why}")
        else:
            apply_memory_limit(backend)
            device = self._device(backend)
            self.emit(event="phase", phase="measure")
            _run_hook(test, "measure")
            try:
                if spec.get("reference_path"):  # paired timing against the named reference
                    ref_inputs = (
                        decode_inputs(spec["reference_inputs"]) if "reference_inputs" in spec else inputs
                    )
                    reference = Reference(Path(spec["reference_path"]), ref_inputs, spec["reference_sha256"])
                    m = device.measure_paired(Path(spec["model_path"]), inputs, reference, runtime, protocol)
                else:
                    m = device.measure(Path(spec["model_path"]), inputs, runtime, protocol)
            except MemoryError:
                m = Measurement(status="oom", backend=backend, error="MemoryError in the job process")
            except DeviceBusy as exc:  # another process kept the device: say so, not "timeout"
                m = Measurement(status="timeout", backend=backend, error=str(exc))
        if m.status in ("runtime_error", "build_error") and any(
            s in (m.error or "").lower() for s in _OOM_MARKERS
        ):
            m.status = "oom"
        m.fingerprint = {**m.fingerprint, "agent_version": __version__, "agent_protocol": PROTOCOL_VERSION}
        return {"status": m.status, "measurement": m.to_dict(max_samples=MAX_SAMPLES_RETURNED)}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "validate":
            return {"error": validate_model(Path(request["path"]), int(request.get("max_tensor_bytes", 0)))}
        if op == "info":
            return self.info()
        if op == "measure":
            try:
                return self.measure(request["spec"])
            except MemoryError:
                return {"status": "oom", "measurement": None, "error": "MemoryError in the job process"}
            except Exception as exc:  # noqa: BLE001 - a failed job is a result
                msg = error_line(exc)
                status = "oom" if any(s in msg.lower() for s in _OOM_MARKERS) else "runtime_error"
                return {"status": status, "measurement": None, "error": msg}
        return {"error": f"unknown op {op!r}"}


def _read_requests(requests: queue.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        if line.strip():
            requests.put(json.loads(line))
    os._exit(0)  # the agent closed the pipe or died: stop now, whatever is running


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    role = argv[0] if argv else "measure"
    apply_memory_limit()  # first, before any import can allocate
    proto_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, not into the event stream
    out = os.fdopen(proto_fd, "w", buffering=1)
    requests: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=_read_requests, args=(requests,), daemon=True).start()
    # preload in the startup phase, so the per-job timeouts measure the job
    if role == "validate":
        import onnx
        import onnx.checker  # noqa: F401
    else:
        import numpy  # noqa: F401

        import autotune.devices  # noqa: F401
    runner = Runner(out)
    runner.emit(event="ready", pid=os.getpid(), role=role)
    while True:
        request = requests.get()
        result = runner.handle(request)
        runner.emit(event="result", **result)


if __name__ == "__main__":
    sys.exit(main())
