"""Connection guard: no one without a token can hold the agent's connections.

Uvicorn's h11 protocol starts no timer before a connection's first response, and counts idle
connections against ``limit_concurrency``: a few hundred idle or slow-header sockets would lock
every client out. This protocol class adds, per connection:

- a deadline for a complete request head (``header_timeout_s``), armed when the connection
  opens and again when a response is finished (then at least the keep-alive time), so a body
  trickled after an answer cannot keep the socket either; a request in progress belongs to the
  route (the routes refuse unauthenticated requests before reading their bodies);
- a cap on open connections per client address (``per_client``): more are closed at once.
"""

from __future__ import annotations

import asyncio
from typing import Any


def guarded_h11(header_timeout_s: float, per_client: int, keep_alive_s: float) -> type:
    """An ``H11Protocol`` subclass for ``uvicorn.Config(http=...)`` with these limits."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_by_client: dict[str, int] = {}

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None
        _counted: str | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            open_by_client[host] = open_by_client.get(host, 0) + 1
            self._counted = host
            if open_by_client[host] > per_client:
                transport.abort()
                return
            self._arm(header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            host, self._counted = self._counted, None
            if host is not None:
                left = open_by_client.get(host, 1) - 1
                if left > 0:
                    open_by_client[host] = left
                else:
                    open_by_client.pop(host, None)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # a whole request head arrived: the route is in charge now

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm(max(header_timeout_s, keep_alive_s))

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.abort()

    return GuardedH11Protocol
