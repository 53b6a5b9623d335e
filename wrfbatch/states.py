"""Run, stage and job states shared by every layer, and the records that carry them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class RunState(str, enum.Enum):
    """State of a run, as the Cloudrun API reports it in ``status``."""

    CREATED = "created"
    READY = "ready"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPED = "stopped"
    DONE = "done"
    ERROR = "error"

    @property
    def final(self) -> bool:
        """True for states that no poll result moves the run out of."""
        return self in (RunState.STOPPED, RunState.DONE, RunState.ERROR)

    @property
    def running(self) -> bool:
        """True while the run has jobs in the scheduler."""
        return self in (RunState.STARTING, RunState.ACTIVE)


class Stage(str, enum.Enum):
    """A step of a run that becomes one batch job."""

    REAL = "real"
    IDEAL = "ideal"
    WRF = "wrf"

    @property
    def program(self) -> str:
        """Name of the WRF executable the stage runs."""
        return f"{self.value}.exe"


class JobState(str, enum.Enum):
    """State of one batch job, with Slurm's names."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    SUSPENDED = "SUSPENDED"
    UNKNOWN = "UNKNOWN"

    @property
    def final(self) -> bool:
        """True once the job has ended, successfully or not."""
        return self not in (
            JobState.PENDING,
            JobState.RUNNING,
            JobState.COMPLETING,
            JobState.SUSPENDED,
            JobState.UNKNOWN,
        )

    @classmethod
    def parse(cls, slurm_state: str) -> JobState:
        """Map a Slurm state string (``CANCELLED by 1000``, ``PD``) to a JobState."""
        word = slurm_state.strip().split(" ")[0].rstrip("+").upper()
        word = _SLURM_SHORT_STATES.get(word, word)
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN


_SLURM_SHORT_STATES = {
    "PD": "PENDING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "CD": "COMPLETED",
    "F": "FAILED",
    "CA": "CANCELLED",
    "TO": "TIMEOUT",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PR": "PREEMPTED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "S": "SUSPENDED",
    "CONFIGURING": "PENDING",
    "CF": "PENDING",
    "RESIZING": "RUNNING",
    "REQUEUED": "PENDING",
    "REQUEUE_HOLD": "PENDING",
    "REQUEUE_FED": "PENDING",
    "STOPPED": "SUSPENDED",
    "ST": "SUSPENDED",
}


@dataclass
class JobRecord:
    """One job as the scheduler reports it; the fields follow pyslurm's job records."""

    job_id: str
    name: str
    state: JobState
    slurm_state: str = ""
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    partition: str | None = None


@dataclass
class StageStateFile:
    """Contents of the state file that a stage's batch script writes in the run directory.

    The script writes the first fields when it starts and the rest when the
    program exits, so a missing ``exit_code`` means the stage has not ended
    (or was killed before it could write).
    """

    stage: str
    job_id: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    success_line: bool = False
    host: str | None = None

    @property
    def ended(self) -> bool:
        return self.exit_code is not None


def parse_state_file(text: str) -> StageStateFile | None:
    """Parse a state file of ``key=value`` lines; later lines override earlier ones.

    Returns None when the text has no ``stage`` and ``job_id``, for example a
    file that is being written. Unknown keys are ignored so that a newer batch
    template can add fields.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    if not values.get("stage") or not values.get("job_id"):
        return None
    exit_code = values.get("exit_code", "")
    return StageStateFile(
        stage=values["stage"],
        job_id=values["job_id"],
        start_time=_parse_time(values.get("start_time")),
        end_time=_parse_time(values.get("end_time")),
        exit_code=int(exit_code) if exit_code.lstrip("-").isdigit() else None,
        success_line=values.get("success_line") == "yes",
        host=values.get("host") or None,
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
