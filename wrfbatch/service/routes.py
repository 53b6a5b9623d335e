"""The Cloudrun endpoints under ``/v1/wrf``.

Manager calls block (database, SSH, Slurm), so plain ``def`` endpoints run in
FastAPI's thread pool and ``async`` ones hand their blocking work to it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import anyio.from_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..errors import InvalidInputError
from ..models import Run, SetupResult
from ..store import UserRecord
from .context import ServiceContext
from .errors import ERROR_RESPONSES
from .params import (
    CreateRunParams,
    ShareParams,
    StartParams,
    body_schema,
    read_params,
    validate_params,
)
from .uploads import BodyReader, MultipartReader, check_content_length, multipart_boundary
from .uploads import receive_files

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/wrf", tags=["wrf"], responses=ERROR_RESPONSES)


def get_context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


def current_user(request: Request) -> UserRecord:
    """Authenticate the request (a dependency; it runs in the thread pool)."""
    return get_context(request).authenticator.authenticate(request)


Caller = Annotated[UserRecord, Depends(current_user)]
Context = Annotated[ServiceContext, Depends(get_context)]

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "properties": {"file": {"type": "array",
                                    "items": {"type": "string", "format": "binary"}}},
        }}},
    }
}


@router.get("", response_model=list[Run], summary="Get all WRF runs")
def list_runs(
    user: Caller,
    context: Context,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many runs")] = 100,
    offset: Annotated[int, Query(ge=0, description="skip this many runs")] = 0,
) -> list[Run]:
    """Return the runs that the caller owns or was given access to; admins see every run."""
    return context.manager.list_runs(user.name, user.is_admin, limit=limit, offset=offset)


@router.get("/{run_id}", response_model=Run, summary="Get a specific WRF run")
def get_run(run_id: str, user: Caller, context: Context) -> Run:
    return context.readable_run(run_id, user)


@router.post("", response_model=Run, status_code=201, summary="Create a new run",
             openapi_extra=body_schema(CreateRunParams))
async def create_run(request: Request, user: Caller, context: Context) -> Run:
    """Create a run for a WRF version (form field or JSON ``version``)."""
    params = validate_params(CreateRunParams, await read_params(request))
    context.check_cluster(params.cluster)
    return await run_in_threadpool(
        context.manager.create_run, user.name, params.version, params.run_name, params.cluster
    )


@router.post("/{run_id}/upload", response_model=Run, summary="Upload input files",
             openapi_extra=_UPLOAD_BODY)
async def upload_files(run_id: str, request: Request, user: Caller, context: Context) -> Run:
    """Store one or more multipart files (namelist.input, met_em files) as the run's inputs."""
    await run_in_threadpool(context.writable_run, run_id, user, "upload files to")
    max_bytes = context.settings.service.max_upload_bytes
    boundary = multipart_boundary(request.headers.get("content-type"))
    check_content_length(request.headers.get("content-length"), max_bytes)
    reader = MultipartReader(boundary, BodyReader(_body_puller(request), max_bytes))
    await run_in_threadpool(receive_files, context.manager, run_id, reader, max_bytes)
    return await run_in_threadpool(context.manager.get, run_id)


def _body_puller(request: Request) -> Callable[[], bytes | None]:
    """Return a function that a worker thread calls to receive the next body chunk."""
    chunks: AsyncIterator[bytes] = request.stream().__aiter__()

    async def next_chunk() -> bytes | None:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return None
        except ClientDisconnect as exc:
            raise InvalidInputError("the client disconnected during the upload; "
                                    "send the files again") from exc

    return lambda: anyio.from_thread.run(next_chunk)


@router.post("/{run_id}/setup", response_model=SetupResult, summary="Set up your WRF run")
def setup_run(run_id: str, user: Caller, context: Context) -> SetupResult:
    """Check the namelist and inputs, stage them, and return the compute options."""
    context.writable_run(run_id, user, "set up")
    return context.manager.setup(run_id)


@router.post("/{run_id}/start", response_model=Run, summary="Start your WRF run",
             openapi_extra=body_schema(StartParams))
async def start_run(run_id: str, request: Request, user: Caller, context: Context) -> Run:
    """Submit the run's jobs with ``cores`` MPI tasks (form field, JSON or query)."""
    params = validate_params(StartParams, await read_params(request))
    await run_in_threadpool(context.writable_run, run_id, user, "start")
    return await run_in_threadpool(context.manager.start, run_id, params.cores)


@router.post("/{run_id}/stop", response_model=Run, summary="Stop your WRF run")
def stop_run(run_id: str, user: Caller, context: Context) -> Run:
    """Cancel the run's jobs; its files and outputs are kept."""
    context.writable_run(run_id, user, "stop")
    return context.manager.stop(run_id)


@router.delete("/{run_id}", response_model=Run, summary="Delete your WRF run")
def delete_run(run_id: str, user: Caller, context: Context) -> Run:
    """Cancel the run's jobs and remove its files; its record stays readable."""
    context.writable_run(run_id, user, "delete")
    return context.manager.delete(run_id)


@router.get("/{run_id}/files/{filename}", response_class=FileResponse,
            summary="Download an output file of your WRF run",
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "the file's content"}})
def download_file(run_id: str, filename: str, user: Caller, context: Context) -> FileResponse:
    """Return an output file listed in the run's ``output_files``, or rsl.out.0000/rsl.error.0000."""
    context.readable_run(run_id, user)
    path = context.manager.download_output(run_id, filename)
    return FileResponse(path, media_type="application/octet-stream", filename=filename)


@router.post("/{run_id}/share", response_model=Run, summary="Share your WRF run",
             openapi_extra=body_schema(ShareParams))
async def share_run(run_id: str, request: Request, user: Caller, context: Context) -> Run:
    """Let another user read the run (``user`` as form field, JSON or query)."""
    params = validate_params(ShareParams, await read_params(request))
    await run_in_threadpool(context.writable_run, run_id, user, "share")
    await run_in_threadpool(context.store.share_run, run_id, params.user)
    logger.info("run %s: %s shared it with %s", run_id, user.name, params.user)
    return await run_in_threadpool(context.manager.get, run_id)
