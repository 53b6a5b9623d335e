"""SQLAlchemy models of the store's tables.

The schema is owned by the Alembic migrations in ``migrations/versions``: a change
here needs a new revision, and ``tests/test_store_schema.py`` fails until the
migrated schema and these models agree. Callers never see these classes; the
store returns the dataclasses of :mod:`wrfbatch.store.records`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Constraint names that Alembic can reproduce on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite keeps no time zone, so values are converted to UTC before they are
    written and read back with ``tzinfo=UTC``. A naive datetime is rejected
    because its zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass an aware datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Run(Base):
    """One WRF simulation and everything the service reports about it."""

    __tablename__ = "runs"
    __table_args__ = (
        # list_runs sorts by (time_created, id), for everybody or for one owner.
        Index("ix_runs_owner_time_created", "owner", "time_created", "id"),
        Index("ix_runs_time_created", "time_created", "id"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_cluster_status", "cluster", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    run_name: Mapped[str] = mapped_column(String(255), default="")
    model: Mapped[str] = mapped_column(String(16), default="wrf")
    version: Mapped[str] = mapped_column(String(16))
    cluster: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # A problem that has not stopped the run (for example a stalled log); cleared when gone.
    warning: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cores: Mapped[int | None] = mapped_column(Integer)
    namelist_summary: Mapped[dict[str, Any] | None]
    percent_complete: Mapped[float | None] = mapped_column(Float)
    remaining_time_s: Mapped[float | None] = mapped_column(Float)
    output_files: Mapped[list[Any]] = mapped_column(default=list)
    output_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    required_input_files: Mapped[list[Any]] = mapped_column(default=list)
    time_created: Mapped[datetime] = mapped_column(default=utc_now)
    time_started: Mapped[datetime | None]
    time_stopped: Mapped[datetime | None]
    time_updated: Mapped[datetime] = mapped_column(default=utc_now, onupdate=utc_now)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    row_version: Mapped[int] = mapped_column(Integer)

    input_files: Mapped[list[InputFile]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="InputFile.filename"
    )
    shares: Mapped[list[RunShare]] = relationship(cascade="all, delete-orphan")

    __mapper_args__ = {"version_id_col": row_version}


class InputFile(Base):
    """An uploaded input file of a run; uploading the same name again replaces it."""

    __tablename__ = "input_files"
    __table_args__ = (UniqueConstraint("run_id", "filename"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    time_uploaded: Mapped[datetime] = mapped_column(default=utc_now)
    # SHA-256 of the copy in the run directory on the cluster; None until staged.
    staged_sha256: Mapped[str | None] = mapped_column(String(64))

    run: Mapped[Run] = relationship(back_populates="input_files")


class Job(Base):
    """One batch job of one stage of one attempt of a run."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("run_id", "attempt", "stage"),
        Index("ix_jobs_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(16))
    job_name: Mapped[str] = mapped_column(String(128))
    # The scheduler's job id; None until sbatch has returned it.
    job_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    slurm_state: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    time_submitted: Mapped[datetime | None]
    time_started: Mapped[datetime | None]
    time_ended: Mapped[datetime | None]


class User(Base):
    """A person or program that uses the service with an API token."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    time_created: Mapped[datetime] = mapped_column(default=utc_now)


class Token(Base):
    """An API token, kept only as the SHA-256 hex digest of its text."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_name: Mapped[str] = mapped_column(
        ForeignKey("users.name", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(255), default="")
    # The first characters of the token, shown in listings and used to find candidates.
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    time_created: Mapped[datetime] = mapped_column(default=utc_now)
    time_revoked: Mapped[datetime | None]
    time_last_used: Mapped[datetime | None]


class RunShare(Base):
    """A user other than the owner who may read a run."""

    __tablename__ = "run_shares"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    user_name: Mapped[str] = mapped_column(
        ForeignKey("users.name", ondelete="CASCADE"), primary_key=True, index=True
    )


class PollerLease(Base):
    """The service process that polls a cluster, until ``expires_at``."""

    __tablename__ = "poller_leases"

    cluster: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime]
