"""Service building blocks: rate limiter, multipart reader, poller, token parsing."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wrfbatch.errors import (
    ConflictError,
    ConnectionLostError,
    InvalidInputError,
    PayloadTooLargeError,
    RateLimitError,
)
from wrfbatch.models import InputFile
from wrfbatch.service.auth import bearer_token
from wrfbatch.service.poller import Poller
from wrfbatch.service.ratelimit import RateLimiter
from wrfbatch.service.uploads import (
    MULTIPART_OVERHEAD_BYTES,
    BodyReader,
    MultipartReader,
    check_content_length,
    multipart_boundary,
    receive_files,
)
from wrfbatch.store import Store

BOUNDARY = b"test-boundary-1234"


# --- rate limiter ---


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ratelimit_counts_down() -> None:
    limiter = RateLimiter(limit=3, window_s=60, clock=FakeClock())
    remaining = [limiter.hit("a").remaining for _ in range(3)]
    assert remaining == [2, 1, 0]


def test_ratelimit_denies_over_limit() -> None:
    limiter = RateLimiter(limit=2, window_s=60, clock=FakeClock())
    limiter.hit("a")
    limiter.hit("a")
    status = limiter.hit("a")
    assert not status.allowed
    with pytest.raises(RateLimitError) as caught:
        status.raise_if_denied()
    assert caught.value.retry_after_s == 60


def test_ratelimit_keys_independent() -> None:
    limiter = RateLimiter(limit=1, window_s=60, clock=FakeClock())
    limiter.hit("a")
    assert limiter.hit("b").allowed


def test_ratelimit_window_resets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(limit=1, window_s=10, clock=clock)
    limiter.hit("a")
    clock.now += 4
    assert limiter.hit("a").reset_s == 6
    clock.now += 6
    assert limiter.hit("a").allowed


def test_ratelimit_headers() -> None:
    status = RateLimiter(limit=5, window_s=30, clock=FakeClock()).hit("a")
    assert status.headers() == {
        "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4", "X-RateLimit-Reset": "30"}


# --- bearer token parsing ---


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"),
    ("bearer  abc ", "abc"),
    ("Basic abc", None),
    ("Bearer", None),
    ("", None),
    (None, None),
])
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


# --- multipart reader ---


def multipart_body(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = bytearray()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += b"--" + BOUNDARY + b"\r\n"
        out += f"Content-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += b"--" + BOUNDARY + b"--\r\n"
    return bytes(out)


def chunked_puller(body: bytes, size: int) -> Any:
    chunks: Iterator[bytes] = iter([body[i:i + size] for i in range(0, len(body), size)])
    return lambda: next(chunks, None)


class RecordingUploader:
    """Stores uploads in memory and records the largest single read."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.max_read = 0

    def upload(self, run_id: str, filename: str, source: Any, *,
               max_bytes: int | None = None) -> InputFile:
        data = bytearray()
        while chunk := source.read(65536):
            self.max_read = max(self.max_read, len(chunk))
            data += chunk
        self.files[filename] = bytes(data)
        return InputFile(fileid=str(len(self.files)), filename=filename, size=len(data))


def read_all(body: bytes, chunk: int = 7, max_bytes: int = 10**9) -> RecordingUploader:
    uploader = RecordingUploader()
    reader = MultipartReader(BOUNDARY, BodyReader(chunked_puller(body, chunk), max_bytes))
    receive_files(uploader, "run1", reader, max_bytes)
    return uploader


def test_multipart_two_files() -> None:
    body = multipart_body([("file", "a.txt", b"alpha" * 100), ("file", "b.txt", b"beta")])
    assert read_all(body).files == {"a.txt": b"alpha" * 100, "b.txt": b"beta"}


def test_multipart_binary_with_boundary_like_bytes() -> None:
    data = bytes(range(256)) * 50 + b"\r\n--test-boundary-12" + b"\r\n--"
    body = multipart_body([("file", "met_em.d01.nc", data)])
    assert read_all(body, chunk=13).files["met_em.d01.nc"] == data


def test_multipart_skips_form_fields() -> None:
    body = multipart_body([("note", None, b"hello"), ("file", "a.txt", b"x")])
    assert read_all(body).files == {"a.txt": b"x"}


def test_multipart_without_files_rejected() -> None:
    body = multipart_body([("note", None, b"hello")])
    with pytest.raises(InvalidInputError, match="no files"):
        read_all(body)


def test_multipart_truncated_body_rejected() -> None:
    body = multipart_body([("file", "a.txt", b"x" * 100)])
    with pytest.raises(InvalidInputError, match="final multipart boundary"):
        read_all(body[:-30])


def test_multipart_garbage_rejected() -> None:
    with pytest.raises(InvalidInputError, match="invalid multipart"):
        read_all(b"this is not multipart at all")


def test_multipart_limit_enforced_while_streaming() -> None:
    body = multipart_body([("file", "big.bin", b"0" * (MULTIPART_OVERHEAD_BYTES + 5000))])
    with pytest.raises(PayloadTooLargeError, match="over the limit"):
        read_all(body, chunk=4096, max_bytes=1000)


