"""The remote client's pieces that need no agent: profile options, the wire codec round trip."""

from __future__ import annotations

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


def test_codec_round_trip() -> None:
    inputs = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([[1, -2]], dtype=">i8"),  # big endian goes out little endian
        "c": np.array([True, False]),
    }
    back = decode_inputs(encode_inputs(inputs))
    for name, arr in inputs.items():
        assert back[name].dtype == arr.dtype.newbyteorder("=") and np.array_equal(back[name], arr)
