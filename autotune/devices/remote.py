"""A device on the network: one agent or a pool of agents (``autotune agent``, protocol v1,
``docs/agent-protocol.md``).

A profile names the agents and the backend they run::

    name: jetson
    backend: remote
    agents: [http://jetson.local:8765]          # or a pool of identical devices
    options:                                    # see RemoteOptions
      agent_backend: [tensorrt, ort-cpu]        # first one the agent offers
      token_file: ~/.autotune-token             # or AUTOTUNE_AGENT_TOKEN

Each model is uploaded once per agent (``HEAD`` first, then ``PUT``; content-addressed). The
pool (:mod:`autotune.devices._remote_pool`) spreads jobs, backs off from agents that fail and
re-runs a lost job on another; :mod:`autotune.devices._remote_client` talks to one agent.
What the agent measured (ok, unstable, build_error, timeout, ...) is returned as it is: that
is the candidate's result, not the agent's fault.

>>> dev = RemoteDevice(["http://127.0.0.1:8765"])                     # doctest: +SKIP
>>> dev.measure(Path("m.onnx"), {"input": x}, RuntimeOptions(), Protocol.quick())  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from autotune._util import sha256_file
from autotune.devices._base import Capabilities, Device, Measurement, Protocol, Reference, RuntimeOptions
from autotune.devices._remote_client import AgentClient, CertificateMismatch, detail, reason
from autotune.devices._remote_options import RemoteOptions
from autotune.devices._remote_pool import AgentPool, AllAgentsDown
from autotune.errors import UserError
from autotune.wire import DEFAULT_TOKEN_FILE, PROTOCOL_VERSION, TOKEN_ENV, encode_inputs

if TYPE_CHECKING:
    from autotune.space import DeviceProfile

__all__ = ["RemoteDevice", "RemoteOptions", "read_client_token"]


def _start_hint(url: str) -> str:
    port = urlsplit(url).port or 8765
    return (
        "start one on the device: install this project's wheel there (autotune agent-wheel, then "
        "pip install './autotune_hw-<version>-py3-none-any.whl[agent]'; never 'autotune' from PyPI) and run "
        f"autotune agent --host 0.0.0.0 --port {port} --token-file ~/.autotune-token"
    )


class RemoteDevice(Device):
    """Measure on one agent or a pool of identical agents.

    Args:
        agents: agent URLs (``http://host:port``).
        token: bearer token (None: no Authorization header; fine for loopback agents).
        name: profile name, for messages.
        options: a :class:`RemoteOptions`; or its fields as keyword arguments.
    """

    backend = "remote"
    supports_paired = True  # the job names the reference by sha256 (agents since paired timing)
    measures_locally = False  # the agent's queue runs one job at a time (agent/scheduler.py)
    capabilities = Capabilities(
        measures="the agent's backend on the remote device (see `autotune agent`); round trips excluded",
        bits=(32, 16, 8, 4),
        sparsity=(0.0, "2:4"),
        precisions=("fp32", "fp16"),
        notes=("what is real depends on the agent's backend; the profile lists it",),
    )

    def __init__(
        self,
        agents: Sequence[str],
        *,
        token: str | None = None,
        name: str = "remote",
        options: RemoteOptions | None = None,
        **kw: Any,
    ) -> None:
        if not agents:
            raise UserError(
                f"device {name!r}: no agents; list them in the profile (agents: [...]) or pass --agent URL"
            )
        self.name = name
        self.opts = options if options is not None else RemoteOptions(**kw)
        self.wanted = list(self.opts.agent_backend)
        self.agent_backend = self.wanted[0]
        self.has_token = bool(token)
        self.token_file = str(self.opts.token_file or DEFAULT_TOKEN_FILE)
        #: counters: jobs, uploads (PUTs that stored a model), upload_skipped (already there), retries
        self.stats: dict[str, int] = {
            "jobs": 0,
            "uploads": 0,
            "upload_skipped": 0,
            "retries": 0,
            "agent_failures": 0,
        }
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        clients = []
        for url in agents:
            url = url.rstrip("/")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UserError(f"device {name!r}: agent {url!r} is not an http(s)://host:port URL")
            if parts.scheme == "http" and (self.opts.fingerprint or self.opts.ca_file):
                raise UserError(
                    f"device {name!r}: agent {url} is http://, but the profile pins TLS; use https://"
                )
            clients.append(AgentClient(url, self.opts, self.stats, headers))
        self.pool = AgentPool(clients, self.opts.retry_s, self.stats)
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._fingerprint: dict[str, Any] = {}

    @property
    def agents(self) -> list[AgentClient]:
        return self.pool.clients

    @property
    def test_hooks(self) -> dict[str, Any] | None:
        return self.opts.test_hooks

    @test_hooks.setter
    def test_hooks(self, value: dict[str, Any] | None) -> None:
        self.opts.test_hooks = value

    # -- construction ------------------------------------------------------------

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import httpx  # noqa: F401
        except ImportError:
            return False, "httpx is not installed (pip install -e '.[search]' in the source checkout)"
        return True, ""

    @classmethod
    def from_profile(cls, profile: DeviceProfile, agent: str | None = None) -> RemoteDevice:
        """Build from a profile (``--agent URL`` overrides its agents) and contact the agents."""
        opts = RemoteOptions.from_profile(profile.options, profile.name)
        agents = [agent] if agent else list(profile.agents)
        device = cls(agents, token=read_client_token(opts.token_file), name=profile.name, options=opts)
        device.connect()
        return device

    def connect(self) -> None:
        """First contact: ``GET /v1/info`` on every agent. UserError when none can serve."""
        problems: list[str] = []
        refused_token: list[str] = []
        ok: list[AgentClient] = []
        for a in self.agents:
            try:
                resp = a.http.get("/v1/info")
            except CertificateMismatch as exc:
                raise UserError(
                    f"device {self.name!r}: agent {a.url}: {exc}; check options: fingerprint"
                ) from None
            except Exception as exc:  # noqa: BLE001 - any transport error means unreachable
                problems.append(f"{a.url} ({reason(exc)})")
                a.down(reason(exc))
                continue
            if resp.status_code == 401:
                refused_token.append(a.url)
                a.down("token refused")
                continue
            if resp.status_code != 200:
                problems.append(f"{a.url} ({detail(resp)})")
                a.down(detail(resp))
                continue
            a.info = resp.json()
            if a.info.get("protocol") != PROTOCOL_VERSION:
                problems.append(
                    f"{a.url} (speaks protocol {a.info.get('protocol')!r}, not {PROTOCOL_VERSION})"
                )
                continue
            ok.append(a)
        if not ok:
            if refused_token:
                how = "refused the token" if self.has_token else "requires a token"
                raise UserError(
                    f"device {self.name!r}: agent {refused_token[0]} {how}; set {TOKEN_ENV} or put the "
                    f"agent's token in {self.token_file} (profile option token_file)"
                )
            tried = "; ".join(problems)
            raise UserError(
                f"device {self.name!r}: no agent reachable: {tried}; {_start_hint(self.agents[0].url)}"
            )
        offered = {n for a in ok for n, b in a.info.get("backends", {}).items() if b.get("available")}
        chosen = next((b for b in self.wanted if b in offered), None)
        if chosen is None:
            raise UserError(
                f"device {self.name!r}: the agents offer backends {sorted(offered) or 'none'}, "
                f"not {' or '.join(self.wanted)}"
            )
        self.agent_backend = chosen
        first = next(a for a in ok if a.info["backends"].get(chosen, {}).get("available"))
        self._fingerprint = {
            **first.info["backends"][chosen].get("fingerprint", {}),
            "backend": "remote",
            "agent_backend": chosen,
            "agent_version": first.info.get("agent_version"),
        }

    # -- Device ------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint) or {"backend": "remote", "agents": [a.url for a in self.agents]}

    def close(self) -> None:
        for a in self.agents:
            a.close()

    def measure(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        """Run one measurement somewhere in the pool; see the module docstring for retries."""
        return self._run(Path(model_path), inputs, runtime, protocol, None)

    def measure_paired(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        reference: Reference,
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        """Paired timing on the agent: the job names the reference by sha256 (uploaded once)."""
        return self._run(Path(model_path), inputs, runtime, protocol, reference)

    def _run(
        self,
        path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol,
        reference: Reference | None,
    ) -> Measurement:
        sha = self._sha256(path)
        job: dict[str, Any] = {
            "model_sha256": sha,
            "backend": self.agent_backend,
            "options": runtime.to_dict(),
            "protocol": protocol.to_dict(),
            "inputs": encode_inputs(inputs),
        }
        if self.opts.measure_timeout_s:
            job["timeouts"] = {"measure_s": self.opts.measure_timeout_s}
        if self.opts.test_hooks:
            job["test"] = dict(self.opts.test_hooks)
        ref: tuple[Path, str] | None = None
        if reference is not None:
            ref = (Path(reference.path), reference.sha256 or self._sha256(Path(reference.path)))
            job["reference_sha256"] = ref[1]
            if not _same_inputs(inputs, reference.inputs):
                job["reference_inputs"] = encode_inputs(reference.inputs)
        self.stats["jobs"] += 1
        try:
            return self.pool.run(lambda agent: agent.run(path, sha, job, ref))
        except AllAgentsDown as exc:
            return Measurement(
                status="runtime_error",
                backend=self.agent_backend,
                error=str(exc),
                runtime=runtime.to_dict(),
                protocol=protocol.to_dict(),
                fingerprint=self.fingerprint(),
            )

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._sha_cache:
            self._sha_cache[key] = sha256_file(path)
        return self._sha_cache[key]


def _same_inputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def read_client_token(token_file: str | None = None) -> str | None:
    """AUTOTUNE_AGENT_TOKEN, else the first line of ``token_file`` (default ~/.autotune-token), if any."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    path = Path(token_file or DEFAULT_TOKEN_FILE).expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
