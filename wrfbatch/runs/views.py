"""Conversion of stored records into the API's run objects."""

from __future__ import annotations

from typing import Any

from ..models import InputFile, JobInfo, ModelInfo, OutputFile, Run, RunError
from ..namelist.parse import NamelistSummary
from ..store.records import RunJob, RunRecord


def summary_json(summary: NamelistSummary) -> dict[str, Any]:
    """Return the namelist facts that a run object shows and that progress needs."""
    return {
        "domains": summary.max_dom,
        "domain_shape": [[we, sn] for we, sn in zip(summary.e_we, summary.e_sn, strict=True)],
        "dt": summary.time_step,
        "dx": summary.dx[0],
        "dy": summary.dy[0],
        "dz": summary.e_vert[0],
        "start_time": summary.start.isoformat(),
        "end_time": summary.end.isoformat(),
        "output_interval": summary.history_interval_min[0],
    }


def run_view(record: RunRecord, jobs: list[RunJob] | None = None) -> Run:
    """Build the API run object from a stored run and the jobs of its current attempt."""
    summary = record.namelist_summary or {}
    error = None
    if record.error_message:
        error = RunError(code=record.error_code or "unknown", message=record.error_message)
    job_infos = [
        JobInfo(stage=j.stage.value, attempt=j.attempt, job_id=j.job_id, job_name=j.job_name,
                state=j.state.value, reason=j.reason, exit_code=j.exit_code)
        for j in jobs or []
    ]
    return Run(
        id=record.id,
        run_name=record.run_name,
        status=record.status.value,
        error=error,
        model=ModelInfo(name=record.model, version=record.version, **summary),
        owner=record.owner,
        cluster=record.cluster,
        cores=record.cores,
        input_files=[
            InputFile(fileid=str(f.id), filename=f.filename, size=f.size_bytes)
            for f in record.input_files
        ],
        output_files=[OutputFile(**f) for f in record.output_files],
        output_size=record.output_size_bytes,
        disk_usage=record.disk_usage_bytes,
        percent_complete=record.percent_complete,
        remaining_time=record.remaining_time_s,
        stage=_current_stage(job_infos),
        jobs=job_infos,
        warning=record.warning,
        deleted=record.deleted,
        time_created=record.time_created,
        time_started=record.time_started,
        time_stopped=record.time_stopped,
    )


def _current_stage(jobs: list[JobInfo]) -> str | None:
    """Return the stage that runs now, or that ended the run: the first not completed."""
    for job in jobs:
        if job.state != "COMPLETED":
            return job.stage
    return jobs[-1].stage if jobs else None
