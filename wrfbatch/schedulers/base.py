"""The scheduler interface: submit, query and cancel batch jobs.

A scheduler builds the batch system's commands and parses their output. It
runs them through a :class:`~wrfbatch.transports.base.Transport` and has no
notion of runs. Batch scripts are rendered from templates elsewhere and
are already in the run directory when :meth:`Scheduler.submit` is called.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..states import JobRecord
from ..transports.base import Transport


@dataclass
class CheckResult:
    """One line of ``wrfbatch check``: what was checked, whether it passed, and why not."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class QueryResult:
    """Jobs found by one query, and the ids the scheduler no longer lists."""

    jobs: dict[str, JobRecord] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)


class Scheduler(abc.ABC):
    """Submits, queries and cancels jobs on one cluster."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    @abc.abstractmethod
    def submit(
        self, script_path: str, *, workdir: str, after_ok: str | None = None
    ) -> str:
        """Submit a batch script that is already on the cluster; return the job id.

        ``after_ok`` is a job id that must complete with exit code 0 before this
        job may start. Raises SubmitError with the scheduler's reason when the
        job is rejected, and SchedulerUnavailableError when the controller does
        not respond.
        """

    @abc.abstractmethod
    def query(self, job_ids: Iterable[str]) -> QueryResult:
        """Return the state of many jobs with one scheduler command.

        Ids the scheduler no longer lists (purged) are put in ``missing``, not
        reported as an error.
        """

    @abc.abstractmethod
    def find_by_name(self, job_names: Iterable[str]) -> list[JobRecord]:
        """Return the jobs (in any state still known) whose names are in ``job_names``."""

    @abc.abstractmethod
    def cancel(self, job_ids: Iterable[str]) -> None:
        """Cancel jobs; ids that already ended or are unknown are ignored."""

    def accounting(self, job_ids: Iterable[str]) -> dict[str, JobRecord]:
        """Return final records of ended jobs from accounting; empty without accounting."""
        return {}

    def check(self) -> list[CheckResult]:
        """Check that the scheduler's commands work; used by ``wrfbatch check``."""
        return []
