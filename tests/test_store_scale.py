"""Store listing with 10,000 runs: a constant number of queries and a bounded time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert

from wrfbatch.store import Store
from wrfbatch.store.models import InputFile, Run, RunShare, User

RUN_COUNT = 10_000
# A page took 6 to 16 ms on a 2-core Debian 12 machine with SQLite 3.40 and PostgreSQL 15.
# The bound is 30 times that, so that a loaded CI runner passes.
MAX_PAGE_SECONDS = 0.5


def _run_row(index: int, start: datetime) -> dict[str, Any]:
    return {
        "id": f"{index:012x}", "owner": "few" if index % 1000 == 0 else "many",
        "run_name": f"run {index}", "model": "wrf", "version": "3.9", "cluster": "hpc",
        "status": "active" if index % 3 == 0 else "done", "attempt": 1, "output_files": [],
        "output_size_bytes": 0, "disk_usage_bytes": 0, "required_input_files": [],
        "time_created": start + timedelta(seconds=index), "time_updated": start,
        "deleted": False, "row_version": 1,
    }


@pytest.fixture
def big_store(database_url: str) -> Iterator[Store]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with Store(database_url) as store:
        runs = [_run_row(index, start) for index in range(RUN_COUNT)]
        files = [
            {"run_id": run["id"], "filename": name, "size_bytes": 1, "sha256": "a" * 64,
             "time_uploaded": start}
            for run in runs for name in ("namelist.input", "met_em.d01.nc")
        ]
        shares = [{"run_id": f"{index:012x}", "user_name": "few"}
                  for index in range(1, RUN_COUNT, 2000)]
        users = [{"name": name, "is_admin": False, "time_created": start}
                 for name in ("few", "many")]
        with store.engine.begin() as connection:
            connection.execute(insert(User), users)
            connection.execute(insert(Run), runs)
            connection.execute(insert(InputFile), files)
            connection.execute(insert(RunShare), shares)
        yield store


def _count_selects(store: Store) -> list[str]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    return statements


@pytest.mark.parametrize(("user", "is_admin", "offset", "expected"), [
    ("few", False, 0, 15),
    ("many", False, 5000, 100),
    (None, True, 9950, 50),
])
def test_list_runs_large_page(
    big_store: Store, user: str | None, is_admin: bool, offset: int, expected: int
) -> None:
    statements = _count_selects(big_store)
    started = time.perf_counter()
    runs = big_store.list_runs(user, is_admin, limit=100, offset=offset)
    elapsed = time.perf_counter() - started
    assert len(runs) == expected
    assert all(len(run.input_files) == 2 for run in runs)
    assert len(statements) == 3
    assert elapsed < MAX_PAGE_SECONDS


def test_list_runs_large_order(big_store: Store) -> None:
    runs = big_store.list_runs("few", False, limit=100)
    created = [run.time_created for run in runs]
    assert created == sorted(created, reverse=True)
    assert {run.owner for run in runs} == {"few", "many"}
