"""A client for ONE agent (protocol v1, ``docs/agent-protocol.md``): HTTP, upload, polling, and
that agent's back-off state. The pool (:mod:`autotune.devices._remote_pool`) decides which
agent runs a job; this module runs it there.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from autotune._util import error_line, first_line
from autotune.devices._remote_options import RemoteOptions
from autotune.records import Measurement, Status
from autotune.wire import TERMINAL, measurement_from_wire

if TYPE_CHECKING:
    import httpx


class AgentDown(Exception):
    """This agent could not take or finish the job (network, crash, restart, full queue)."""

    def __init__(self, reason: str, backoff: bool = True) -> None:
        super().__init__(reason)
        self.backoff = backoff


def reason(exc: BaseException) -> str:
    """One line for a transport failure."""
    import httpx

    if isinstance(exc, httpx.ConnectError):
        text = first_line(str(exc)) or "connection failed"
        return "connection refused" if "refused" in text.lower() else text
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return error_line(exc)


def detail(resp: httpx.Response) -> str:
    """``code: detail`` of an agent's error answer."""
    try:
        body = resp.json()
        return f"{body.get('error', resp.status_code)}: {body.get('detail', '')}"
    except ValueError:
        return f"HTTP {resp.status_code}"


class CertificateMismatch(Exception):
    """The agent's TLS certificate is not the pinned one: the token is not sent to it."""


