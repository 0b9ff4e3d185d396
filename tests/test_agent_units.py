"""Agent and client pieces tested without an agent process: imports, profile options, the codec."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from autotune.devices._remote_options import RemoteOptions
from autotune.errors import UserError
from autotune.wire import decode_inputs, encode_inputs


def test_remote_options_from_profile() -> None:
    opts = RemoteOptions.from_profile(
        {"agent_backend": "tensorrt", "retry_s": 60, "token_file": "~/t", "measure_timeout_s": None}, "jetson"
    )
    assert opts.agent_backend == ("tensorrt",) and opts.retry_s == 60.0 and opts.token_file == "~/t"
    assert opts.measure_timeout_s is None
    assert RemoteOptions.from_profile({"agent_backend": ["a", "b"]}).agent_backend == ("a", "b")
    with pytest.raises(UserError, match=r"device 'jetson': unknown remote options \['retries'\]; known: "):
        RemoteOptions.from_profile({"retries": 3}, "jetson")
    with pytest.raises(UserError, match="option retry_s must be a number, got 'soon'"):
        RemoteOptions.from_profile({"retry_s": "soon"}, "jetson")
    with pytest.raises(UserError, match="agent_backend must be a name or a list of names"):
        RemoteOptions.from_profile({"agent_backend": [1]}, "jetson")
    pin = RemoteOptions.from_profile({"fingerprint": "AB:" * 31 + "CD"}).fingerprint
    assert pin == "ab" * 31 + "cd"
    with pytest.raises(UserError, match="is not a SHA-256"):
        RemoteOptions.from_profile({"fingerprint": "AB:CD"}, "jetson")


def test_host_header_check() -> None:
    from autotune.agent.config import AgentConfig, host_allowed, host_names

    names = host_names(AgentConfig(host="0.0.0.0", allowed_hosts=("Jetson.Lan",)))
    for ok in ("127.0.0.1:8765", "[::1]:8765", "10.1.2.3", "localhost:8765", "jetson.lan", "JETSON.LAN."):
        assert host_allowed(ok, names), ok
    for bad in ("evil.example", "evil.example:8765", "", "[::1", "localhost.evil.example"):
        assert not host_allowed(bad, names), bad


def test_codec_round_trip() -> None:
    inputs = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([[1, -2]], dtype=">i8"),  # big endian goes out little endian
        "c": np.array([True, False]),
    }
    back = decode_inputs(encode_inputs(inputs))
    for name, arr in inputs.items():
        assert back[name].dtype == arr.dtype.newbyteorder("=") and np.array_equal(back[name], arr)


AGENT_MODULES = [
    "autotune.agent",
    "autotune.agent.config",
    "autotune.agent.state",
    "autotune.agent.jobcheck",
    "autotune.agent.routes",
    "autotune.agent.server",
    "autotune.agent.guard",
    "autotune.agent.tls",
    "autotune.agent.job",
    "autotune.agent.modelcheck",
    "autotune.agent.worker",
    "autotune.agent.scheduler",
    "autotune.agent.store",
    "autotune.agent.health",
    "autotune.agent.process",
    "autotune.wire",
]


def test_agent_modules_load_no_runtime() -> None:
    """The agent process never imports torch or onnxruntime (only its job subprocesses do, and
    onnxruntime only there, lazily); FastAPI and uvicorn wait for create_app()/serve()."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {AGENT_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({k.split('.')[0] for k in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert "autotune" in loaded and "numpy" in loaded
    for heavy in ("torch", "onnxruntime", "onnx", "fastapi", "uvicorn", "httpx", "optuna"):
        assert heavy not in loaded, f"importing the agent's modules loaded {heavy}"


def test_base64_inputs_are_checked_in_chunks() -> None:
    import base64
    import hashlib

    from autotune.agent import jobcheck

    raw = bytes(range(256)) * 20_000  # 5 MB: several chunks
    size, digest = jobcheck._decoded_size_and_sha256(base64.b64encode(raw).decode())
    assert size == len(raw) and digest == hashlib.sha256(raw).hexdigest()
    small = base64.b64encode(b"abcd").decode()  # ends in padding: fine
    assert jobcheck._decoded_size_and_sha256(small)[0] == 4
    for bad in ("%%%%", "abc", small + small, "QUJD" * 300_000 + "QQ==" + "QUJD" * 300_000):
        with pytest.raises(ValueError):
            jobcheck._decoded_size_and_sha256(bad)
