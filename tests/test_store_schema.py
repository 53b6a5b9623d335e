"""Store schema: Alembic migrations from an empty database, and their match with the models."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
import pytest
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from wrfbatch.errors import ConfigError, StoreUnavailableError
from wrfbatch.store import Store, upgrade
from wrfbatch.store.migrate import alembic_config, current_revision, head_revision
from wrfbatch.store.models import Base

TABLES = {"runs", "input_files", "jobs", "users", "tokens", "run_shares", "poller_leases"}


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as connection:
        revision = current_revision(connection)
    engine.dispose()
    return revision


def test_open_migrates_empty_database(database_url: str) -> None:
    Store(database_url).close()
    engine = create_engine(database_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert TABLES <= tables
    assert _revision(database_url) == head_revision()


def test_migrated_schema_matches_models(database_url: str) -> None:
    upgrade(database_url)
    engine = create_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_upgrade_hook_is_idempotent(database_url: str) -> None:
    assert upgrade(database_url) == head_revision()
    assert upgrade(database_url) == head_revision()


def test_downgrade_then_upgrade(database_url: str) -> None:
    upgrade(database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    engine.dispose()
    assert upgrade(database_url) == head_revision()


def test_open_without_upgrade_rejects_old(database_url: str) -> None:
    with pytest.raises(ConfigError, match="run the schema upgrade"):
        Store(database_url, upgrade_schema=False)


def test_open_without_upgrade_at_head(database_url: str) -> None:
    upgrade(database_url)
    with Store(database_url, upgrade_schema=False) as store:
        assert store.list_users() == []


def test_unknown_revision_is_config_error(database_url: str) -> None:
    upgrade(database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(ConfigError, match="newer wrfbatch"):
        Store(database_url)


def test_invalid_url_is_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid database URL"):
        Store("not a url")


def test_unsupported_backend_rejected() -> None:
    with pytest.raises(ConfigError, match="unsupported database"):
        Store("mysql://user@localhost/wrfbatch")


def test_unreachable_database_unavailable() -> None:
    # Port 1 on loopback has no server, so the connection is refused at once.
    with pytest.raises(StoreUnavailableError, match="127.0.0.1"):
        Store("postgresql+psycopg2://nobody@127.0.0.1:1/none")


def test_memory_sqlite_rejected() -> None:
    with pytest.raises(ConfigError, match="in-memory"):
        Store("sqlite://")


def test_sqlite_pragmas_applied(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'sub' / 'db.sqlite'}") as store:
        with store.engine.connect() as connection:
            journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
            busy_ms = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert journal == "wal"
    assert foreign_keys == 1
    assert busy_ms == 30000
