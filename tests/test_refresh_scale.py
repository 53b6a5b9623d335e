"""Store methods that let one refresh read and write the jobs of many runs at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event

from wrfbatch.errors import InvalidInputError, NotFoundError
from wrfbatch.states import JobState, Stage
from wrfbatch.store import Store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store(database_url) as opened:
        yield opened


def _run_with_jobs(store: Store, attempts: int = 1) -> str:
    run_id = store.create_run(owner="ann", version="3.9", cluster="hpc").id
    for attempt in range(1, attempts + 1):
        store.add_job(run_id, attempt, Stage.REAL, f"real-{attempt}", job_id=f"{attempt}01")
        store.add_job(run_id, attempt, Stage.WRF, f"wrf-{attempt}", job_id=f"{attempt}02")
    return run_id


def test_jobs_for_runs_matches_per_run(store: Store) -> None:
    run_ids = [_run_with_jobs(store, attempts=2) for _ in range(3)]
    found = store.jobs_for_runs({run_id: 2 for run_id in run_ids})
    for run_id in run_ids:
        assert found[run_id] == store.jobs_for_run(run_id, 2)


def test_jobs_for_runs_keeps_attempt(store: Store) -> None:
    run_id = _run_with_jobs(store, attempts=2)
    found = store.jobs_for_runs({run_id: 1})
    assert [job.job_name for job in found[run_id]] == ["real-1", "wrf-1"]


def test_jobs_for_runs_unknown_empty(store: Store) -> None:
    assert store.jobs_for_runs({"0123456789ab": 1}) == {"0123456789ab": []}


def test_jobs_for_runs_constant_queries(store: Store) -> None:
    run_ids = [_run_with_jobs(store) for _ in range(30)]
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    store.jobs_for_runs({run_id: 1 for run_id in run_ids})
    selects = [sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1


def test_update_jobs_applies_all(store: Store) -> None:
    run_id = _run_with_jobs(store)
    real, wrf = store.jobs_for_run(run_id)
    store.update_jobs([(real.id, {"state": JobState.RUNNING, "slurm_state": "RUNNING"}),
                       (wrf.id, {"reason": "Dependency"})])
    real, wrf = store.jobs_for_run(run_id)
    assert real.state == JobState.RUNNING
    assert real.slurm_state == "RUNNING"
    assert wrf.reason == "Dependency"


def test_update_jobs_unknown_job_writes_nothing(store: Store) -> None:
    run_id = _run_with_jobs(store)
    real, _ = store.jobs_for_run(run_id)
    with pytest.raises(NotFoundError):
        store.update_jobs([(real.id, {"reason": "Priority"}), (999_999, {"reason": "x"})])
    assert store.jobs_for_run(run_id)[0].reason is None


def test_update_jobs_rejects_field(store: Store) -> None:
    run_id = _run_with_jobs(store)
    real, _ = store.jobs_for_run(run_id)
    with pytest.raises(InvalidInputError, match="job_name"):
        store.update_jobs([(real.id, {"job_name": "other"})])
