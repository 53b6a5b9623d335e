"""Store under concurrent writers: threads, and two Store objects on one database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from wrfbatch.errors import ConflictError
from wrfbatch.states import RunState
from wrfbatch.store import Store
from wrfbatch.store.migrate import current_revision, head_revision
from wrfbatch.store.models import Run

THREADS = 4


@pytest.fixture
def two_stores(database_url: str) -> Iterator[tuple[Store, Store]]:
    with Store(database_url) as first, Store(database_url) as second:
        yield first, second


def _run_together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads that start together; return results or errors."""
    barrier = threading.Barrier(count)

    def call(index: int) -> Any:
        barrier.wait()
        try:
            return work(index)
        except Exception as exc:  # returned so that the test can count each kind
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def test_concurrent_increments_lose_nothing(two_stores: tuple[Store, Store]) -> None:
    run_id = two_stores[0].create_run(owner="ann", version="3.9", cluster="hpc").id
    increments = 25

    def increment(index: int) -> None:
        store = two_stores[index % 2]
        for _ in range(increments):
            store.update_run(run_id, lambda run: {"attempt": run.attempt + 1})

    errors = [result for result in _run_together(THREADS, increment) if result is not None]
    run = two_stores[1].get_run(run_id)
    assert errors == []
    assert run.attempt == THREADS * increments
    assert run.row_version == THREADS * increments + 1


def test_concurrent_fields_all_kept(two_stores: tuple[Store, Store]) -> None:
    run_id = two_stores[0].create_run(owner="ann", version="3.9", cluster="hpc").id
    fields = ["percent_complete", "remaining_time_s", "output_size_bytes", "disk_usage_bytes"]

    def write_field(index: int) -> None:
        for value in range(1, 21):
            two_stores[index % 2].update_run(run_id, {fields[index]: value})

    errors = [result for result in _run_together(len(fields), write_field) if result is not None]
    run = two_stores[0].get_run(run_id)
    assert errors == []
    for field in fields:
        assert getattr(run, field) == 20, field


def test_guarded_start_has_one_winner(two_stores: tuple[Store, Store]) -> None:
    run_id = two_stores[0].create_run(
        owner="ann", version="3.9", cluster="hpc", status=RunState.READY
    ).id

    def start(index: int) -> Any:
        return two_stores[index % 2].update_run(
            run_id,
            lambda run: {"status": RunState.STARTING, "attempt": run.attempt + 1},
            expected_status={RunState.READY},
            action="start",
        )

    results = _run_together(THREADS, start)
    conflicts = [result for result in results if isinstance(result, ConflictError)]
    assert len(conflicts) == THREADS - 1
    assert two_stores[0].get_run(run_id).attempt == 1


def test_lease_race_has_one_winner(two_stores: tuple[Store, Store]) -> None:
    def acquire(index: int) -> Any:
        return two_stores[index % 2].acquire_lease("hpc", f"service-{index}", ttl_s=30)

    results = _run_together(THREADS, acquire)
    assert results.count(True) == 1
    assert results.count(False) == THREADS - 1


def test_concurrent_uploads_same_name(two_stores: tuple[Store, Store]) -> None:
    run_id = two_stores[0].create_run(owner="ann", version="3.9", cluster="hpc").id

    def upload(index: int) -> Any:
        return two_stores[index % 2].put_input_file(
            run_id, "namelist.input", index, f"{index:064x}"
        )

    results = _run_together(THREADS, upload)
    files = two_stores[1].list_input_files(run_id)
    assert [r for r in results if isinstance(r, Exception)] == []
    assert len(files) == 1


def test_concurrent_open_migrates_once(database_url: str) -> None:
    def open_store(index: int) -> None:
        Store(database_url).close()

    errors = [result for result in _run_together(THREADS, open_store) if result is not None]
    engine = create_engine(database_url)
    with engine.connect() as connection:
        revision = current_revision(connection)
    tables = inspect(engine).get_table_names()
    engine.dispose()
    assert errors == []
    assert revision == head_revision()
    assert "runs" in tables


def test_row_version_detects_stale_write(database_url: str) -> None:
    with Store(database_url) as store:
        run_id = store.create_run(owner="ann", version="3.9", cluster="hpc").id
        with (
            Session(store.engine, expire_on_commit=False) as first,
            Session(store.engine) as second,
        ):
            stale = first.get(Run, run_id)
            first.commit()  # ends the read so that SQLite lets this session write later
            fresh = second.get(Run, run_id)
            assert stale is not None and fresh is not None
            fresh.cores = 2
            second.commit()
            stale.cores = 4
            with pytest.raises(StaleDataError):
                first.commit()
        assert store.get_run(run_id).cores == 2
