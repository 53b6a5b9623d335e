"""Engine set-up, transactions and the translation of database errors.

SQLite connections run in WAL mode with foreign keys on and a busy timeout.
Python's sqlite3 module would open transactions lazily, before the first write,
so two writers that both read first can fail with "database is locked" however
long the busy timeout is. The engine therefore emits ``BEGIN`` itself, and
``BEGIN IMMEDIATE`` for write transactions, which take SQLite's write lock at
the start and wait for it up to the busy timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Engine, create_engine, event, make_url
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConfigError, StoreUnavailableError
from .models import Base

logger = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_S = 30.0
# Connection execution option that makes the next SQLite transaction BEGIN IMMEDIATE.
_IMMEDIATE = "wrfbatch_begin_immediate"


def parse_url(url: str | URL) -> URL:
    """Parse a SQLAlchemy database URL, rejecting URLs the store cannot serve."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"invalid database URL {url!r}: write sqlite:///path/to/file.db or "
            "postgresql+psycopg2://user@host/dbname"
        ) from exc
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r} in "
            f"{parsed.render_as_string(hide_password=True)}: use sqlite or postgresql"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            "in-memory SQLite database requested: every connection would see its own "
            "empty database; give a file path, for example sqlite:////var/lib/wrfbatch/db"
        )
    return parsed


def make_engine(url: str | URL, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    """Create an engine for ``url``; the parent directory of a SQLite file is created."""
    parsed = parse_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed, busy_timeout_s)
        return create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigError(
            f"no SQLAlchemy driver for {parsed.drivername!r}: install it, for example "
            "pip install 'wrfbatch[postgres]' for postgresql+psycopg2"
        ) from exc


def _sqlite_engine(url: URL, busy_timeout_s: float) -> Engine:
    assert url.database is not None  # parse_url rejects in-memory databases
    path = Path(url.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
    timeout_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, connection_record: Any) -> None:
        # isolation_level None stops sqlite3 from opening transactions by itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
        # In WAL mode this survives a process crash, but a power loss may lose the last commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def translated_errors(url: URL) -> Iterator[None]:
    """Translate connection and lock errors of the database into StoreUnavailableError."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        where = url.render_as_string(hide_password=True)
        raise StoreUnavailableError(
            f"database {where} is unavailable: {exc.orig}; check that it is running and "
            "reachable, then retry"
        ) from exc


def upsert(
    session: Session,
    model: type[Base],
    values: dict[str, Any],
    index_elements: list[str],
    update: dict[str, Any] | None = None,
    where: ColumnElement[bool] | None = None,
) -> Any:
    """Insert a row, or on a conflict on ``index_elements`` update it (or leave it alone).

    With ``update``, the conflicting row is updated where ``where`` holds. The
    statement returns the primary key of the inserted or updated row, so the
    result contains no row when the existing row was left alone.
    """
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    statement: Any = insert(model).values(values)
    if update:
        statement = statement.on_conflict_do_update(
            index_elements=index_elements, set_=update, where=where
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=index_elements)
    primary_key = model.__table__.primary_key.columns
    return session.execute(statement.returning(*primary_key)).first()


class StoreBase:
    """Engine and transactions shared by the store's method groups."""

    def __init__(self, url: str | URL, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        self.engine = make_engine(url, busy_timeout_s)
        self.url = self.engine.url
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Session]:
        """Yield a session in one transaction, committed when the block ends without error.

        A write transaction holds SQLite's write lock from its start. On
        PostgreSQL, rows read with ``with_for_update()`` stay locked until the end.
        """
        with translated_errors(self.url), self._sessions.begin() as session:
            # The options apply when the session first takes its connection, before BEGIN.
            session.connection(execution_options={_IMMEDIATE: write})
            yield session

    def close(self) -> None:
        """Close the pooled connections; call it when the store is no longer needed."""
        self.engine.dispose()

    def __enter__(self) -> StoreBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
