"""Create the first schema: runs, input files, jobs, users, tokens, shares, leases.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    _create_runs()
    _create_run_children()
    _create_users_and_tokens()
    op.create_table(
        "run_shares",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "user_name", name="pk_run_shares"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_shares_run_id_runs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_name"], ["users.name"], name="fk_run_shares_user_name_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_run_shares_user_name", "run_shares", ["user_name"])
    op.create_table(
        "poller_leases",
        sa.Column("cluster", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("cluster", name="pk_poller_leases"),
    )


def _create_runs() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("run_name", sa.String(255), nullable=False),
        sa.Column("model", sa.String(16), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("cluster", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=True),
        sa.Column("namelist_summary", sa.JSON(), nullable=True),
        sa.Column("percent_complete", sa.Float(), nullable=True),
        sa.Column("remaining_time_s", sa.Float(), nullable=True),
        sa.Column("output_files", sa.JSON(), nullable=False),
        sa.Column("output_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("disk_usage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("required_input_files", sa.JSON(), nullable=False),
        sa.Column("time_created", TIMESTAMP, nullable=False),
        sa.Column("time_started", TIMESTAMP, nullable=True),
        sa.Column("time_stopped", TIMESTAMP, nullable=True),
        sa.Column("time_updated", TIMESTAMP, nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("row_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_owner_time_created", "runs", ["owner", "time_created", "id"])
    op.create_index("ix_runs_time_created", "runs", ["time_created", "id"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_cluster_status", "runs", ["cluster", "status"])


def _create_run_children() -> None:
    op.create_table(
        "input_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("time_uploaded", TIMESTAMP, nullable=False),
        sa.Column("staged_sha256", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_input_files"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_input_files_run_id_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "filename", name="uq_input_files_run_id_filename"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("job_name", sa.String(128), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("slurm_state", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("time_submitted", TIMESTAMP, nullable=True),
        sa.Column("time_started", TIMESTAMP, nullable=True),
        sa.Column("time_ended", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_jobs_run_id_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "attempt", "stage", name="uq_jobs_run_id_attempt_stage"),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])


def _create_users_and_tokens() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("time_created", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_users"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("time_created", TIMESTAMP, nullable=False),
        sa.Column("time_revoked", TIMESTAMP, nullable=True),
        sa.Column("time_last_used", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.ForeignKeyConstraint(
            ["user_name"], ["users.name"], name="fk_tokens_user_name_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    op.create_index("ix_tokens_user_name", "tokens", ["user_name"])
    op.create_index("ix_tokens_prefix", "tokens", ["prefix"])


def downgrade() -> None:
    # Tables that hold foreign keys go before the tables they refer to.
    for table in ("poller_leases", "run_shares", "tokens", "users", "jobs", "input_files", "runs"):
        op.drop_table(table)
