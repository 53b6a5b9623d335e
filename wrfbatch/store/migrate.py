"""Schema migrations: bring a database to the schema of this wrfbatch release.

The Alembic scripts ship inside the package, so no ``alembic.ini`` is needed.
:class:`~wrfbatch.store.Store` upgrades on open; sysadmins who keep the schema
under their own control call :func:`upgrade` (``wrfbatch`` CLI) before a release
starts serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from ..errors import ConfigError
from ._base import _IMMEDIATE, make_engine, translated_errors

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock that serialises concurrent upgrades ("wrfb" in ASCII).
_UPGRADE_LOCK_KEY = 0x77726662


def alembic_config(connection: Connection | None = None) -> Config:
    """Return an Alembic configuration for the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest revision that this release's migrations define."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # the package ships at least one revision
    return head


def current_revision(connection: Connection) -> str | None:
    """Return the database's revision, or None for a database without the store's tables."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_engine(engine: Engine) -> str:
    """Upgrade the database behind ``engine`` to the head revision and return it.

    Concurrent callers are serialised (advisory lock on PostgreSQL, write lock on
    SQLite), so two services that start together migrate once.

    Raises:
        ConfigError: the database has a revision that this release does not know,
            which happens after a newer wrfbatch has migrated it.
        StoreUnavailableError: the database cannot be reached.
    """
    head = head_revision()
    with translated_errors(engine.url), engine.connect() as connection:
        connection = connection.execution_options(**{_IMMEDIATE: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _UPGRADE_LOCK_KEY})
            _upgrade_locked(connection, head)
    return head


def _upgrade_locked(connection: Connection, head: str) -> None:
    where = connection.engine.url.render_as_string(hide_password=True)
    before = current_revision(connection)
    if before == head:
        return
    try:
        command.upgrade(alembic_config(connection), "head")
    except CommandError as exc:
        raise ConfigError(
            f"cannot upgrade the schema of {where} from revision {before!r}: {exc}; "
            "a newer wrfbatch may have migrated it, so run that release or restore a backup"
        ) from exc
    logger.info("upgraded database schema of %s from revision %s to %s", where, before, head)


def upgrade(url: str | URL) -> str:
    """Upgrade the database at ``url`` to the head revision and return it (CLI hook)."""
    engine = make_engine(url)
    try:
        return upgrade_engine(engine)
    finally:
        engine.dispose()
