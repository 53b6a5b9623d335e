"""Poller leases: at most one service process polls a cluster at a time.

Expiry times come from the clock of the process that takes the lease, so
hosts that share a PostgreSQL database need clocks that agree (NTP) to well
within the lease's time to live.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, or_, select

from ..errors import InvalidInputError
from ._base import StoreBase, upsert
from .models import PollerLease, utc_now

logger = logging.getLogger(__name__)


class LeaseMethods(StoreBase):
    """Take, renew and release per-cluster poller leases."""

    def acquire_lease(self, cluster: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease on ``cluster`` for ``ttl_s`` seconds; return True on success.

        The call succeeds when the lease is free, when ``holder`` already has it
        (a renewal), or when the previous holder's lease has expired. One
        statement does the check and the write, so two callers never both win.

        Raises:
            InvalidInputError: ``ttl_s`` is not positive.
        """
        if ttl_s <= 0:
            raise InvalidInputError(f"invalid lease time to live {ttl_s} s: use more than 0")
        now = utc_now()
        values = {"holder": holder, "expires_at": now + timedelta(seconds=ttl_s)}
        free = or_(PollerLease.holder == holder, PollerLease.expires_at <= now)
        with self._transaction(write=True) as session:
            taken = upsert(session, PollerLease, {"cluster": cluster, **values}, ["cluster"],
                           update=values, where=free)
        if taken is None:
            logger.debug("lease on cluster %s is held by another process; %s waits",
                         cluster, holder)
        return taken is not None

    def release_lease(self, cluster: str, holder: str) -> bool:
        """Release ``holder``'s lease on ``cluster``; return False when it did not hold it."""
        statement = delete(PollerLease).where(
            PollerLease.cluster == cluster, PollerLease.holder == holder
        )
        with self._transaction(write=True) as session:
            released = session.execute(statement).rowcount > 0
        if released:
            logger.info("%s released the poller lease on cluster %s", holder, cluster)
        return released

    def lease_holder(self, cluster: str) -> str | None:
        """Return who holds an unexpired lease on ``cluster``, or None."""
        statement = select(PollerLease.holder).where(
            PollerLease.cluster == cluster, PollerLease.expires_at > utc_now()
        )
        with self._transaction() as session:
            return session.scalars(statement).first()