def test_multipart_buffers_one_chunk() -> None:
    body = multipart_body([("file", "a.bin", b"z" * 200_000)])
    reader = MultipartReader(BOUNDARY, BodyReader(chunked_puller(body, 1000), 10**9))
    headers, stream = next(reader.parts())
    assert headers.filename == "a.bin"
    assert len(stream.read(100_000)) <= 1000


def test_boundary_from_content_type() -> None:
    assert multipart_boundary("multipart/form-data; boundary=abc") == b"abc"


def test_boundary_missing_rejected() -> None:
    with pytest.raises(InvalidInputError, match="multipart/form-data"):
        multipart_boundary("application/json")


def test_content_length_over_limit() -> None:
    with pytest.raises(PayloadTooLargeError, match="service.max_upload_bytes"):
        check_content_length(str(10 * MULTIPART_OVERHEAD_BYTES), MULTIPART_OVERHEAD_BYTES)


def test_upload_error_stops_reading() -> None:
    class Rejecting(RecordingUploader):
        def upload(self, *args: Any, **kwargs: Any) -> InputFile:
            raise ConflictError("cannot upload files to a run that is active")

    body = multipart_body([("file", "a.txt", b"x")])
    reader = MultipartReader(BOUNDARY, BodyReader(chunked_puller(body, 5), 10**9))
    with pytest.raises(ConflictError):
        receive_files(Rejecting(), "run1", reader, 10**9)


def test_part_stream_readinto_buffer() -> None:
    body = multipart_body([("file", "a.txt", b"hello world")])
    reader = MultipartReader(BOUNDARY, BodyReader(chunked_puller(body, 3), 10**9))
    _, stream = next(reader.parts())
    assert io.BufferedReader(stream).read() == b"hello world"


# --- poller ---


@pytest.fixture
def lease_store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'leases.db'}") as store:
        yield store


class RefreshLog:
    """A refresh callable that records calls and fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.failing = False
        self.called = threading.Event()

    def __call__(self, cluster: str) -> None:
        self.calls.append((cluster, time.monotonic()))
        self.called.set()
        if self.failing:
            raise ConnectionLostError("connection to 127.0.0.1:1 refused", host="127.0.0.1")


def test_poller_refreshes_each_cluster(lease_store: Store) -> None:
    log = RefreshLog()
    poller = Poller(log, lease_store, ["a", "b"], interval_s=0.05, max_backoff_s=1)
    poller.start()
    time.sleep(0.4)
    poller.stop()
    clusters = [cluster for cluster, _ in log.calls]
    assert clusters.count("a") >= 3
    assert clusters.count("b") >= 3


def test_poller_backs_off_when_unreachable(lease_store: Store) -> None:
    log = RefreshLog()
    log.failing = True
    poller = Poller(log, lease_store, ["a"], interval_s=0.1, max_backoff_s=10)
    delays = [poller.poll_once("a") for _ in range(4)]
    assert delays == [0.2, 0.4, 0.8, 1.6]


def test_poller_backoff_capped(lease_store: Store) -> None:
    log = RefreshLog()
    log.failing = True
    poller = Poller(log, lease_store, ["a"], interval_s=1, max_backoff_s=3)
    delays = [poller.poll_once("a") for _ in range(4)]
    assert delays[-1] == 3


def test_poller_recovers_interval(lease_store: Store) -> None:
    log = RefreshLog()
    log.failing = True
    poller = Poller(log, lease_store, ["a"], interval_s=0.1, max_backoff_s=10)
    poller.poll_once("a")
    log.failing = False
    assert poller.poll_once("a") == 0.1
    assert poller.schedules["a"].failures == 0


def test_poller_skips_leased_cluster(lease_store: Store) -> None:
    log = RefreshLog()
    lease_store.acquire_lease("a", "other-process", ttl_s=60)
    poller = Poller(log, lease_store, ["a"], interval_s=0.1, max_backoff_s=1)
    poller.poll_once("a")
    assert log.calls == []


def test_poller_releases_leases(lease_store: Store) -> None:
    log = RefreshLog()
    poller = Poller(log, lease_store, ["a"], interval_s=0.05, max_backoff_s=1)
    poller.start()
    assert log.called.wait(5)
    assert lease_store.lease_holder("a") == poller.holder
    poller.stop()
    assert lease_store.lease_holder("a") is None


def test_poller_survives_unexpected_error(lease_store: Store) -> None:
    def broken(cluster: str) -> None:
        raise KeyError("bug")

    poller = Poller(broken, lease_store, ["a"], interval_s=0.1, max_backoff_s=1)
    assert poller.poll_once("a") == 0.1


def test_poller_runs_start_hook_first(lease_store: Store) -> None:
    order: list[str] = []
    started = threading.Event()

    def refresh(cluster: str) -> None:
        order.append("refresh")
        started.set()

    poller = Poller(refresh, lease_store, ["a"], interval_s=0.05, max_backoff_s=1,
                    on_start=lambda: order.append("reconcile"))
    poller.start()
    assert started.wait(5)
    poller.stop()
    assert order[0] == "reconcile"
