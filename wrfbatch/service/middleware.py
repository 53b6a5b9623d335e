"""Request middleware: one log line per request, rate-limit headers, and the 500 response.

A plain ASGI middleware, so that request bodies pass through as a stream.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import RATE_LIMIT_STATE, USER_STATE
from .errors import INTERNAL_ERROR_MESSAGE
from .ratelimit import RateLimitStatus

logger = logging.getLogger("wrfbatch.service.requests")


class RequestMiddleware:
    """Logs each request and adds the rate-limit headers to its response.

    An exception that no handler turned into a response is logged with its
    traceback, and the client receives a generic 500, so no internals leak.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        started = time.perf_counter()
        response: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.update(status=message["status"], started=True)
                message["headers"] = list(message.get("headers", [])) + _limit_headers(state)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if not response["started"]:
                await _send_internal_error(send_with_headers)
        finally:
            _log_request(scope, state, response["status"], time.perf_counter() - started)


def _limit_headers(state: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    status = state.get(RATE_LIMIT_STATE)
    if not isinstance(status, RateLimitStatus):
        return []
    return [(key.lower().encode(), value.encode()) for key, value in status.headers().items()]


async def _send_internal_error(send: Send) -> None:
    body = json.dumps({"error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE}})
    await send({
        "type": "http.response.start",
        "status": 500,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body.encode()})


def _log_request(scope: Scope, state: dict[str, Any], status: int, duration_s: float) -> None:
    run_id = scope.get("path_params", {}).get("run_id", "-")
    user = state.get(USER_STATE, "-")
    fields = {"method": scope["method"], "path": scope["path"], "status": status,
              "duration_ms": round(duration_s * 1000, 1), "user": user, "run_id": run_id}
    level = logging.WARNING if status >= 500 else logging.INFO
    logger.log(level, "request method=%s path=%s status=%d duration_ms=%.1f user=%s run_id=%s",
               fields["method"], fields["path"], status, fields["duration_ms"], user, run_id,
               extra={"request": fields})
