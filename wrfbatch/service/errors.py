"""The JSON error responses of the service: one shape for every failure.

Every error body is ``{"error": {"code": ..., "message": ...}}``; a namelist
error adds ``"problems"``, a request validation error adds ``"fields"``.
Statuses 429 and 503 carry ``Retry-After``. Each :class:`WrfbatchError` class
maps to its own ``http_status`` and ``code``, so the Cloudrun client can raise
the same class from the body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import NamelistError, RateLimitError, WrfbatchError

logger = logging.getLogger(__name__)

# Seconds a client should wait before it retries a request that failed with 503.
UNAVAILABLE_RETRY_AFTER_S = 30
INTERNAL_ERROR_MESSAGE = (
    "internal server error; the service logged the details, so report the time of the "
    "request to the administrator"
)

# Error codes for HTTP errors that Starlette raises itself (routing, methods).
_HTTP_CODES = {
    400: "invalid_input",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


class ErrorDetail(BaseModel):
    """The ``error`` member of every error response."""

    code: str = Field(description="machine-readable error code, for example not_found")
    message: str = Field(description="what failed and what to do next")
    problems: list[str] | None = Field(None, description="namelist problems, one a line")
    fields: list[str] | None = Field(None, description="invalid request fields, one a line")


class ErrorBody(BaseModel):
    """The JSON body of every error response."""

    error: ErrorDetail


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


#: Error statuses that every endpoint may return, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("Invalid input"),
    401: _documented("Missing, invalid or revoked API token"),
    403: _documented("The caller may read the run but not change it"),
    404: _documented("No such run, or the caller may not see it"),
    405: _documented("Method not allowed on this path"),
    409: _documented("The run is in a state that does not allow the action"),
    413: _documented("Upload over the size limit"),
    422: _documented("Invalid request field or namelist"),
    429: _documented("Rate limit exceeded; see Retry-After"),
    502: _documented("The cluster rejected the request (SSH, host key or scheduler)"),
    503: _documented("The cluster or its scheduler is unreachable; see Retry-After"),
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build the JSON error response of the service."""
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    response_headers = dict(headers or {})
    if status in (429, 503) and "Retry-After" not in response_headers:
        response_headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
    return JSONResponse({"error": body}, status_code=status, headers=response_headers)


def wrfbatch_error_response(exc: WrfbatchError) -> JSONResponse:
    """Map a wrfbatch error to its status, code and message."""
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, NamelistError):
        extra["problems"] = exc.problems
    if isinstance(exc, RateLimitError):
        headers["Retry-After"] = str(max(1, exc.retry_after_s))
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status >= 500:
        logger.warning("request failed with %d %s: %s", exc.http_status, exc.code, exc.message)
    return error_response(exc.http_status, exc.code, exc.message, headers=headers, **extra)


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """Turn pydantic's error list into one message and a list of ``field: problem`` lines."""
    lines = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part not in ("body", "query")]
        field = ".".join(location) or "request"
        problem = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        value = error.get("input")
        shown = f" (got {value!r})" if isinstance(value, (str, int, float)) else ""
        lines.append(f"{field}: {problem}{shown}")
    message = "invalid request: " + "; ".join(lines) + "; correct the field and send it again"
    return message, lines


async def _handle_wrfbatch_error(request: Request, exc: WrfbatchError) -> JSONResponse:
    return wrfbatch_error_response(exc)


async def _handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message, lines = describe_validation_errors(exc.errors())
    return error_response(422, "invalid_input", message, fields=lines)


async def _handle_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no endpoint at {request.url.path}; the API is served under /v1/wrf"
    elif exc.status_code == 405:
        message = (
            f"method {request.method} is not allowed on {request.url.path}; "
            f"allowed: {(exc.headers or {}).get('Allow', 'see /openapi.json')}"
        )
    return error_response(exc.status_code, code, message, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every expected error the JSON error shape.

    Unexpected exceptions are turned into a 500 response by the request
    middleware, which logs them with their traceback.
    """
    app.add_exception_handler(WrfbatchError, _handle_wrfbatch_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
