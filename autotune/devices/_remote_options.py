"""The ``options:`` of a ``backend: remote`` device profile, typed (:class:`RemoteOptions`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from autotune.errors import UserError


@dataclass
class RemoteOptions:
    """How the client talks to its agents. Times in seconds.

    Args:
        agent_backend: backend to use on the agents, or a preference list (first one offered).
        token_file: file with the bearer token (AUTOTUNE_AGENT_TOKEN wins; default ~/.autotune-token).
        retry_s: how long to keep trying when every agent is failing before giving up a job.
        backoff_s, backoff_max_s: first and longest wait before an agent that failed is tried again.
        job_timeout_s: client-side cap on one job (queue wait included).
        measure_timeout_s: asks the agent for a shorter measure-phase timeout.
        connect_timeout_s, read_timeout_s, upload_timeout_s: HTTP timeouts.
        poll_wait_s: how long one ``GET /v1/jobs/{id}?wait=`` may be held by the agent.
        ca_file: CA bundle (PEM) that signed the agents' certificates, for ``https://`` agents.
        fingerprint: SHA-256 of the agents' certificate (hex, colons allowed), pinned: only that
            certificate is trusted. ``autotune agent --self-signed`` prints it.
        test_hooks: test-only job hooks, refused by agents that did not enable them.
    """

    agent_backend: tuple[str, ...] = ("ort-cpu",)
    token_file: str | None = None
    retry_s: float = 30.0
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    job_timeout_s: float = 3600.0
    measure_timeout_s: float | None = None
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 30.0
    upload_timeout_s: float = 600.0
    poll_wait_s: float = 10.0
    ca_file: str | None = None
    fingerprint: str | None = None
    test_hooks: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.agent_backend, str):
            self.agent_backend = (self.agent_backend,)
        self.agent_backend = tuple(self.agent_backend)
        if self.fingerprint is not None:
            self.fingerprint = normalize_fingerprint(self.fingerprint)

    @classmethod
    def from_profile(cls, options: Mapping[str, Any], name: str = "remote") -> RemoteOptions:
        """Parse a profile's ``options:``; UserError naming the device on anything unknown or mistyped."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(options) - set(known)
        if unknown:
            raise UserError(
                f"device {name!r}: unknown remote options {sorted(unknown)}; known: {sorted(known)}"
            )
        values: dict[str, Any] = {}
        for key, value in options.items():
            kind = str(known[key].type)
            if kind.startswith("float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    if not (value is None and "None" in kind):
                        raise UserError(f"device {name!r}: option {key} must be a number, got {value!r}")
                values[key] = None if value is None else float(value)
            elif key == "agent_backend":
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value) or not value:
                    raise UserError(f"device {name!r}: agent_backend must be a name or a list of names")
                values[key] = tuple(value)
            elif key == "test_hooks":
                if value is not None and not isinstance(value, Mapping):
                    raise UserError(f"device {name!r}: test_hooks must be a mapping")
                values[key] = dict(value) if value is not None else None
            else:
                if value is not None and not isinstance(value, str):
                    raise UserError(f"device {name!r}: option {key} must be a string, got {value!r}")
                values[key] = value
        try:
            return cls(**values)
        except ValueError as exc:
            raise UserError(f"device {name!r}: {exc}") from None


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` or ``abcd...`` -> 64 lowercase hex; ValueError when it is not a SHA-256."""
    hexed = str(text).replace(":", "").strip().lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ValueError(f"fingerprint {text!r} is not a SHA-256 (64 hex digits, colons allowed)")
    return hexed
