"""Request parameters that arrive as form fields, JSON or query parameters.

The Cloudrun examples send form fields (``curl -F version=3.9``); programs
often send JSON. Both are accepted, and query parameters too, so each
endpoint reads one merged mapping and validates it with a pydantic model.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InvalidInputError

# Form or JSON bodies of these endpoints are small; anything larger is a mistake.
MAX_PARAMS_BODY_BYTES = 64 * 1024

ParamsModel = TypeVar("ParamsModel", bound=BaseModel)


class _Params(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class CreateRunParams(_Params):
    """Parameters of ``POST /v1/wrf``."""

    version: str = Field(description="WRF version, for example 3.9")
    model: Literal["wrf"] = Field("wrf", description="model name; only wrf is served")
    run_name: str | None = Field(None, max_length=200, description="a name to show in listings")
    cluster: str | None = Field(None, description="cluster to run on; default: the service's")

    @field_validator("model", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class StartParams(_Params):
    """Parameters of ``POST /v1/wrf/{run_id}/start``."""

    cores: int = Field(ge=1, description="MPI tasks of wrf.exe, one of the setup's compute options")


class ShareParams(_Params):
    """Parameters of ``POST /v1/wrf/{run_id}/share``."""

    user: str = Field(min_length=1, max_length=64, description="name of the user to share with")


class ListParams(_Params):
    """Query parameters of ``GET /v1/wrf``."""

    limit: int = Field(100, ge=1, le=1000, description="at most this many runs, newest first")
    offset: int = Field(0, ge=0, description="skip this many runs")


async def read_params(request: Request) -> dict[str, Any]:
    """Merge the query parameters with the form or JSON body; body values win."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        params.update(await _read_json(request))
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        _check_declared_size(request)
        form = await request.form(max_files=0, max_fields=100)
        params.update({key: value for key, value in form.items() if isinstance(value, str)})
    return params


def _check_declared_size(request: Request) -> None:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_PARAMS_BODY_BYTES:
        raise InvalidInputError(
            f"request body of {length} bytes is too large for this endpoint: send only its "
            "parameters, and upload files with POST /v1/wrf/{id}/upload"
        )


async def _read_json(request: Request) -> dict[str, Any]:
    _check_declared_size(request)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_PARAMS_BODY_BYTES:
            raise InvalidInputError(
                f"request body is over {MAX_PARAMS_BODY_BYTES} bytes, too large for this endpoint"
            )
    if not body:
        return {}
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}; send a JSON "
                                "object or form fields") from exc
    if not isinstance(value, dict):
        raise InvalidInputError("request body must be a JSON object of parameters, "
                                f"not {type(value).__name__}")
    return value


def validate_params(model: type[ParamsModel], params: dict[str, Any]) -> ParamsModel:
    """Validate parameters; a failure becomes a 422 response naming each field."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return the OpenAPI request body of an endpoint that accepts form fields or JSON."""
    schema = model.model_json_schema()
    content = {
        media_type: {"schema": schema}
        for media_type in ("multipart/form-data", "application/x-www-form-urlencoded",
                           "application/json")
    }
    return {"requestBody": {"content": content, "required": True}}
