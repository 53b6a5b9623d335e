"""Memory: upload a 2 GB file through the API and measure the service's resident memory.

A real service (``wrfbatch serve`` in a subprocess, embedded default cluster)
receives one ``POST /v1/wrf/{id}/upload`` whose multipart body the client
generates on the fly (the same random 1 MiB block repeated), so neither side
holds the file. The service's peak resident memory (VmHWM in /proc) is read
after a small warm-up upload and again after the large one, and the rise is
what the large upload cost. The size and SHA-256 that the service recorded
are checked against what was sent.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from wrfbatch.store import Store

from .common import MiB, Figure, no_disruption
from .server import ServiceProcess

UPLOAD_BYTES = 2 * 1000 * 1000 * 1000
RISE_TARGET_MIB = 100.0
_BLOCK_BYTES = MiB
_BOUNDARY = "wrfbatch-benchmark-boundary-7f3a9c"
_FILENAME = "met_em.d01.2019-01-01_00:00:00.nc"


def run(quick: bool) -> list[Figure]:
    size = 256 * MiB if quick else UPLOAD_BYTES
    work = Path(tempfile.mkdtemp(prefix="wrfbatch-bench-memory-"))
    try:
        token = _prepare_store(work / "data")
        with ServiceProcess(work / "data") as service:
            return _measure(service, token, size, work / "data")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare_store(data_dir: Path) -> str:
    data_dir.mkdir(parents=True)
    with Store(f"sqlite:///{data_dir / 'wrfbatch.db'}") as store:
        store.create_user("uploader")
        return store.create_token("uploader")


def _measure(service: ServiceProcess, token: str, size: int, data_dir: Path) -> list[Figure]:
    headers = {"Authorization": f"Bearer {token}"}
    block = os.urandom(_BLOCK_BYTES)
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=600) as client:
        run_id = _created_run(client)
        _upload(client, run_id, block, 4 * MiB)  # warm-up: imports, buffers, thread pool
        before = service.memory_kib()
        with no_disruption():
            started = time.perf_counter()
            _upload(client, run_id, block, size)
            elapsed_s = time.perf_counter() - started
        after = service.memory_kib()
    _check_stored(data_dir, run_id, block, size)
    rise_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
    return [
        Figure("service VmRSS before the upload", before["VmRSS"] / 1024, "MiB", "", None),
        Figure(f"upload of {size / 1e9:.2f} GB through the API", size / elapsed_s / MiB,
               "MiB/s", "", None),
        Figure("service VmRSS after the upload", after["VmRSS"] / 1024, "MiB", "", None),
        Figure("service peak resident memory (VmHWM) rise", rise_mib, "MiB",
               f"< {RISE_TARGET_MIB:.0f}", rise_mib < RISE_TARGET_MIB),
    ]


def _created_run(client: httpx.Client) -> str:
    response = client.post("/v1/wrf", json={"version": "3.9"})
    response.raise_for_status()
    return str(response.json()["id"])


def _upload(client: httpx.Client, run_id: str, block: bytes, size: int) -> None:
    """Upload ``size`` bytes of ``block`` repeated as one multipart file part."""
    head = (f"--{_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{_FILENAME}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{_BOUNDARY}--\r\n".encode()
    response = client.post(
        f"/v1/wrf/{run_id}/upload",
        content=_body(head, block, size, tail),
        headers={"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}",
                 "Content-Length": str(len(head) + size + len(tail))},
    )
    if response.status_code != 200:
        raise RuntimeError(f"upload returned {response.status_code}: {response.text[:500]}")


def _body(head: bytes, block: bytes, size: int, tail: bytes) -> Iterator[bytes]:
    yield head
    remaining = size
    while remaining > 0:
        chunk = block[:min(len(block), remaining)]
        yield chunk
        remaining -= len(chunk)
    yield tail


def _check_stored(data_dir: Path, run_id: str, block: bytes, size: int) -> None:
    """Raise RuntimeError unless the service recorded the size and SHA-256 that were sent."""
    with Store(f"sqlite:///{data_dir / 'wrfbatch.db'}") as store:
        stored = {file.filename: file for file in store.get_run(run_id).input_files}[_FILENAME]
    expected = _expected_sha256(block, size)
    if stored.size_bytes != size or stored.sha256 != expected:
        raise RuntimeError(f"the service recorded {stored.size_bytes} bytes with SHA-256 "
                           f"{stored.sha256}, expected {size} bytes with {expected}")


def _expected_sha256(block: bytes, size: int) -> str:
    """Return the SHA-256 of ``size`` bytes of ``block`` repeated."""
    digest = hashlib.sha256()
    remaining = size
    while remaining > 0:
        digest.update(block[:min(len(block), remaining)])
        remaining -= min(len(block), remaining)
    return digest.hexdigest()
