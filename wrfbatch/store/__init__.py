"""Persistent state of wrfbatch: runs and their files and jobs, users, tokens, leases.

SQLAlchemy models with Alembic migrations, on a SQLite file (default) or PostgreSQL.
"""

from .migrate import upgrade
from .records import InputFileRecord, RunJob, RunRecord, TokenRecord, UserRecord
from .store import Store

__all__ = [
    "InputFileRecord",
    "RunJob",
    "RunRecord",
    "Store",
    "TokenRecord",
    "UserRecord",
    "upgrade",
]