def _pinned_context(url: str, pin: str, timeout: float) -> ssl.SSLContext:
    """An SSL context that trusts exactly the agent's certificate, if its SHA-256 is ``pin``.

    The certificate is fetched once without verification (nothing is sent but the TLS
    handshake), compared with the pin, then made the only trust anchor: every later handshake
    is verified against it, so a different certificate fails even at the same address.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with probe.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True) or b""
    got = hashlib.sha256(der).hexdigest()
    if got != pin:
        raise CertificateMismatch(
            f"the agent's TLS certificate has SHA-256 {got}, not the pinned fingerprint {pin}"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the pin names the certificate; host names do not matter
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ssl.DER_cert_to_PEM_cert(der))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


class AgentClient:
    """One agent: its URL, HTTP client, what it said in ``/v1/info``, which models it holds,
    and when it may be tried again after a failure."""

    def __init__(self, url: str, opts: RemoteOptions, stats: dict[str, int], headers: dict[str, str]) -> None:
        self.url = url
        self.opts = opts
        self.headers = headers
        self._http: httpx.Client | None = None
        self.stats = stats  # shared with the pool: uploads, upload_skipped
        self.info: dict[str, Any] = {}
        self.models: set[str] = set()  # sha256 known to be on this agent
        self.failures = 0
        self.next_try = 0.0  # monotonic time before which the agent is skipped
        self.last_error = ""

    # -- back-off ------------------------------------------------------------------

    def down(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        self.next_try = time.monotonic() + min(
            self.opts.backoff_max_s, self.opts.backoff_s * 2 ** (self.failures - 1)
        )

    def up(self) -> None:
        self.failures, self.next_try, self.last_error = 0, 0.0, ""

    @property
    def http(self) -> httpx.Client:
        """The HTTP client, made on first use (a pinned certificate is fetched then)."""
        if self._http is None:
            import httpx

            o = self.opts
            verify: ssl.SSLContext | bool = True
            if self.url.startswith("https://"):
                if o.fingerprint:
                    verify = _pinned_context(self.url, o.fingerprint, o.connect_timeout_s)
                elif o.ca_file:
                    verify = ssl.create_default_context(cafile=str(Path(o.ca_file).expanduser()))
            timeout = httpx.Timeout(
                connect=o.connect_timeout_s, read=o.read_timeout_s, write=o.read_timeout_s, pool=5.0
            )
            self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, verify=verify)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    # -- HTTP ----------------------------------------------------------------------

    def call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request; AgentDown when the agent, not the job, is the problem."""
        try:
            resp = self.http.request(method, url, **kw)
        except CertificateMismatch as exc:
            raise AgentDown(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - transport failure: the agent is down
            raise AgentDown(reason(exc)) from None
        if resp.status_code == 401:
            raise AgentDown("token refused")
        if resp.status_code in (429, 503):  # busy, not broken: try another agent without back-off
            raise AgentDown(detail(resp), backoff=False)
        if resp.status_code >= 500:
            raise AgentDown(detail(resp))
        return resp

    def ensure_model(self, path: Path, sha: str, backend: str, force: bool = False) -> Measurement | None:
        """Make sure the agent holds the model; a Measurement when the agent rejects it."""
        if sha in self.models and not force:
            return None
        resp = self.call("HEAD", f"/v1/models/{sha}")
        if resp.status_code == 200:
            self.models.add(sha)
            self.stats["upload_skipped"] += 1
            return None
        import httpx

        resp = self.call(
            "PUT",
            f"/v1/models/{sha}",
            content=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(self.opts.upload_timeout_s, connect=self.http.timeout.connect),
        )
        if resp.status_code in (200, 201):
            self.models.add(sha)
            if resp.status_code == 201:
                self.stats["uploads"] += 1
            return None
        status: Status = "invalid_model" if resp.status_code in (400, 413) else "runtime_error"
        return Measurement(
            status=status, backend=backend, error=f"upload to {self.url} refused: {detail(resp)}"
        )

    def run(
        self, path: Path, sha: str, job: dict[str, Any], reference: tuple[Path, str] | None = None
    ) -> Measurement:
        """Upload if needed (the model, and a paired job's reference), submit the job, poll it to
        the end. AgentDown: try elsewhere."""
        backend = job["backend"]
        models = [(path, sha), *([reference] if reference else [])]
        for p, s in models:
            rejected = self.ensure_model(p, s, backend)
            if rejected is not None:
                return rejected
        resp = self.call("POST", "/v1/jobs", json=job)
        if resp.status_code == 409:  # the agent lost a model (fresh root, eviction): upload again
            for p, s in models:
                self.models.discard(s)
                rejected = self.ensure_model(p, s, backend, force=True)
                if rejected is not None:
                    return rejected
            resp = self.call("POST", "/v1/jobs", json=job)
        if resp.status_code != 202:
            return Measurement(
                status="runtime_error",
                backend=backend,
                error=f"agent {self.url} rejected the job: {detail(resp)}",
            )
        return self._poll(resp.json()["job_id"], backend)

    def _poll(self, job_id: str, backend: str) -> Measurement:
        import httpx

        deadline = time.monotonic() + self.opts.job_timeout_s
        wait = self.opts.poll_wait_s
        poll_timeout = httpx.Timeout(wait + 15.0, connect=self.http.timeout.connect)
        while True:
            resp = self.call("GET", f"/v1/jobs/{job_id}", params={"wait": wait}, timeout=poll_timeout)
            if resp.status_code == 404:
                raise AgentDown("the agent lost the job (restarted?)", backoff=False)
            if resp.status_code != 200:
                raise AgentDown(detail(resp))
            view = resp.json()
            if view["status"] in TERMINAL:
                return self._result(view, backend)
            if time.monotonic() > deadline:
                try:
                    self.http.delete(f"/v1/jobs/{job_id}")
                except Exception:  # noqa: BLE001 - best effort
                    pass
                return Measurement(
                    status="timeout",
                    backend=backend,
                    error=f"no result from {self.url} within {self.opts.job_timeout_s:g} s",
                )

    def _result(self, view: dict[str, Any], backend: str) -> Measurement:
        if view.get("measurement"):
            m = measurement_from_wire(view["measurement"])
            m.status = view["status"]
        else:
            m = Measurement(status=view["status"], backend=view.get("backend", backend))
        if view.get("error") and not m.error:
            m.error = view["error"]
        m.extra.setdefault("agent", {}).update(  # beside what the agent recorded of the job
            {
                "url": self.url,
                "job_id": view["job_id"],
                "started_at": view.get("started_at"),
                "finished_at": view.get("finished_at"),
                "submissions": view.get("submissions", 1),
            }
        )
        return m
