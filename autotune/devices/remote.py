"""A device on the network: one agent or a pool of agents (``autotune agent``, protocol v1).

A profile names the agents and the backend they run::

    name: jetson
    backend: remote
    agents: [http://jetson.local:8765]          # or a pool of identical devices
    options:
      agent_backend: [tensorrt, ort-cpu]        # first one the agent offers
      token_file: ~/.autotune-token             # or AUTOTUNE_AGENT_TOKEN

Each model is uploaded once per agent (``HEAD`` first, then ``PUT``; content-addressed).
Jobs are spread over the pool in turn; an agent that cannot be reached is skipped and tried
again after an exponential back-off, and a job lost with its agent (killed, restarted) is run
again on another one. A measurement fails with a clear reason only when every agent failed
for ``retry_s`` seconds. What the agent measured (ok, unstable, build_error, timeout, ...)
is returned as it is: that is the candidate's result, not the agent's fault.

>>> dev = RemoteDevice(["http://127.0.0.1:8765"])                     # doctest: +SKIP
>>> dev.measure(Path("m.onnx"), {"input": x}, RuntimeOptions(), Protocol.quick())  # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from autotune._util import error_line, first_line, sha256_file
from autotune.devices._base import Capabilities, Device, Measurement, Protocol, RuntimeOptions
from autotune.errors import UserError
from autotune.wire import (
    DEFAULT_TOKEN_FILE,
    PROTOCOL_VERSION,
    TERMINAL,
    TOKEN_ENV,
    encode_inputs,
    measurement_from_wire,
)

if TYPE_CHECKING:
    import httpx

    from autotune.profiles import DeviceProfile


class _AgentDown(Exception):
    """This agent could not take or finish the job (network, crash, restart, full queue)."""

    def __init__(self, reason: str, backoff: bool = True) -> None:
        super().__init__(reason)
        self.backoff = backoff


@dataclass
class _Agent:
    url: str
    client: httpx.Client
    info: dict[str, Any] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)  # sha256 known to be on this agent
    failures: int = 0
    next_try: float = 0.0  # monotonic time before which the agent is skipped
    last_error: str = ""

    def down(self, reason: str, base: float, cap: float) -> None:
        self.failures += 1
        self.last_error = reason
        self.next_try = time.monotonic() + min(cap, base * 2 ** (self.failures - 1))

    def up(self) -> None:
        self.failures, self.next_try, self.last_error = 0, 0.0, ""


def _start_hint(url: str) -> str:
    port = urlsplit(url).port or 8765
    return (
        f"start one on the device: pip install 'autotune[agent]' && "
        f"autotune agent --host 0.0.0.0 --port {port} --token-file ~/.autotune-token"
    )


def _reason(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError):
        text = first_line(str(exc)) or "connection failed"
        return "connection refused" if "refused" in text.lower() else text
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return error_line(exc)


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return f"{body.get('error', resp.status_code)}: {body.get('detail', '')}"
    except ValueError:
        return f"HTTP {resp.status_code}"


class RemoteDevice(Device):
    """Measure on one agent or a pool of identical agents.

    Args:
        agents: agent URLs (``http://host:port``).
        agent_backend: backend to use on the agents, or a preference list (first one offered).
        token: bearer token (None: no Authorization header; fine for loopback agents).
        name: profile name, for messages.
        retry_s: how long to keep trying when every agent is failing before giving up a job.
        job_timeout_s: client-side cap on one job (queue wait included).
        measure_timeout_s: asks the agent for a shorter measure-phase timeout.
        connect_timeout_s, read_timeout_s, upload_timeout_s: httpx timeouts.
        test_hooks: test-only job hooks, refused by agents that did not enable them.
    """

    backend = "remote"
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
        agent_backend: str | Sequence[str] = ("ort-cpu",),
        token: str | None = None,
        name: str = "remote",
        retry_s: float = 30.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        job_timeout_s: float = 3600.0,
        measure_timeout_s: float | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 30.0,
        upload_timeout_s: float = 600.0,
        poll_wait_s: float = 10.0,
        test_hooks: dict[str, Any] | None = None,
    ) -> None:
        import httpx

        if not agents:
            raise UserError(
                f"device {name!r}: no agents; list them in the profile (agents: [...]) or pass --agent URL"
            )
        self.name = name
        self.wanted = [agent_backend] if isinstance(agent_backend, str) else list(agent_backend)
        self.agent_backend = self.wanted[0]
        self.retry_s = retry_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.job_timeout_s = job_timeout_s
        self.measure_timeout_s = measure_timeout_s
        self.poll_wait_s = poll_wait_s
        self.upload_timeout_s = upload_timeout_s
        self.test_hooks = test_hooks
        self.has_token = bool(token)
        self.token_file = DEFAULT_TOKEN_FILE
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(
            connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=5.0
        )
        self.agents: list[_Agent] = []
        for url in agents:
            url = url.rstrip("/")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UserError(f"device {name!r}: agent {url!r} is not an http(s)://host:port URL")
            self.agents.append(_Agent(url, httpx.Client(base_url=url, headers=headers, timeout=timeout)))
        self._rr = random.randrange(len(self.agents))
        self._lock = threading.Lock()
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._fingerprint: dict[str, Any] = {}
        #: counters: jobs, uploads (PUTs that stored a model), upload_skipped (already there), retries
        self.stats: dict[str, int] = {
            "jobs": 0,
            "uploads": 0,
            "upload_skipped": 0,
            "retries": 0,
            "agent_failures": 0,
        }

    # -- construction ------------------------------------------------------------

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import httpx  # noqa: F401
        except ImportError:
            return False, "httpx is not installed (pip install 'autotune[search]')"
        return True, ""

    @classmethod
    def from_profile(cls, profile: DeviceProfile, agent: str | None = None) -> RemoteDevice:
        """Build from a profile (``--agent URL`` overrides its agents) and contact the agents."""
        opts = dict(profile.options)
        known = {
            "agent_backend",
            "token_file",
            "retry_s",
            "backoff_s",
            "backoff_max_s",
            "job_timeout_s",
            "measure_timeout_s",
            "connect_timeout_s",
            "read_timeout_s",
            "upload_timeout_s",
            "test_hooks",
        }
        unknown = set(opts) - known
        if unknown:
            raise UserError(
                f"device {profile.name!r}: unknown remote options {sorted(unknown)}; known: {sorted(known)}"
            )
        token_file = opts.pop("token_file", None)
        agents = [agent] if agent else list(profile.agents)
        device = cls(
            agents,
            token=read_client_token(token_file),
            name=profile.name,
            agent_backend=opts.pop("agent_backend", "ort-cpu"),
            **opts,
        )
        device.token_file = str(token_file or DEFAULT_TOKEN_FILE)
        device.connect()
        return device

    def connect(self) -> None:
        """First contact: ``GET /v1/info`` on every agent. UserError when none can serve."""
        problems: list[str] = []
        refused_token: list[str] = []
        ok: list[_Agent] = []
        for a in self.agents:
            try:
                resp = a.client.get("/v1/info")
            except Exception as exc:  # noqa: BLE001 - any transport error means unreachable
                problems.append(f"{a.url} ({_reason(exc)})")
                a.down(_reason(exc), self.backoff_s, self.backoff_max_s)
                continue
            if resp.status_code == 401:
                refused_token.append(a.url)
                a.down("token refused", self.backoff_s, self.backoff_max_s)
                continue
            if resp.status_code != 200:
                problems.append(f"{a.url} ({_detail(resp)})")
                a.down(_detail(resp), self.backoff_s, self.backoff_max_s)
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
            a.client.close()

    def measure(
        self,
        model_path: Path,
        inputs: dict[str, np.ndarray],
        runtime: RuntimeOptions,
        protocol: Protocol,
    ) -> Measurement:
        """Run one measurement somewhere in the pool; see the module docstring for retries."""
        sha = self._sha256(Path(model_path))
        job: dict[str, Any] = {
            "model_sha256": sha,
            "backend": self.agent_backend,
            "options": runtime.to_dict(),
            "protocol": protocol.to_dict(),
            "inputs": encode_inputs(inputs),
        }
        if self.measure_timeout_s:
            job["timeouts"] = {"measure_s": self.measure_timeout_s}
        if self.test_hooks:
            job["test"] = dict(self.test_hooks)
        self.stats["jobs"] += 1
        errors: dict[str, str] = {}
        first_failure: float | None = None
        attempts = 0
        rounds = 0
        while True:
            # the first round (and the last) also tries agents in back-off, after the others:
            # a job fails only when every agent failed it
            last = first_failure is not None and time.monotonic() - first_failure >= self.retry_s
            for agent in self._order(include_backoff=rounds == 0 or last):
                attempts += 1
                if attempts > 1:
                    self.stats["retries"] += 1
                try:
                    m = self._run_on(agent, Path(model_path), sha, job)
                except _AgentDown as exc:
                    errors[agent.url] = str(exc)
                    self.stats["agent_failures"] += 1
                    if exc.backoff:
                        agent.down(str(exc), self.backoff_s, self.backoff_max_s)
                    continue
                agent.up()
                return m
            rounds += 1
            now = time.monotonic()
            first_failure = first_failure if first_failure is not None else now
            if last or self.retry_s <= 0:
                for a in self.agents:
                    errors.setdefault(a.url, a.last_error or "not tried")
                detail = "; ".join(f"{u}: {e}" for u, e in errors.items())
                return Measurement(
                    status="runtime_error",
                    backend=self.agent_backend,
                    error=f"no agent could run the job for {self.retry_s:g} s ({detail})",
                    runtime=runtime.to_dict(),
                    protocol=protocol.to_dict(),
                    fingerprint=self.fingerprint(),
                )
            wake = min(min(a.next_try for a in self.agents), first_failure + self.retry_s)
            time.sleep(max(0.05, wake - now))

    # -- internals ---------------------------------------------------------------

    def _order(self, include_backoff: bool = False) -> list[_Agent]:
        """Agents not in back-off, starting one further along the pool each time; then, if
        ``include_backoff``, those in back-off, soonest due first."""
        with self._lock:
            self._rr = (self._rr + 1) % len(self.agents)
            start = self._rr
        now = time.monotonic()
        rotated = self.agents[start:] + self.agents[:start]
        ready = [a for a in rotated if a.next_try <= now]
        if include_backoff:
            ready += sorted((a for a in rotated if a.next_try > now), key=lambda a: a.next_try)
        return ready

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._sha_cache:
            self._sha_cache[key] = sha256_file(path)
        return self._sha_cache[key]

    def _call(self, agent: _Agent, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            resp = agent.client.request(method, url, **kw)
        except Exception as exc:  # noqa: BLE001 - transport failure: the agent is down
            raise _AgentDown(_reason(exc)) from None
        if resp.status_code == 401:
            raise _AgentDown("token refused")
        if resp.status_code == 503:
            raise _AgentDown(_detail(resp), backoff=False)
        if resp.status_code >= 500:
            raise _AgentDown(_detail(resp))
        return resp

    def _ensure_model(self, agent: _Agent, path: Path, sha: str, force: bool = False) -> Measurement | None:
        """Make sure ``agent`` holds the model; a Measurement when the agent rejects it."""
        if sha in agent.models and not force:
            return None
        resp = self._call(agent, "HEAD", f"/v1/models/{sha}")
        if resp.status_code == 200:
            agent.models.add(sha)
            self.stats["upload_skipped"] += 1
            return None
        import httpx

        body = path.read_bytes()
        resp = self._call(
            agent,
            "PUT",
            f"/v1/models/{sha}",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(self.upload_timeout_s, connect=agent.client.timeout.connect),
        )
        if resp.status_code in (200, 201):
            agent.models.add(sha)
            if resp.status_code == 201:
                self.stats["uploads"] += 1
            return None
        status = "invalid_model" if resp.status_code in (400, 413) else "runtime_error"
        return Measurement(
            status=status, backend=self.agent_backend, error=f"upload to {agent.url} refused: {_detail(resp)}"
        )

    def _run_on(self, agent: _Agent, path: Path, sha: str, job: dict[str, Any]) -> Measurement:
        rejected = self._ensure_model(agent, path, sha)
        if rejected is not None:
            return rejected
        resp = self._call(agent, "POST", "/v1/jobs", json=job)
        if resp.status_code == 409:  # the agent lost the model (fresh root): upload again
            agent.models.discard(sha)
            rejected = self._ensure_model(agent, path, sha, force=True)
            if rejected is not None:
                return rejected
            resp = self._call(agent, "POST", "/v1/jobs", json=job)
        if resp.status_code != 202:
            return Measurement(
                status="runtime_error",
                backend=self.agent_backend,
                error=f"agent {agent.url} rejected the job: {_detail(resp)}",
            )
        job_id = resp.json()["job_id"]
        deadline = time.monotonic() + self.job_timeout_s
        import httpx

        poll_timeout = httpx.Timeout(self.poll_wait_s + 15.0, connect=agent.client.timeout.connect)
        while True:
            resp = self._call(
                agent, "GET", f"/v1/jobs/{job_id}", params={"wait": self.poll_wait_s}, timeout=poll_timeout
            )
            if resp.status_code == 404:
                raise _AgentDown("the agent lost the job (restarted?)", backoff=False)
            if resp.status_code != 200:
                raise _AgentDown(_detail(resp))
            view = resp.json()
            if view["status"] in TERMINAL:
                return self._result(agent, view)
            if time.monotonic() > deadline:
                try:
                    agent.client.delete(f"/v1/jobs/{job_id}")
                except Exception:  # noqa: BLE001 - best effort
                    pass
                return Measurement(
                    status="timeout",
                    backend=self.agent_backend,
                    error=f"no result from {agent.url} within {self.job_timeout_s:g} s",
                )

    def _result(self, agent: _Agent, view: dict[str, Any]) -> Measurement:
        if view.get("measurement"):
            m = measurement_from_wire(view["measurement"])
            m.status = view["status"]
        else:
            m = Measurement(status=view["status"], backend=view.get("backend", self.agent_backend))
        if view.get("error") and not m.error:
            m.error = view["error"]
        m.extra.setdefault("agent", {})
        m.extra["agent"].update(
            {
                "url": agent.url,
                "job_id": view["job_id"],
                "started_at": view.get("started_at"),
                "finished_at": view.get("finished_at"),
                "submissions": view.get("submissions", 1),
            }
        )
        return m


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
