"""A pool of identical agents: which one runs the next job, back-off, and re-running a job lost
with its agent on another one.

Jobs are spread over the pool in turn; an agent that cannot be reached is skipped and tried
again after an exponential back-off, and a job lost with its agent (killed, restarted) is run
again on another one. A job fails only when every agent failed it for ``retry_s`` seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from autotune.devices._remote_client import AgentClient, AgentDown
from autotune.records import Measurement


class AllAgentsDown(Exception):
    """No agent could run the job for ``retry_s`` seconds; the message lists why, per agent."""


class AgentPool:
    """Round-robin over :class:`AgentClient` s, skipping those in back-off."""

    def __init__(self, clients: list[AgentClient], retry_s: float, stats: dict[str, int]) -> None:
        self.clients = clients
        self.retry_s = retry_s
        self.stats = stats  # retries, agent_failures
        self.rr = random.randrange(len(clients))
        self._lock = threading.Lock()

    def order(self, include_backoff: bool = False) -> list[AgentClient]:
        """Agents not in back-off, starting one further along the pool each time; then, if
        ``include_backoff``, those in back-off, soonest due first."""
        with self._lock:
            self.rr = (self.rr + 1) % len(self.clients)
            start = self.rr
        now = time.monotonic()
        rotated = self.clients[start:] + self.clients[:start]
        ready = [a for a in rotated if a.next_try <= now]
        if include_backoff:
            ready += sorted((a for a in rotated if a.next_try > now), key=lambda a: a.next_try)
        return ready

    def run(self, job: Callable[[AgentClient], Measurement]) -> Measurement:
        """Run ``job`` on one agent after another until one finishes it; AllAgentsDown if none does."""
        errors: dict[str, str] = {}
        first_failure: float | None = None
        attempts = 0
        rounds = 0
        while True:
            # the first round (and the last) also tries agents in back-off, after the others:
            # a job fails only when every agent failed it
            last = first_failure is not None and time.monotonic() - first_failure >= self.retry_s
            for agent in self.order(include_backoff=rounds == 0 or last):
                attempts += 1
                if attempts > 1:
                    self.stats["retries"] += 1
                try:
                    m = job(agent)
                except AgentDown as exc:
                    errors[agent.url] = str(exc)
                    self.stats["agent_failures"] += 1
                    if exc.backoff:
                        agent.down(str(exc))
                    continue
                agent.up()
                return m
            rounds += 1
            now = time.monotonic()
            first_failure = first_failure if first_failure is not None else now
            if last or self.retry_s <= 0:
                for a in self.clients:
                    errors.setdefault(a.url, a.last_error or "not tried")
                detail = "; ".join(f"{u}: {e}" for u, e in errors.items())
                raise AllAgentsDown(f"no agent could run the job for {self.retry_s:g} s ({detail})")
            wake = min(min(a.next_try for a in self.clients), first_failure + self.retry_s)
            time.sleep(max(0.05, wake - now))
