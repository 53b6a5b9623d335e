"""API: GET /v1/wrf latency with 10,000 runs, and lifecycle overhead with 50 concurrent clients.

A real service (``wrfbatch serve`` in a subprocess, embedded default cluster
with the local scheduler and stand-in WRF installs) runs over a SQLite store
into which 10,000 runs, each with three input files, are bulk-inserted before
it starts. Ten users own 1,000 runs each.

List latency: pages of 100 runs (``limit=100``, offsets cycling through all
pages), requested one after another on a kept-alive connection with an admin
token (every run is visible) and with an ordinary user's token (the 1,000 runs
that user owns are visible). The figures are p50 and p99 of the client-side
latency.

Lifecycle overhead: 50 clients, each with its own user, token and HTTP
connection, create a run, upload a tiny namelist.input and met_em set, set it
up and start it on one core, all 50 in step, one phase after another. The
upload phase is the data transfer and is left out. The target applies to the
service process's CPU time in the create, setup and start phases per
lifecycle: on this embedded default, the jobs that start (supervisors and the
stand-in WRF programs, which on a cluster run on compute nodes) share the
service's CPUs, so wall time here measures them too. The wall time per
lifecycle of the three phases and each lifecycle's time in the service (the
``duration_ms`` of the request log, which includes waiting behind the other
49 clients) are printed beside it. The started runs are stopped afterwards.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert

from wrfbatch.cli.demo import write_inputs
from wrfbatch.store import Store
from wrfbatch.store.models import InputFile, Run

from .common import Figure, median, no_disruption, percentile
from .server import ServiceProcess

RUNS = 10_000
RUN_OWNERS = 10
INPUT_FILES_PER_RUN = 3
PAGE_SIZE = 100
LIST_REQUESTS = 300
CLIENTS = 50
VERSION = "3.9"
LIST_P50_TARGET_MS = 50.0
LIST_P99_TARGET_MS = 200.0
LIFECYCLE_TARGET_MS = 300.0
# The request log line that the service writes for every request (its middleware).
_REQUEST_LOG = re.compile(
    r"request method=(?P<method>\S+) path=(?P<path>\S+) status=(?P<status>\d+) "
    r"duration_ms=(?P<ms>[\d.]+) user=(?P<user>\S+) run_id=\S+")
# The requests of a lifecycle that count as its overhead; the upload is the data transfer.
_LIFECYCLE_PATH = re.compile(r"^/v1/wrf(/[0-9a-f]+/(setup|start))?$")
_FINAL_STATES = ("done", "error", "stopped")


def run(quick: bool) -> list[Figure]:
    work = Path(tempfile.mkdtemp(prefix="wrfbatch-bench-api-"))
    try:
        runs = 1_000 if quick else RUNS
        clients = 10 if quick else CLIENTS
        tokens = _prepare_store(work / "data", runs, clients)
        inputs = write_inputs(work / "inputs", VERSION)
        with ServiceProcess(work / "data") as service:
            figures = _measure_list(service, tokens, 50 if quick else LIST_REQUESTS, runs)
            figures += _measure_lifecycles(service, tokens["clients"], inputs)
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------- store


def _prepare_store(data_dir: Path, runs: int, clients: int) -> dict[str, list[str]]:
    """Create the users and bulk-insert the runs; return the tokens by role."""
    data_dir.mkdir(parents=True)
    with Store(f"sqlite:///{data_dir / 'wrfbatch.db'}") as store:
        store.create_user("admin", is_admin=True)
        tokens: dict[str, list[str]] = {"admin": [store.create_token("admin")],
                                        "owners": [], "clients": []}
        for index in range(RUN_OWNERS):
            store.create_user(f"owner{index}")
            tokens["owners"].append(store.create_token(f"owner{index}"))
        for index in range(clients):
            store.create_user(f"client{index:02d}")
            tokens["clients"].append(store.create_token(f"client{index:02d}"))
        with store.engine.begin() as connection:
            connection.execute(insert(Run), list(_run_rows(runs)))
            connection.execute(insert(InputFile), list(_input_file_rows(runs)))
    return tokens


def _run_rows(count: int) -> Iterator[dict[str, object]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    states = ("done", "done", "done", "error", "stopped", "created")
    for index in range(count):
        created = start + timedelta(minutes=index)
        yield {
            "id": f"{index:012x}", "owner": f"owner{index % RUN_OWNERS}",
            "run_name": f"benchmark run {index}", "model": "wrf", "version": VERSION,
            "cluster": "local", "status": states[index % len(states)], "attempt": 1,
            "cores": 4, "percent_complete": 100.0,
            "output_files": [{"filename": "wrfout_d01_2019-01-01_00:00:00", "size": 10_000_000}],
            "output_size_bytes": 10_000_000, "disk_usage_bytes": 20_000_000,
            "required_input_files": ["namelist.input", "met_em.d01.2019-01-01_00:00:00.nc"],
            "time_created": created, "time_updated": created, "deleted": False,
            "row_version": 1,
        }


def _input_file_rows(count: int) -> Iterator[dict[str, object]]:
    names = ("namelist.input", "met_em.d01.2019-01-01_00:00:00.nc",
             "met_em.d01.2019-01-01_03:00:00.nc")
    for index in range(count):
        for name in names[:INPUT_FILES_PER_RUN]:
            yield {"run_id": f"{index:012x}", "filename": name, "size_bytes": 1000,
                   "sha256": "0" * 64}


# ---------------------------------------------------------------------- list latency


def _measure_list(
    service: ServiceProcess, tokens: dict[str, list[str]], requests: int, runs: int
) -> list[Figure]:
    figures = []
    for role, visible in (("admin", runs), ("user", runs // RUN_OWNERS)):
        token = tokens["admin" if role == "admin" else "owners"][0]
        with no_disruption():
            latencies = _list_latencies(service.base_url, token, requests, visible)
        p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
        figures += [
            Figure(f"GET /v1/wrf, {role} ({visible} runs), p50", p50, "ms",
                   f"< {LIST_P50_TARGET_MS:.0f}", p50 < LIST_P50_TARGET_MS),
            Figure(f"GET /v1/wrf, {role} ({visible} runs), p99", p99, "ms",
                   f"< {LIST_P99_TARGET_MS:.0f}", p99 < LIST_P99_TARGET_MS),
        ]
    return figures


def _list_latencies(base_url: str, token: str, requests: int, visible: int) -> list[float]:
    """Request pages one after another on one connection; return each latency in ms."""
    pages = max(1, visible // PAGE_SIZE)
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        for index in range(10 + requests):  # the first 10 warm the connection and caches
            params = {"limit": PAGE_SIZE, "offset": (index % pages) * PAGE_SIZE}
            started = time.perf_counter()
            response = client.get("/v1/wrf", params=params)
            elapsed_ms = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if len(response.json()) != min(PAGE_SIZE, visible):
                raise RuntimeError(f"page at offset {params['offset']} has "
                                   f"{len(response.json())} runs, expected {PAGE_SIZE}")
            if index >= 10:
                latencies.append(elapsed_ms)
    return latencies


# ---------------------------------------------------------------------- lifecycle overhead


def _measure_lifecycles(
    service: ServiceProcess, tokens: list[str], inputs: list[Path]
) -> list[Figure]:
    clients = len(tokens)
    phases = _Phases(clients, service)
    with no_disruption(), ThreadPoolExecutor(clients) as pool:
        run_ids = list(pool.map(
            lambda token: _lifecycle(service.base_url, token, inputs, phases), tokens))
    try:
        latencies = _service_times(service.log(), [f"client{i:02d}" for i in range(clients)])
    finally:
        _stop_runs(service.base_url, tokens, run_ids)
    cpu_ms = phases.timed(phases.cpu) / clients * 1000
    return [
        Figure(f"create+setup+start, {clients} clients: service CPU / lifecycle", cpu_ms,
               "ms", f"< {LIFECYCLE_TARGET_MS:.0f}", cpu_ms < LIFECYCLE_TARGET_MS),
        Figure("the same three phases: wall time / lifecycle",
               phases.timed(phases.wall) / clients * 1000, "ms", "", None),
        Figure("the same three requests, time in the service per lifecycle, median",
               median(latencies), "ms", "", None),
        Figure("the same three requests, time in the service per lifecycle, p95",
               percentile(latencies, 0.95), "ms", "", None),
    ]


class _Phases:
    """Keeps the clients in step: all create, then all upload, all set up, all start.

    When the last client finishes a phase, the wall clock and the service's CPU
    time are read, which gives both for the create, setup and start phases
    without the upload phase between them.
    """

    def __init__(self, clients: int, service: ServiceProcess) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._service = service
        self._barrier = threading.Barrier(clients, action=self._mark)

    def _mark(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(self._service.cpu_s())

    def next(self) -> None:
        self._barrier.wait()

    @staticmethod
    def timed(marks: list[float]) -> float:
        """Return the time of the create, setup and start phases together from ``marks``."""
        started, created, uploaded, set_up, finished = marks
        return (created - started) + (finished - uploaded)


def _lifecycle(base_url: str, token: str, inputs: list[Path], phases: _Phases) -> str:
    """Create, upload, set up and start one run in step with the other clients; return its id."""
    headers = {"Authorization": f"Bearer {token}"}
    files = [("file", (path.name, path.read_bytes())) for path in inputs]
    with httpx.Client(base_url=base_url, headers=headers, timeout=300) as client:
        phases.next()
        run_id = str(_checked(client.post("/v1/wrf", json={"version": VERSION}))["id"])
        phases.next()
        _checked(client.post(f"/v1/wrf/{run_id}/upload", files=files))
        phases.next()
        setup = _checked(client.post(f"/v1/wrf/{run_id}/setup"))
        if setup["run"]["status"] != "ready":  # type: ignore[index]
            raise RuntimeError(f"run {run_id} is not ready after setup: {setup}")
        phases.next()
        _checked(client.post(f"/v1/wrf/{run_id}/start", json={"cores": 1}))
        phases.next()
        return run_id


def _checked(response: httpx.Response) -> dict[str, object]:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path} returned "
                           f"{response.status_code}: {response.text[:500]}")
    body: dict[str, object] = response.json()
    return body


def _service_times(log: str, users: list[str]) -> list[float]:
    """Return, per client, the service's time for its create, setup and start requests in ms.

    Each client is its own user and runs one lifecycle, so the log lines are
    grouped by user: the create request has no run id in its path.
    """
    totals: dict[str, float] = dict.fromkeys(users, 0.0)
    counts: dict[str, int] = dict.fromkeys(users, 0)
    for match in _REQUEST_LOG.finditer(log):
        user = match["user"]
        if user in totals and match["method"] == "POST" and _LIFECYCLE_PATH.match(match["path"]):
            totals[user] += float(match["ms"])
            counts[user] += 1
    incomplete = [user for user, count in counts.items() if count != 3]
    if incomplete:
        raise RuntimeError(f"the service log lacks create, setup or start of {incomplete}")
    return list(totals.values())


def _stop_runs(base_url: str, tokens: list[str], run_ids: list[str]) -> None:
    """Stop the runs that are still going, so that no stand-in job outlives the benchmark."""
    for token, run_id in zip(tokens, run_ids, strict=True):
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            status = client.get(f"/v1/wrf/{run_id}").json().get("status")
            if status not in _FINAL_STATES:
                client.post(f"/v1/wrf/{run_id}/stop")
