"""The store: runs, input files, jobs, users, tokens, shares and poller leases.

Every method runs in its own transaction and returns plain records
(:mod:`wrfbatch.store.records`), so callers never handle sessions. A method
that cannot reach the database raises
:class:`~wrfbatch.errors.StoreUnavailableError`, in addition to the errors
that its docstring lists.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import URL

from ..errors import ConfigError
from ._auth import AuthMethods
from ._base import DEFAULT_BUSY_TIMEOUT_S, translated_errors
from ._files import InputFileMethods
from ._jobs import JobMethods
from ._leases import LeaseMethods
from ._runs import RunMethods
from .migrate import current_revision, head_revision, upgrade_engine

logger = logging.getLogger(__name__)


class Store(RunMethods, InputFileMethods, JobMethods, AuthMethods, LeaseMethods):
    """Persistent state of wrfbatch in a SQLite file or a PostgreSQL database.

    Safe to share between threads, and between processes that open the same
    database. ``url`` is a SQLAlchemy URL such as ``sqlite:////var/lib/wrfbatch/wrfbatch.db``
    or ``postgresql+psycopg2://wrfbatch@dbhost/wrfbatch``.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        upgrade_schema: bool = True,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        """Open the database and upgrade its schema to this release's head revision.

        With ``upgrade_schema=False`` the schema must already be at head, for
        sites that run :func:`wrfbatch.store.upgrade` themselves.

        Raises:
            ConfigError: the URL is invalid, its driver is missing, or the schema
                is not at head and ``upgrade_schema`` is False.
            StoreUnavailableError: the database cannot be reached.
        """
        super().__init__(url, busy_timeout_s)
        try:
            if upgrade_schema:
                upgrade_engine(self.engine)
            else:
                self._check_schema_at_head()
        except BaseException:
            self.engine.dispose()
            raise
        logger.debug("opened store %s", self.url.render_as_string(hide_password=True))

    def _check_schema_at_head(self) -> None:
        head = head_revision()
        with translated_errors(self.url), self.engine.connect() as connection:
            revision = current_revision(connection)
        if revision != head:
            raise ConfigError(
                f"database schema of {self.url.render_as_string(hide_password=True)} is at "
                f"revision {revision}, this release needs {head}: run the schema upgrade"
            )

    def __enter__(self) -> Store:
        return self
