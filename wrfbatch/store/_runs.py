"""Runs and the users they are shared with."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection, Mapping
from typing import Any

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.exc import StaleDataError

from .. import names
from ..errors import ConflictError, InvalidInputError, NotFoundError
from ..states import RunState
from ._base import StoreBase, upsert
from .models import Run, RunShare, User
from .records import RUN_COLUMNS, RunRecord

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
# Attempts of update_run when another writer changed the row between read and write.
_UPDATE_ATTEMPTS = 5
_READ_ONLY_COLUMNS = frozenset({"id", "owner", "time_created", "time_updated", "row_version"})
UPDATABLE_RUN_FIELDS = frozenset(RUN_COLUMNS) - _READ_ONLY_COLUMNS

RunChanges = Mapping[str, Any] | Callable[[RunRecord], Mapping[str, Any]]


def new_run_id() -> str:
    """Return a random run id of 12 lower-case hex digits (48 bits)."""
    return secrets.token_hex(6)


def _with_children(statement: Select[tuple[Run]]) -> Select[tuple[Run]]:
    # One query per relationship for a whole page of runs, never one per run.
    return statement.options(selectinload(Run.input_files), selectinload(Run.shares))


def _coerce_status(value: RunState | str) -> str:
    try:
        return RunState(value).value
    except ValueError as exc:
        allowed = ", ".join(state.value for state in RunState)
        raise InvalidInputError(f"invalid run status {value!r}: use one of {allowed}") from exc


def _apply_run_changes(row: Run, changes: Mapping[str, Any]) -> None:
    unknown = set(changes) - UPDATABLE_RUN_FIELDS
    if unknown:
        raise InvalidInputError(
            f"cannot update run field(s) {sorted(unknown)}: updatable fields are "
            f"{sorted(UPDATABLE_RUN_FIELDS)}"
        )
    for key, value in changes.items():
        if key == "status":
            value = _coerce_status(value)
        setattr(row, key, value)


def _check_status(
    row: Run, expected_status: Collection[RunState | str] | None, action: str
) -> None:
    if expected_status is None:
        return
    allowed = {_coerce_status(state) for state in expected_status}
    if row.status not in allowed:
        raise ConflictError(
            f"cannot {action} run {row.id}: it is {row.status}, and {action} needs it to be "
            f"{' or '.join(sorted(allowed))}"
        )


class RunMethods(StoreBase):
    """Create, read, list and update runs; share them with other users."""

    def create_run(
        self,
        *,
        owner: str,
        version: str,
        cluster: str,
        run_id: str | None = None,
        run_name: str = "",
        model: str = "wrf",
        status: RunState = RunState.CREATED,
        namelist_summary: dict[str, Any] | None = None,
        required_input_files: list[Any] | None = None,
    ) -> RunRecord:
        """Insert a new run and return it; ``run_id`` defaults to :func:`new_run_id`.

        Raises:
            InvalidInputError: ``run_id`` or ``status`` is invalid.
            ConflictError: a run with this id exists.
        """
        run_id = names.check_run_id(run_id) if run_id is not None else new_run_id()
        row = Run(
            id=run_id, owner=owner, run_name=run_name, model=model, version=version,
            cluster=cluster, status=_coerce_status(status), namelist_summary=namelist_summary,
            required_input_files=list(required_input_files or []), output_files=[],
            attempt=0, output_size_bytes=0, disk_usage_bytes=0, deleted=False,
        )
        try:
            with self._transaction(write=True) as session:
                session.add(row)
                session.flush()
                record = RunRecord.from_row(row)
        except IntegrityError as exc:
            raise ConflictError(f"run id {run_id} is taken: create the run again") from exc
        logger.info("created run %s for %s on cluster %s", run_id, owner, cluster)
        return record

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run ``run_id``, deleted or not.

        Raises:
            NotFoundError: no run has this id.
        """
        with self._transaction() as session:
            row = session.scalars(_with_children(select(Run).where(Run.id == run_id))).first()
            if row is None:
                raise NotFoundError(f"run {run_id} not found: check the run id")
            return RunRecord.from_row(row)

    def list_runs(
        self,
        user: str | None,
        is_admin: bool,
        limit: int = 100,
        offset: int = 0,
        status: RunState | str | Collection[RunState | str] | None = None,
        *,
        cluster: str | None = None,
        include_deleted: bool = True,
    ) -> list[RunRecord]:
        """Return a page of runs, newest first.

        Admins see every run; other users see the runs they own and the runs
        shared with them. ``status`` keeps runs in that state (or states), and
        ``cluster`` the runs of that cluster.

        Raises:
            InvalidInputError: ``user`` is None for a non-admin, or ``limit`` or
                ``offset`` is out of range.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInputError(f"invalid limit {limit}: use 1 to {MAX_PAGE_SIZE}")
        if offset < 0:
            raise InvalidInputError(f"invalid offset {offset}: use 0 or more")
        statement = select(Run)
        if not is_admin:
            statement = statement.where(self._readable_by(user))
        if status is not None:
            states = [status] if isinstance(status, (str, RunState)) else list(status)
            statement = statement.where(Run.status.in_([_coerce_status(s) for s in states]))
        if cluster is not None:
            statement = statement.where(Run.cluster == cluster)
        if not include_deleted:
            statement = statement.where(Run.deleted.is_(False))
        statement = statement.order_by(Run.time_created.desc(), Run.id.desc())
        with self._transaction() as session:
            rows = session.scalars(_with_children(statement.limit(limit).offset(offset)))
            return [RunRecord.from_row(row) for row in rows]

    @staticmethod
    def _readable_by(user: str | None) -> Any:
        if user is None:
            raise InvalidInputError("missing user: list_runs needs a user unless is_admin")
        shared = exists().where(RunShare.run_id == Run.id, RunShare.user_name == user)
        return or_(Run.owner == user, shared)

    def update_run(
        self,
        run_id: str,
        changes: RunChanges,
        *,
        expected_status: Collection[RunState | str] | None = None,
        action: str = "update",
    ) -> RunRecord:
        """Apply ``changes`` to a run atomically and return the updated run.

        ``changes`` maps field names to values, or is a function that receives
        the current run and returns that mapping, for read-modify-write changes
        such as ``lambda run: {"attempt": run.attempt + 1}``. The row is locked
        for the transaction (SQLite write lock, PostgreSQL ``FOR UPDATE``), and
        the row version check retries if another writer got in anyway.
        ``action`` names the operation in the ConflictError message.

        Raises:
            NotFoundError: no run has this id.
            ConflictError: the stored status is not in ``expected_status``, or
                the row kept changing under concurrent writers.
            InvalidInputError: a field is unknown or read-only, or a status is invalid.
        """
        # The row lock makes a stale row version unexpected; it means that a writer
        # bypassed the lock, and the re-read picks up its change.
        for attempt in range(1, _UPDATE_ATTEMPTS + 1):
            try:
                return self._update_run_once(run_id, changes, expected_status, action)
            except StaleDataError:
                logger.warning("run %s changed during update (attempt %d of %d)",
                               run_id, attempt, _UPDATE_ATTEMPTS)
        raise ConflictError(
            f"run {run_id} changed concurrently {_UPDATE_ATTEMPTS} times: retry the request"
        )

    def _update_run_once(
        self,
        run_id: str,
        changes: RunChanges,
        expected_status: Collection[RunState | str] | None,
        action: str,
    ) -> RunRecord:
        with self._transaction(write=True) as session:
            row = self._lock_run(session, run_id)
            _check_status(row, expected_status, action)
            values = changes(RunRecord.from_row(row)) if callable(changes) else changes
            _apply_run_changes(row, values)
            session.flush()
            return RunRecord.from_row(row)

    @staticmethod
    def _lock_run(session: Session, run_id: str) -> Run:
        statement = _with_children(select(Run).where(Run.id == run_id)).with_for_update()
        row = session.scalars(statement).first()
        if row is None:
            raise NotFoundError(f"run {run_id} not found: check the run id")
        return row

    def share_run(self, run_id: str, user_name: str) -> None:
        """Let ``user_name`` read the run; sharing twice changes nothing.

        Raises:
            NotFoundError: the run or the user does not exist.
        """
        with self._transaction(write=True) as session:
            self._lock_run(session, run_id)
            if session.get(User, user_name) is None:
                raise NotFoundError(f"user {user_name!r} not found: create the user first")
            upsert(session, RunShare, {"run_id": run_id, "user_name": user_name},
                   ["run_id", "user_name"])
        logger.info("shared run %s with %s", run_id, user_name)

    def unshare_run(self, run_id: str, user_name: str) -> bool:
        """Stop sharing the run with ``user_name``; return False when it was not shared."""
        with self._transaction(write=True) as session:
            share = session.get(RunShare, (run_id, user_name))
            if share is None:
                return False
            session.delete(share)
        logger.info("stopped sharing run %s with %s", run_id, user_name)
        return True

    def can_read(self, run_id: str, user_name: str, is_admin: bool = False) -> bool:
        """Return True when the run exists and the user is an admin, its owner or shared."""
        statement = select(Run.id).where(Run.id == run_id)
        if not is_admin:
            statement = statement.where(self._readable_by(user_name))
        with self._transaction() as session:
            return session.scalars(statement).first() is not None
