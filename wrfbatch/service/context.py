"""The service context: settings, run manager, store and authenticator shared by endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import InvalidInputError, NotFoundError
from ..models import Run
from ..store import Store, UserRecord
from .auth import Authenticator, check_readable, check_writable, run_not_found
from .ratelimit import RateLimiter

if TYPE_CHECKING:
    from ..runs import RunManager


class ServiceContext:
    """The objects behind the endpoints of one app, and the run visibility checks."""

    def __init__(self, settings: Settings, manager: RunManager) -> None:
        self.settings = settings
        self.manager = manager
        self.store: Store = manager.store
        limiter = RateLimiter(settings.service.rate_limit_requests,
                              settings.service.rate_limit_window_s)
        self.authenticator = Authenticator(self.store, limiter)

    def readable_run(self, run_id: str, user: UserRecord) -> Run:
        """Return the run if the user may see it; NotFoundError otherwise."""
        try:
            run = self.manager.get(run_id)
        except NotFoundError as exc:
            raise run_not_found(run_id) from exc
        check_readable(self.store, run, user)
        return run

    def writable_run(self, run_id: str, user: UserRecord, action: str) -> Run:
        """Return the run if the user may change it; NotFoundError or PermissionDeniedError."""
        try:
            run = self.manager.get(run_id)
        except NotFoundError as exc:
            raise run_not_found(run_id) from exc
        check_writable(self.store, run, user, action)
        return run

    def check_cluster(self, cluster: str | None) -> None:
        """Raise InvalidInputError for a cluster name that is not configured."""
        if cluster is not None and cluster not in self.settings.clusters:
            raise InvalidInputError(
                f"cluster {cluster!r} is not configured; choose one of: "
                f"{', '.join(sorted(self.settings.clusters))}, or leave cluster out"
            )
