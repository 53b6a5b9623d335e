"""The Cloudrun API client."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from wrfbatch.errors import (
    ERROR_CLASSES_BY_CODE,
    AuthenticationError,
    ConnectionLostError,
    NamelistError,
    RateLimitError,
    RemoteCommandError,
    TransportError,
    WrfbatchError,
)
from wrfbatch.models import Run, SetupResult

from ._multipart import MultipartFiles, ProgressCallback

logger = logging.getLogger(__name__)

TOKEN_ENV = "CLOUDRUN_TOKEN"
URL_ENV = "CLOUDRUN_API_URL"
# The address where ``wrfbatch serve`` listens by default.
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
FINAL_STATES = frozenset({"done", "error", "stopped"})
NAMELIST = "namelist.input"


class Cloudrun:
    """A client of the Cloudrun API that wrfbatch serves.

    ``token`` defaults to ``$CLOUDRUN_TOKEN`` and ``base_url`` to
    ``$CLOUDRUN_API_URL``, else ``http://127.0.0.1:8080``. Failed requests raise
    the :mod:`wrfbatch.errors` class named by the service's error code, and
    network failures raise :class:`~wrfbatch.errors.ConnectionLostError`.
    """

    def __init__(
        self,
        token: str | None = None,
        base_url: str | None = None,
        *,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            raise AuthenticationError(
                f"no API token: pass Cloudrun(token=...) or set {TOKEN_ENV}"
            )
        base_url = (base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = base_url.removesuffix("/v1/wrf").removesuffix("/v1")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> Cloudrun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cloudrun(base_url={self.base_url!r})"

    # ------------------------------------------------------------------ runs

    def get_all_runs(self, limit: int = 100, offset: int = 0) -> list[Run]:
        """Return the runs you own or were given access to, newest first."""
        body = self._request("GET", "/v1/wrf", params={"limit": limit, "offset": offset})
        return [Run.model_validate(item) for item in body]

    def get_run(self, id: str) -> Run:  # noqa: A002 - the Cloudrun examples call it id
        """Return one run."""
        return Run.model_validate(self._request("GET", f"/v1/wrf/{id}"))

    def create_run(
        self,
        model: str = "wrf",
        version: str = "3.9",
        run_name: str | None = None,
        cluster: str | None = None,
    ) -> Run:
        """Create a run for a WRF version."""
        fields = {"model": model, "version": version, "run_name": run_name, "cluster": cluster}
        data = {key: value for key, value in fields.items() if value is not None}
        return Run.model_validate(self._request("POST", "/v1/wrf", data=data))

    def upload(
        self,
        id: str,  # noqa: A002
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        progress: ProgressCallback | None = None,
        *,
        setup: bool | None = None,
    ) -> Run:
        """Upload input files in one streamed request and return the run.

        ``progress(bytes_sent, bytes_total)`` is called as file data is sent.
        Like the original Cloudrun client, uploading ``namelist.input`` runs
        :meth:`setup` afterwards unless ``setup=False``.
        """
        files = MultipartFiles(_as_paths(paths))
        run = Run.model_validate(self._request(
            "POST", f"/v1/wrf/{id}/upload",
            content=files.iter_body(progress),
            headers={"Content-Type": files.content_type,
                     "Content-Length": str(files.content_length)},
        ))
        has_namelist = any(path.name == NAMELIST for path in files.paths)
        if setup or (setup is None and has_namelist):
            return self.setup(id).run
        return run

    def setup(self, id: str) -> SetupResult:  # noqa: A002
        """Check the namelist and inputs; return required files and compute options."""
        return SetupResult.model_validate(self._request("POST", f"/v1/wrf/{id}/setup"))

    def start(self, id: str, cores: int) -> Run:  # noqa: A002
        """Start the run with ``cores`` MPI tasks (one of the setup's compute options)."""
        body = self._request("POST", f"/v1/wrf/{id}/start", data={"cores": str(cores)})
        return Run.model_validate(body)

    def stop(self, id: str) -> Run:  # noqa: A002
        """Stop a running run; its files are kept."""
        return Run.model_validate(self._request("POST", f"/v1/wrf/{id}/stop"))

    def delete(self, id: str) -> Run:  # noqa: A002
        """Delete the run's files; its record stays readable."""
        return Run.model_validate(self._request("DELETE", f"/v1/wrf/{id}"))

    def download(
        self, id: str, filename: str, destination: str | os.PathLike[str]  # noqa: A002
    ) -> Path:
        """Download an output file of a run to ``destination``: a directory when it exists
        or its name ends with a slash (it is created then), a file otherwise."""
        target = Path(destination)
        if target.is_dir() or str(destination).endswith(("/", os.sep)):
            target.mkdir(parents=True, exist_ok=True)
            target = target / Path(filename).name
        partial = target.with_name(f".{target.name}.part")
        path = f"/v1/wrf/{id}/files/{filename}"
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes(1024 * 1024):
                        handle.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise ConnectionLostError(f"GET {self.base_url}{path} failed: {exc}") from exc
        partial.replace(target)
        return target

    def share(self, id: str, user: str) -> Run:  # noqa: A002
        """Let another user read the run."""
        body = self._request("POST", f"/v1/wrf/{id}/share", data={"user": user})
        return Run.model_validate(body)

    def wait(
        self,
        id: str,  # noqa: A002
        states: Iterable[str] = FINAL_STATES,
        timeout_s: float | None = None,
        poll_interval_s: float = 2.0,
        callback: Callable[[Run], None] | None = None,
    ) -> Run:
        """Poll the run until its status is one of ``states``; return it.

        ``callback(run)`` is called after every poll. Raises TimeoutError when
        ``timeout_s`` passes first.
        """
        wanted = set(states)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            run = self.get_run(id)
            if callback is not None:
                callback(run)
            if run.status in wanted:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"run {id} is still {run.status} after {timeout_s} s; waiting for "
                    f"{', '.join(sorted(wanted))}"
                )
            time.sleep(poll_interval_s)

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionLostError(
                f"{method} {self.base_url}{path} failed: {exc}; check that the service is "
                f"running and that {URL_ENV} is its address"
            ) from exc
        if response.is_error:
            raise error_from_response(response)
        return response.json()


