"""Per-token request rate limiting with fixed windows.

Each key (a token's hash, or the client address for requests without a valid
token) may make ``limit`` requests per window of ``window_s`` seconds. The
counters live in this process's memory, so several service processes behind
one address each apply the limit on their own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RateLimitError

# Forget expired windows once this many keys are tracked, so memory stays bounded.
_PRUNE_THRESHOLD = 10_000


@dataclass(frozen=True)
class RateLimitStatus:
    """The outcome of one request against its key's window: the values of the headers."""

    limit: int
    remaining: int
    reset_s: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        """Return the ``X-RateLimit-*`` headers; ``Reset`` is in seconds from now."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }

    def raise_if_denied(self) -> None:
        """Raise RateLimitError when the request is over the limit."""
        if not self.allowed:
            raise RateLimitError(
                f"rate limit of {self.limit} requests per window exceeded for this token; "
                f"retry in {self.reset_s} s",
                retry_after_s=self.reset_s,
            )


class RateLimiter:
    """Counts requests per key in fixed windows; safe to call from many threads."""

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (window start, requests counted in the window)
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str) -> RateLimitStatus:
        """Count one request for ``key`` and return whether it is allowed."""
        now = self._clock()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= self.window_s:
                start, count = now, 0
            count += 1
            self._windows[key] = (start, count)
            if len(self._windows) > _PRUNE_THRESHOLD:
                self._prune(now)
        reset_s = max(1, math.ceil(start + self.window_s - now))
        return RateLimitStatus(
            limit=self.limit,
            remaining=max(0, self.limit - count),
            reset_s=reset_s,
            allowed=count <= self.limit,
        )

    def _prune(self, now: float) -> None:
        expired = [key for key, (start, _) in self._windows.items()
                   if now - start >= self.window_s]
        for key in expired:
            del self._windows[key]
