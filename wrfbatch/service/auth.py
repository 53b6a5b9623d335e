"""Bearer-token authentication, per-token rate limiting and run visibility.

A run is visible to its owner, to the users it is shared with and to admins.
Anyone else gets the same 404 as for a run that does not exist, so run ids
cannot be probed. Only the owner and admins may change a run.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from fastapi import Request

from ..errors import AuthenticationError, NotFoundError, PermissionDeniedError
from ..models import Run
from ..store import UserRecord
from .ratelimit import RateLimiter

logger = logging.getLogger(__name__)

# Keys of request.state that the request middleware reads: rate-limit status and user name.
RATE_LIMIT_STATE = "rate_limit"
USER_STATE = "user"


class TokenStore(Protocol):
    """The store methods that authentication and visibility checks use."""

    def find_user_by_token(self, token: str) -> UserRecord | None: ...

    def can_read(self, run_id: str, user_name: str, is_admin: bool = False) -> bool: ...


def bearer_token(authorization: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Authenticator:
    """Finds the user of a request's token and counts the request against its rate limit."""

    def __init__(self, store: TokenStore, limiter: RateLimiter) -> None:
        self.store = store
        self.limiter = limiter

    def authenticate(self, request: Request) -> UserRecord:
        """Return the caller; raise RateLimitError or AuthenticationError.

        Requests without a valid token are counted against the client address,
        so that guessing tokens is rate limited too.
        """
        token = bearer_token(request.headers.get("authorization"))
        user = self.store.find_user_by_token(token) if token else None
        if user is None:
            client = request.client.host if request.client else "unknown"
            self._count(request, f"address:{client}")
            raise AuthenticationError(_authentication_message(token))
        # Keyed by the token's digest, so that the limiter's memory contains no token.
        self._count(request, "token:" + hashlib.sha256((token or "").encode()).hexdigest())
        request.state.user = user.name
        return user

    def _count(self, request: Request, key: str) -> None:
        status = self.limiter.hit(key)
        setattr(request.state, RATE_LIMIT_STATE, status)
        status.raise_if_denied()


def _authentication_message(token: str | None) -> str:
    if token is None:
        return ("missing API token: send the header 'Authorization: Bearer <token>'; "
                "an administrator creates tokens with 'wrfbatch token create'")
    return ("invalid or revoked API token: check the token you sent, or ask an "
            "administrator for a new one")


def run_not_found(run_id: str) -> NotFoundError:
    """Return the error for a run that does not exist or that the caller may not see."""
    return NotFoundError(f"run {run_id} not found: check the run id with GET /v1/wrf")


def check_readable(store: TokenStore, run: Run, user: UserRecord) -> None:
    """Raise NotFoundError unless the user owns the run, was given access, or is an admin."""
    if user.is_admin or run.owner == user.name:
        return
    if not store.can_read(run.id, user.name):
        raise run_not_found(run.id)


def check_writable(store: TokenStore, run: Run, user: UserRecord, action: str) -> None:
    """Raise NotFoundError or PermissionDeniedError unless the user owns the run or is an admin."""
    check_readable(store, run, user)
    if not (user.is_admin or run.owner == user.name):
        raise PermissionDeniedError(
            f"run {run.id} is shared with {user.name} for reading only: only its owner "
            f"{run.owner} or an administrator can {action} it"
        )
