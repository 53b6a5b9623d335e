"""Alembic environment of the store.

:func:`wrfbatch.store.migrate.upgrade` passes an open connection in
``config.attributes["connection"]``. The ``alembic`` command line instead
connects to ``-x url=...``, or else to the ``sqlalchemy.url`` of its configuration::

    alembic -c wrfbatch/store/alembic.ini -x url=sqlite:////tmp/dev.db upgrade head
    alembic -c wrfbatch/store/alembic.ini -x url=sqlite:////tmp/dev.db revision \
        --autogenerate -m "Add a column"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from wrfbatch.store.models import Base


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things, so later revisions rebuild tables there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    engine = create_engine(url or context.config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as new_connection:
        _run_on(new_connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them on a database")
_run_online()