def _as_paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    result = [Path(item) for item in items]
    for path in result:
        if not path.is_file():
            raise FileNotFoundError(f"upload file {path} not found")
    if not result:
        raise ValueError("no files to upload: give at least one path")
    return result


def error_from_response(response: httpx.Response) -> WrfbatchError:
    """Build the wrfbatch exception that an error response of the service stands for."""
    code, message, body = _error_fields(response)
    cls = ERROR_CLASSES_BY_CODE.get(code, WrfbatchError)
    # Some classes take extra constructor arguments: build the instance from the base.
    error = cls.__new__(cls)
    WrfbatchError.__init__(error, message)
    error.status_code = response.status_code  # type: ignore[attr-defined]
    if isinstance(error, NamelistError):
        error.problems = list(body.get("problems", []))
    if isinstance(error, RateLimitError):
        error.retry_after_s = _retry_after(response)
    if isinstance(error, TransportError):
        error.host = ""
    if isinstance(error, RemoteCommandError):
        error.command, error.exit_code, error.stdout, error.stderr = "", -1, "", ""
    return error


def _error_fields(response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
    try:
        body = response.json().get("error", {})
        return str(body["code"]), str(body["message"]), body
    except (ValueError, KeyError, AttributeError, TypeError):
        text = response.text.strip()[:500] or response.reason_phrase
        return "", f"HTTP {response.status_code} from {response.request.url}: {text}", {}


def _retry_after(response: httpx.Response) -> int:
    value = response.headers.get("Retry-After", "")
    return int(value) if value.isdigit() else 1
