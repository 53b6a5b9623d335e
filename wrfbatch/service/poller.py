"""The background poller: refreshes the runs of each cluster at a fixed interval.

One thread serves every cluster. Before each refresh it takes (or renews) the
store's lease on the cluster, so that when several service processes share a
database only one of them polls a cluster. While a cluster is unreachable the
delay between its refreshes doubles, up to ``max_backoff_s``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..errors import SchedulerUnavailableError, TransportError, WrfbatchError

logger = logging.getLogger(__name__)

# A lease lives for this many poll intervals (and at least MIN_LEASE_TTL_S), so that
# one slow refresh does not let another process take the cluster over.
LEASE_INTERVALS = 3
MIN_LEASE_TTL_S = 30.0


class LeaseStore(Protocol):
    """The store methods of per-cluster poller leases."""

    def acquire_lease(self, cluster: str, holder: str, ttl_s: float) -> bool: ...

    def release_lease(self, cluster: str, holder: str) -> bool: ...


def default_holder() -> str:
    """Return a lease holder name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class ClusterSchedule:
    """When a cluster is due for its next refresh, and how many refreshes failed in a row."""

    due_at: float = 0.0
    failures: int = 0


class Poller:
    """Calls ``refresh(cluster)`` for each cluster in a background thread."""

    def __init__(
        self,
        refresh: Callable[[str], None],
        leases: LeaseStore,
        clusters: Iterable[str],
        interval_s: float,
        max_backoff_s: float,
        *,
        on_start: Callable[[], None] | None = None,
        holder: str | None = None,
    ) -> None:
        self._refresh = refresh
        self._leases = leases
        self._on_start = on_start
        self.interval_s = interval_s
        self.max_backoff_s = max(max_backoff_s, interval_s)
        self.holder = holder or default_holder()
        self.lease_ttl_s = max(MIN_LEASE_TTL_S, LEASE_INTERVALS * interval_s)
        self.schedules = {name: ClusterSchedule() for name in clusters}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the polling thread."""
        self._thread = threading.Thread(target=self._loop, name="wrfbatch-poller", daemon=True)
        self._thread.start()
        logger.info("poller %s started for clusters %s, every %.1f s", self.holder,
                    ", ".join(self.schedules) or "(none)", self.interval_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread, waiting for a refresh in progress, and release the leases."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("poller %s: a refresh is still running after %.0f s; "
                               "leaving it behind", self.holder, timeout_s)
        for cluster in self.schedules:
            self._release(cluster)
        logger.info("poller %s stopped", self.holder)

    def _loop(self) -> None:
        if self._on_start is not None:
            self._run_guarded("start-up", self._on_start)
        while not self._stop.is_set():
            now = time.monotonic()
            for cluster, schedule in self.schedules.items():
                if schedule.due_at <= now and not self._stop.is_set():
                    schedule.due_at = time.monotonic() + self.poll_once(cluster)
            next_due = min((s.due_at for s in self.schedules.values()), default=now + 1.0)
            self._stop.wait(max(0.0, next_due - time.monotonic()))

    def poll_once(self, cluster: str) -> float:
        """Refresh one cluster if this process holds its lease; return the delay until the next."""
        schedule = self.schedules.setdefault(cluster, ClusterSchedule())
        try:
            if not self._leases.acquire_lease(cluster, self.holder, self.lease_ttl_s):
                return self.interval_s
            self._refresh(cluster)
        except (TransportError, SchedulerUnavailableError) as exc:
            return self._back_off(cluster, schedule, exc)
        except Exception:
            # Any other failure is a bug or a store outage: log it and keep polling.
            logger.exception("cluster %s: refresh failed", cluster)
            return self.interval_s
        if schedule.failures:
            logger.info("cluster %s: reachable again after %d failed refreshes",
                        cluster, schedule.failures)
        schedule.failures = 0
        return self.interval_s

    def _back_off(self, cluster: str, schedule: ClusterSchedule, exc: WrfbatchError) -> float:
        schedule.failures += 1
        delay = min(self.max_backoff_s, self.interval_s * 2 ** schedule.failures)
        logger.warning("cluster %s: refresh failed (%d in a row), next try in %.1f s: %s",
                       cluster, schedule.failures, delay, exc)
        return delay

    def _run_guarded(self, what: str, function: Callable[[], None]) -> None:
        try:
            function()
        except Exception:
            logger.exception("poller %s: %s failed", self.holder, what)

    def _release(self, cluster: str) -> None:
        try:
            self._leases.release_lease(cluster, self.holder)
        except WrfbatchError as exc:
            logger.warning("cluster %s: could not release the poller lease: %s", cluster, exc)
