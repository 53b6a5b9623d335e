"""Store: runs, input files, jobs, users, tokens, shares and leases on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wrfbatch.errors import ConflictError, InvalidInputError, NotFoundError
from wrfbatch.states import JobState, RunState, Stage
from wrfbatch.store import Store
from wrfbatch.store.models import Base

SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store(database_url) as opened:
        yield opened


def _run(store: Store, owner: str = "ann", **fields: object) -> str:
    fields.setdefault("version", "3.9")
    fields.setdefault("cluster", "hpc")
    return store.create_run(owner=owner, **fields).id


# --- runs ---


def test_create_run_defaults(store: Store) -> None:
    run = store.create_run(owner="ann", version="3.9", cluster="hpc", run_name="alps")
    assert len(run.id) == 12
    assert run.status is RunState.CREATED
    assert run.attempt == 0
    assert run.model == "wrf"
    assert run.output_files == []
    assert run.deleted is False
    assert run.time_created.tzinfo is UTC


def test_get_run_round_trip(store: Store) -> None:
    summary = {"domains": 2, "domain_shape": [[74, 61, 33], [100, 100, 33]], "dt": 180}
    run_id = _run(store, run_id="0123456789ab", namelist_summary=summary,
                  required_input_files=["met_em.d01.2019-01-01_00:00:00.nc"])
    run = store.get_run(run_id)
    assert run.id == "0123456789ab"
    assert run.namelist_summary == summary
    assert run.required_input_files == ["met_em.d01.2019-01-01_00:00:00.nc"]


def test_get_run_missing_names_id(store: Store) -> None:
    with pytest.raises(NotFoundError, match="run feedbeef0000 not found"):
        store.get_run("feedbeef0000")


def test_create_run_duplicate_id(store: Store) -> None:
    _run(store, run_id="0123456789ab")
    with pytest.raises(ConflictError, match="0123456789ab"):
        _run(store, run_id="0123456789ab")


def test_create_run_invalid_id(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="invalid run id"):
        _run(store, run_id="../etc")


def test_update_run_applies_changes(store: Store) -> None:
    run_id = _run(store)
    before = store.get_run(run_id)
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    outputs = [{"filename": "wrfout_d01_2019-01-01_00:00:00", "size": 1024}]
    after = store.update_run(run_id, {
        "status": "active", "cores": 4, "time_started": started, "percent_complete": 12.5,
        "remaining_time_s": 600.0, "output_files": outputs, "output_size_bytes": 5 * 1024**3,
    })
    assert after.status is RunState.ACTIVE
    assert after.cores == 4
    assert after.time_started == started
    assert after.output_files == outputs
    assert after.output_size_bytes == 5 * 1024**3
    assert after.row_version == before.row_version + 1
    assert after.time_updated > before.time_updated
    assert store.get_run(run_id) == after


def test_update_run_function_changes(store: Store) -> None:
    run_id = _run(store)
    run = store.update_run(run_id, lambda current: {"attempt": current.attempt + 1})
    assert run.attempt == 1


def test_update_run_guarded_conflict(store: Store) -> None:
    run_id = _run(store)
    with pytest.raises(ConflictError, match=f"cannot start run {run_id}: it is created"):
        store.update_run(run_id, {"status": RunState.STARTING},
                         expected_status={RunState.READY}, action="start")
    assert store.get_run(run_id).status is RunState.CREATED


def test_update_run_guard_passes(store: Store) -> None:
    run_id = _run(store)
    run = store.update_run(run_id, {"status": "ready"}, expected_status={"created", "error"})
    assert run.status is RunState.READY


def test_update_run_unknown_field(store: Store) -> None:
    run_id = _run(store)
    with pytest.raises(InvalidInputError, match="owner"):
        store.update_run(run_id, {"owner": "mallory"})


def test_update_run_invalid_status(store: Store) -> None:
    run_id = _run(store)
    with pytest.raises(InvalidInputError, match="invalid run status 'running'"):
        store.update_run(run_id, {"status": "running"})


def test_update_run_missing(store: Store) -> None:
    with pytest.raises(NotFoundError, match="feedbeef0000"):
        store.update_run("feedbeef0000", {"cores": 2})


# --- listing ---


def test_list_runs_owner_and_shares(store: Store) -> None:
    store.create_user("bob")
    own = _run(store, owner="bob")
    shared = _run(store, owner="ann")
    _run(store, owner="ann")
    store.share_run(shared, "bob")
    listed = [run.id for run in store.list_runs("bob", is_admin=False)]
    assert listed == [shared, own]


def test_list_runs_admin_sees_all(store: Store) -> None:
    ids = [_run(store, owner=owner) for owner in ("ann", "bob", "cy")]
    listed = [run.id for run in store.list_runs(None, is_admin=True)]
    assert listed == ids[::-1]


def test_list_runs_pagination(store: Store) -> None:
    ids = [_run(store) for _ in range(7)][::-1]
    first = store.list_runs("ann", False, limit=3, offset=0)
    second = store.list_runs("ann", False, limit=3, offset=3)
    last = store.list_runs("ann", False, limit=3, offset=6)
    assert [run.id for run in first] == ids[0:3]
    assert [run.id for run in second] == ids[3:6]
    assert [run.id for run in last] == ids[6:]


def test_list_runs_status_filter(store: Store) -> None:
    created = _run(store)
    active = _run(store)
    done = _run(store)
    store.update_run(active, {"status": RunState.ACTIVE})
    store.update_run(done, {"status": RunState.DONE})
    only_active = store.list_runs("ann", False, status=RunState.ACTIVE)
    several = store.list_runs("ann", False, status={"created", "done"})
    assert [run.id for run in only_active] == [active]
    assert {run.id for run in several} == {created, done}


def test_list_runs_cluster_filter(store: Store) -> None:
    here = _run(store, cluster="hpc")
    _run(store, cluster="other")
    listed = store.list_runs(None, True, cluster="hpc")
    assert [run.id for run in listed] == [here]


def test_list_runs_excludes_deleted(store: Store) -> None:
    kept = _run(store)
    gone = _run(store)
    store.update_run(gone, {"deleted": True})
    with_deleted = store.list_runs("ann", False)
    without = store.list_runs("ann", False, include_deleted=False)
    assert {run.id for run in with_deleted} == {kept, gone}
    assert [run.id for run in without] == [kept]


def test_list_runs_invalid_limit(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="invalid limit 0"):
        store.list_runs("ann", False, limit=0)


def test_list_runs_needs_user(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="missing user"):
        store.list_runs(None, is_admin=False)


def test_list_runs_includes_children(store: Store) -> None:
    store.create_user("bob")
    run_id = _run(store)
    store.put_input_file(run_id, "namelist.input", 100, SHA_A)
    store.share_run(run_id, "bob")
    (run,) = store.list_runs("ann", False)
    assert [f.filename for f in run.input_files] == ["namelist.input"]
    assert run.shared_with == ["bob"]


# --- shares ---


def test_can_read_cases(store: Store) -> None:
    store.create_user("bob")
    store.create_user("cy")
    run_id = _run(store, owner="ann")
    store.share_run(run_id, "bob")
    assert store.can_read(run_id, "ann")
    assert store.can_read(run_id, "bob")
    assert not store.can_read(run_id, "cy")
    assert store.can_read(run_id, "cy", is_admin=True)
    assert not store.can_read("feedbeef0000", "ann", is_admin=True)


def test_share_run_twice_and_unshare(store: Store) -> None:
    store.create_user("bob")
    run_id = _run(store)
    store.share_run(run_id, "bob")
    store.share_run(run_id, "bob")
    assert store.get_run(run_id).shared_with == ["bob"]
    assert store.unshare_run(run_id, "bob")
    assert not store.unshare_run(run_id, "bob")
    assert not store.can_read(run_id, "bob")


def test_share_run_unknown_user(store: Store) -> None:
    run_id = _run(store)
    with pytest.raises(NotFoundError, match="user 'nobody' not found"):
        store.share_run(run_id, "nobody")


# --- input files ---


def test_input_file_replaced_on_upload(store: Store) -> None:
    run_id = _run(store)
    first = store.put_input_file(run_id, "namelist.input", 100, SHA_A)
    store.mark_input_file_staged(run_id, "namelist.input", SHA_A)
    second = store.put_input_file(run_id, "namelist.input", 120, SHA_B)
    (stored,) = store.list_input_files(run_id)
    assert stored.size_bytes == 120
    assert stored.sha256 == SHA_B
    assert stored.staged_sha256 is None
    assert second.time_uploaded >= first.time_uploaded


def test_input_file_staged_flag(store: Store) -> None:
    run_id = _run(store)
    store.put_input_file(run_id, "met_em.d01.2019-01-01_00:00:00.nc", 2**33, SHA_A)
    record = store.mark_input_file_staged(run_id, "met_em.d01.2019-01-01_00:00:00.nc", SHA_A)
    assert record.staged
    assert record.size_bytes == 2**33


def test_input_files_sorted_by_name(store: Store) -> None:
    run_id = _run(store)
    for name in ("namelist.input", "met_em.d02.nc", "met_em.d01.nc"):
        store.put_input_file(run_id, name, 1, SHA_A)
    names = [f.filename for f in store.list_input_files(run_id)]
    assert names == ["met_em.d01.nc", "met_em.d02.nc", "namelist.input"]


def test_input_file_missing_run(store: Store) -> None:
    with pytest.raises(NotFoundError, match="run feedbeef0000 not found"):
        store.put_input_file("feedbeef0000", "namelist.input", 1, SHA_A)


def test_input_file_invalid_name(store: Store) -> None:
    run_id = _run(store)
    with pytest.raises(InvalidInputError, match="without directories"):
        store.put_input_file(run_id, "../namelist.input", 1, SHA_A)


def test_input_file_invalid_digest(store: Store) -> None:
    run_id = _run(store)
    with pytest.raises(InvalidInputError, match="SHA-256"):
        store.put_input_file(run_id, "namelist.input", 1, "xyz")


def test_input_file_get_and_delete(store: Store) -> None:
    run_id = _run(store)
    store.put_input_file(run_id, "namelist.input", 1, SHA_A)
    assert store.get_input_file(run_id, "namelist.input").sha256 == SHA_A
    store.delete_input_file(run_id, "namelist.input")
    with pytest.raises(NotFoundError, match="'namelist.input' of run"):
        store.get_input_file(run_id, "namelist.input")


# --- jobs ---


def test_add_and_update_job(store: Store) -> None:
    run_id = _run(store)
    job = store.add_job(run_id, 1, Stage.REAL, "wrfbatch-real")
    assert job.job_id is None
    assert job.state is JobState.PENDING
    ended = datetime(2026, 1, 1, 12, tzinfo=UTC)
    updated = store.update_job(job.id, {"job_id": "4242", "state": "FAILED",
                                        "slurm_state": "FAILED", "exit_code": 1,
                                        "time_ended": ended})
    assert updated.job_id == "4242"
    assert updated.state is JobState.FAILED
    assert updated.exit_code == 1
    assert updated.time_ended == ended


def test_add_job_duplicate_stage(store: Store) -> None:
    run_id = _run(store)
    store.add_job(run_id, 1, "real", "wrfbatch-real")
    with pytest.raises(ConflictError, match="already has a real job for attempt 1"):
        store.add_job(run_id, 1, "real", "wrfbatch-real")


def test_add_job_missing_run(store: Store) -> None:
    with pytest.raises(NotFoundError, match="feedbeef0000"):
        store.add_job("feedbeef0000", 1, "wrf", "wrfbatch-wrf")


def test_update_job_invalid_state(store: Store) -> None:
    job = store.add_job(_run(store), 1, "wrf", "wrfbatch-wrf")
    with pytest.raises(InvalidInputError, match="invalid job state 'SLEEPING'"):
        store.update_job(job.id, {"state": "SLEEPING"})


def test_update_job_missing(store: Store) -> None:
    with pytest.raises(NotFoundError, match="job 999999"):
        store.update_job(999999, {"state": "RUNNING"})


def test_jobs_for_run_order(store: Store) -> None:
    run_id = _run(store)
    store.add_job(run_id, 2, "wrf", "b")
    store.add_job(run_id, 1, "real", "a")
    store.add_job(run_id, 2, "real", "c")
    jobs = store.jobs_for_run(run_id)
    second = store.jobs_for_run(run_id, attempt=2)
    assert [(j.attempt, j.job_name) for j in jobs] == [(1, "a"), (2, "b"), (2, "c")]
    assert [j.job_name for j in second] == ["b", "c"]


def test_active_jobs_by_cluster(store: Store) -> None:
    here = _run(store, cluster="hpc")
    there = _run(store, cluster="other")
    pending = store.add_job(here, 1, "real", "p")
    done = store.add_job(here, 1, "wrf", "d")
    store.update_job(done.id, {"state": JobState.COMPLETED})
    store.add_job(there, 1, "real", "x")
    active = store.active_jobs("hpc")
    assert [job.id for job in active] == [pending.id]


# --- users and tokens ---


def test_create_user_duplicate(store: Store) -> None:
    store.create_user("ann", is_admin=True)
    with pytest.raises(ConflictError, match="user 'ann' exists"):
        store.create_user("ann")
    assert store.get_user("ann").is_admin


def test_create_user_invalid_name(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="invalid user name"):
        store.create_user("ann; rm -rf /")


def test_token_finds_user(store: Store) -> None:
    store.create_user("ann")
    token = store.create_token("ann", "laptop")
    user = store.find_user_by_token(token)
    assert user is not None
    assert user.name == "ann"
    (listed,) = store.list_tokens("ann")
    assert listed.label == "laptop"
    assert token.startswith(listed.prefix)
    assert listed.time_last_used is not None


def test_token_wrong_or_altered(store: Store) -> None:
    store.create_user("ann")
    token = store.create_token("ann")
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert store.find_user_by_token(altered) is None
    assert store.find_user_by_token("") is None
    assert store.find_user_by_token("wrfb_" + "x" * 500) is None


def test_revoked_token_rejected(store: Store) -> None:
    store.create_user("ann")
    token = store.create_token("ann")
    (record,) = store.list_tokens("ann")
    revoked = store.revoke_token(record.id, user_name="ann")
    assert revoked.revoked
    assert store.find_user_by_token(token) is None


def test_revoke_other_users_token(store: Store) -> None:
    store.create_user("ann")
    store.create_user("bob")
    store.create_token("ann")
    (record,) = store.list_tokens("ann")
    with pytest.raises(NotFoundError, match=f"token {record.id} not found"):
        store.revoke_token(record.id, user_name="bob")


def test_token_for_missing_user(store: Store) -> None:
    with pytest.raises(NotFoundError, match="user 'ghost' not found"):
        store.create_token("ghost")


def test_token_plaintext_not_stored(store: Store, database_url: str) -> None:
    store.create_user("ann")
    token = store.create_token("ann", "ci")
    secret_part = token[len("wrfb_"):]
    assert store.find_user_by_token(token) is not None
    with store.engine.connect() as connection:
        rows = [connection.execute(table.select()).all() for table in Base.metadata.sorted_tables]
    dumped = repr(rows)
    assert secret_part not in dumped
    assert secret_part[12:] not in dumped
    if database_url.startswith("sqlite"):
        database = Path(store.engine.url.database or "")
        files = [database, database.with_name(database.name + "-wal")]
        raw = b"".join(path.read_bytes() for path in files if path.exists())
        assert secret_part.encode() not in raw


# --- leases ---


def test_lease_exclusive_between_holders(store: Store) -> None:
    assert store.acquire_lease("hpc", "service-a", ttl_s=30)
    assert not store.acquire_lease("hpc", "service-b", ttl_s=30)
    assert store.acquire_lease("hpc", "service-a", ttl_s=30)
    assert store.lease_holder("hpc") == "service-a"


def test_lease_expires_for_other(store: Store) -> None:
    assert store.acquire_lease("hpc", "service-a", ttl_s=0.2)
    time.sleep(0.3)
    assert store.lease_holder("hpc") is None
    assert store.acquire_lease("hpc", "service-b", ttl_s=30)
    assert not store.acquire_lease("hpc", "service-a", ttl_s=30)


def test_lease_release(store: Store) -> None:
    store.acquire_lease("hpc", "service-a", ttl_s=30)
    assert not store.release_lease("hpc", "service-b")
    assert store.release_lease("hpc", "service-a")
    assert store.acquire_lease("hpc", "service-b", ttl_s=30)


def test_lease_per_cluster(store: Store) -> None:
    assert store.acquire_lease("hpc", "service-a", ttl_s=30)
    assert store.acquire_lease("other", "service-b", ttl_s=30)


def test_lease_invalid_ttl(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="time to live"):
        store.acquire_lease("hpc", "service-a", ttl_s=0)
