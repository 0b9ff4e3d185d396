"""Connection guard: no one without a token can hold the agent's connections.

Uvicorn's h11 protocol starts no timer before a connection's first response, and counts idle
connections against ``limit_concurrency``: a few hundred idle or slow-header sockets would lock
every client out. This protocol class adds, per connection:

- a deadline for a complete request head (``header_timeout_s``), armed when the connection
  opens and again when a response is finished (then at least the keep-alive time), so a body
  trickled after an answer cannot keep the socket either;
- a body-progress deadline: while a request body is arriving, every ``body_timeout_s`` window
  must bring at least :data:`MIN_BODY_BYTES` (or the end of the body), unless the agent itself
  paused reading; a body sent at a byte a second is cut off;
- a cap on open connections per client address (``per_client``) and on connections that have
  not shown the token, all addresses together (``max_untrusted``). A new connection over either
  cap sheds the oldest idle connection without the token (of that address, or of any), and is
  refused only when there is none: a client without the token cannot keep the owner out.

A connection is *trusted* once one of its request heads carried the bearer token (any request
head when the agent has no token: loopback only). The routes answer 400 and 401 with
``Connection: close``, so a refused client's connection does not stay open either.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

#: bytes a request body must bring per ``body_timeout_s`` window (64 KiB: 6.4 KiB/s at 10 s)
MIN_BODY_BYTES = 64 * 1024


def bearer_ok(headers: list[tuple[bytes, bytes]], token: str | None) -> bool:
    """Whether request ``headers`` (lowercase names) carry ``token`` (any, when it is None)."""
    if token is None:
        return True
    for name, value in headers:
        if name == b"authorization":
            scheme, _, given = value.partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())
    return False


def guarded_h11(
    header_timeout_s: float,
    per_client: int,
    keep_alive_s: float,
    *,
    token: str | None = None,
    max_untrusted: int = 256,
    body_timeout_s: float = 10.0,
) -> type:
    """An ``H11Protocol`` subclass for ``uvicorn.Config(http=...)`` with these limits."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_by_client: dict[str, int] = {}
    # connections without the token, oldest first (dicts keep insertion order)
    untrusted: dict[Any, None] = {}

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None
        _counted: str | None = None
        _trusted = False
        _cycle_seen: Any = None
        _body_bytes = 0
        _body_excused = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            open_by_client[host] = open_by_client.get(host, 0) + 1
            self._counted = host
            untrusted[self] = None
            if open_by_client[host] > per_client and not self._shed(host):
                self._refuse()
                return
            if len(untrusted) > max_untrusted and not self._shed(None):
                self._refuse()
                return
            self._arm(header_timeout_s, self._expire)

        def _shed(self, host: str | None) -> bool:
            """Close the oldest idle untrusted connection (of ``host``, or any); False if none."""
            for other in untrusted:
                if other is not self and (host is None or other._counted == host) and other._idle():
                    other._forget()
                    other.transport.abort()
                    return True
            return False

        def _refuse(self) -> None:
            self._forget()
            self.transport.abort()

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _forget(self) -> None:
            """Stop counting this connection (at once when shed: its connection_lost comes later)."""
            self._disarm()
            untrusted.pop(self, None)
            host, self._counted = self._counted, None
            if host is not None:
                left = open_by_client.get(host, 1) - 1
                if left > 0:
                    open_by_client[host] = left
                else:
                    open_by_client.pop(host, None)

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is None or cycle.response_complete or self.transport.is_closing():
                return
            if cycle is not self._cycle_seen:  # a whole request head arrived
                self._cycle_seen = cycle
                if not self._trusted and bearer_ok(self.headers, token):
                    self._trusted = True
                    untrusted.pop(self, None)
                self._disarm()
                if cycle.more_body:
                    self._body_bytes, self._body_excused = 0, False
                    self._arm(body_timeout_s, self._check_body)
                return
            self._body_bytes += len(data)
            if self.flow.read_paused:  # the route is behind: not the client's fault
                self._body_excused = True

        def _check_body(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if cycle is None or cycle is not self._cycle_seen or cycle.response_complete:
                return  # the request is over
            if not cycle.more_body:
                return  # the body is complete: the route is in charge
            if self._body_bytes < MIN_BODY_BYTES and not self._body_excused and not self.flow.read_paused:
                self.transport.abort()
                return
            self._body_bytes, self._body_excused = 0, False
            self._arm(body_timeout_s, self._check_body)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm(max(header_timeout_s, keep_alive_s), self._expire)

        def _arm(self, seconds: float, callback: Any) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, callback)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self._idle():
                self.transport.abort()

    return GuardedH11Protocol
