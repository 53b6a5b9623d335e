"""The run lifecycle: create, upload, setup, start, stop, delete, get and list.

This is the only module that sets the order of the steps. States move
``created -> ready -> starting -> active -> done | error``, with ``stopped``
from a running state. Every transition is a guarded update in the store, so
two callers racing on one run cannot both win: the loser gets ConflictError.
"""

from __future__ import annotations

import io
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..config import Settings
from ..errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RemoteCommandError,
    SchedulerUnavailableError,
    SubmitError,
    TransferError,
    TransportError,
)
from ..models import ComputeOption, InputFile, Run, SetupResult
from ..names import check_file_name, check_run_id
from ..namelist import read_namelist, summarize, valid_core_counts
from ..namelist.cost import (
    DEFAULT_CORE_SECONDS_PER_CELL_STEP,
    calibrated_cost,
    cell_steps,
    estimate_wall_time_s,
)
from ..namelist.decomposition import decomposition_problem, stage_problems
from ..namelist.preflight import preflight
from ..namelist.params import NamelistParams, render_namelist
from ..namelist.parse import NamelistSummary
from ..rendering import TemplateRenderer
from ..schedulers.base import CheckResult
from ..states import RunState
from ..store import Store
from ..store.records import InputFileRecord, RunRecord
from .clusters import ClusterHandle, ClusterRegistry
from .refresh import ClusterRefresher, running_runs
from .submit import StageSubmitter, real_stage_tasks
from .uploads import UploadArea
from .calibration import finished_run
from .views import run_view, summary_json

logger = logging.getLogger(__name__)

NAMELIST = "namelist.input"
# Logs a user may download besides the output files, while the run goes on too.
DOWNLOADABLE_LOGS = ("rsl.out.0000", "rsl.error.0000")
# How many of a cluster's newest finished runs calibrate the run-time estimates.
CALIBRATION_RUNS = 50
# States in which the run's inputs may change: never while jobs exist.
_EDITABLE = {RunState.CREATED, RunState.READY, RunState.STOPPED, RunState.ERROR}


def _now() -> datetime:
    return datetime.now(UTC)


class RunManager:
    """The documented entry point of the library: one instance per service process.

    Every method takes and returns plain values and :mod:`wrfbatch.models`
    objects, blocks until done, and raises only :mod:`wrfbatch.errors` classes.
    """

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings.service.resolved_database_url)
        self.clusters = ClusterRegistry(settings)
        self.uploads = UploadArea(settings.service.data_dir)
        self.renderer = TemplateRenderer(settings.service.template_dir)
        self._submitter = StageSubmitter(self.store, self.renderer)
        self._refresher = ClusterRefresher(self.store, settings.service.stall_timeout_s)

    # ------------------------------------------------------------------ queries

    def versions(self, cluster: str | None = None) -> list[str]:
        """Return the WRF versions that the cluster has an install for."""
        _, config = self.settings.cluster(cluster)
        return sorted(config.wrf, key=lambda v: tuple(int(p) for p in v.split(".")))

    def cluster_names(self) -> list[str]:
        return self.clusters.names()

    def get(self, run_id: str) -> Run:
        """Return a run with the jobs of its current attempt; NotFoundError if unknown."""
        record = self.store.get_run(check_run_id(run_id))
        return run_view(record, self.store.jobs_for_run(record.id, record.attempt))

    def list_runs(
        self, user: str | None, is_admin: bool, limit: int = 100, offset: int = 0
    ) -> list[Run]:
        """Return the runs a user owns or was given access to (all for admins), newest first."""
        records = self.store.list_runs(user=user, is_admin=is_admin, limit=limit, offset=offset)
        return [run_view(record) for record in records]

    def check(self, cluster: str | None = None) -> list[CheckResult]:
        """Check a cluster's transport, scheduler and WRF installs (``wrfbatch check``)."""
        handle = self.clusters.get(cluster)
        results = [self._check_transport(handle)]
        if not results[0].ok:
            return results
        results += handle.scheduler.check()
        for version, install in sorted(handle.config.wrf.items()):
            found = handle.transport.exists(f"{install.path}/main/wrf.exe")
            detail = install.path if found else f"{install.path}/main/wrf.exe not found"
            results.append(CheckResult(f"WRF {version} install", found, detail))
        return results

    @staticmethod
    def _check_transport(handle: ClusterHandle) -> CheckResult:
        try:
            result = handle.transport.run(["id", "-un"])
        except TransportError as exc:
            return CheckResult(f"{handle.config.transport} access", False, str(exc))
        return CheckResult(f"{handle.config.transport} access", True,
                           f"logged in as {result.stdout.strip()} on {handle.transport.host}")

    # ------------------------------------------------------------------ create and upload

    def create_run(
        self,
        owner: str,
        version: str,
        run_name: str | None = None,
        cluster: str | None = None,
        parameters: NamelistParams | None = None,
    ) -> Run:
        """Create a run for a WRF version; InvalidInputError lists the valid versions.

        With ``parameters``, the run's namelist.input is rendered from the
        version family's template at once; uploading a namelist.input later
        replaces it.
        """
        cluster_name, _ = self.settings.cluster(cluster)
        if not isinstance(version, str) or not version:
            raise InvalidInputError("missing WRF version: give one, for example version=3.9")
        valid = self.versions(cluster_name)
        if version not in valid:
            raise InvalidInputError(
                f"WRF version {version!r} is not available on cluster {cluster_name}; "
                f"valid versions: {', '.join(valid) or 'none configured'}"
            )
        if run_name is not None and (len(run_name) > 200 or not run_name.isprintable()):
            raise InvalidInputError("invalid run_name: use at most 200 printable characters")
        run_id = secrets.token_hex(6)
        record = self.store.create_run(
            run_id=run_id, owner=owner, version=version, cluster=cluster_name,
            run_name=run_name or run_id,
        )
        logger.info("run %s: created for WRF %s on %s by %s", run_id, version, cluster_name, owner)
        if parameters is not None:
            text = render_namelist(parameters, version, self.renderer)
            self.upload(run_id, NAMELIST, io.BytesIO(text.encode()))
            record = self.store.get_run(run_id)
        return run_view(record)

    def upload(
        self, run_id: str, filename: str, source: BinaryIO, *, max_bytes: int | None = None
    ) -> InputFile:
        """Store an input file; the run goes back to ``created`` until setup runs again.

        Raises ConflictError while the run has jobs, PayloadTooLargeError past
        the limit (the earlier file of that name is kept).
        """
        record = self.store.get_run(check_run_id(run_id))
        check_file_name(filename)
        self._require(record.status, _EDITABLE, "upload files",
                      "stop the run first, or wait until it ends")
        if record.deleted:
            raise ConflictError(f"run {run_id} was deleted; create a new run")
        limit = self.settings.service.max_upload_bytes if max_bytes is None else max_bytes
        stored = self.uploads.save(run_id, filename, source, limit)
        file_record = self.store.put_input_file(run_id, filename, stored.size_bytes,
                                                  stored.sha256)
        if record.status != RunState.CREATED:
            self.store.update_run(run_id, {"status": RunState.CREATED}, expected_status=_EDITABLE)
        logger.info("run %s: uploaded %s (%d bytes)", run_id, filename, stored.size_bytes)
        return InputFile(fileid=str(file_record.id), filename=filename, size=stored.size_bytes)

    # ------------------------------------------------------------------ setup

    def read_summary(self, run_id: str) -> NamelistSummary:
        """Parse the run's uploaded namelist.input; NamelistError when missing or invalid."""
        path = self.uploads.path(run_id, NAMELIST)
        if not path.is_file():
            raise InvalidInputError(
                f"run {run_id} has no namelist.input: upload one, then call setup"
            )
        return summarize(read_namelist(path.read_text(errors="replace")))

    def setup(self, run_id: str) -> SetupResult:
        """Check the namelist and inputs, stage them to the cluster, and list compute options.

        The run becomes ``ready`` only when every required input file is
        uploaded; otherwise it stays ``created`` and the result lists what is
        missing.
        """
        record = self.store.get_run(check_run_id(run_id))
        self._require(record.status, _EDITABLE, "set up", "stop the run first")
        handle = self.clusters.get(record.cluster)
        path = self.uploads.path(run_id, NAMELIST)
        if not path.is_file():
            raise InvalidInputError(
                f"run {run_id} has no namelist.input: upload one, then call setup")
        install = handle.config.wrf.get(record.version)
        checked = preflight(path.read_text(errors="replace"), record.version,
                            install.flavour if install else "plain", path.parent,
                            {f.filename for f in record.input_files})
        summary, missing = checked.summary, checked.missing
        options = self.compute_options(summary, handle.config.max_cores, record.cluster)
        if not options:
            raise InvalidInputError(
                f"no core count up to {handle.config.max_cores} suits this grid: each MPI task "
                "needs at least 10 cells in x and y; enlarge e_we and e_sn or ask for fewer cores"
            )
        changes = {"namelist_summary": {**summary_json(summary), "cell_steps": cell_steps(summary),
                                        "io_tasks": summary.io_tasks},
                   "required_input_files": checked.required}
        if not missing:
            self._stage_inputs(handle, record.id)
            changes.update(status=RunState.READY, error_code=None, error_message=None)
        record = self.store.update_run(run_id, changes, expected_status=_EDITABLE)
        logger.info("run %s: setup %s, %d input files missing, %d warnings", run_id,
                    record.status.value, len(missing), len(checked.warnings))
        return SetupResult(run=run_view(record), required_input_files=checked.required,
                           missing_input_files=missing, compute_options=options,
                           warnings=checked.warnings)

    def compute_options(
        self, summary: NamelistSummary, max_cores: int, cluster: str | None = None
    ) -> list[ComputeOption]:
        """Return the valid core counts up to max_cores with the wrf stage's estimated time.

        The cost per cell-step comes from the cluster's finished runs when it has
        any (see wrfbatch.namelist.cost), else from the documented default.
        """
        finished = []
        if cluster is not None:
            records = self.store.list_runs(None, True, limit=CALIBRATION_RUNS,
                                           status=RunState.DONE, cluster=cluster)
            # One query for all their jobs: one query per run made setup 130 ms slower with
            # 50 finished runs (benchmarks/api.py, SQLite).
            jobs = self.store.jobs_for_runs({record.id: record.attempt for record in records})
            for record in records:
                sample = finished_run(record, jobs[record.id])
                if sample is not None:
                    finished.append(sample)
        cost = calibrated_cost(finished) or DEFAULT_CORE_SECONDS_PER_CELL_STEP
        return [
            ComputeOption(cores=cores, time=estimate_wall_time_s(summary, cores, cost))
            for cores in valid_core_counts(summary, max_cores)
        ]

    def _stage_inputs(self, handle: ClusterHandle, run_id: str) -> None:
        """Copy every uploaded file to the run directory; unchanged files are skipped."""
        self._check_install(handle, self.store.get_run(run_id).version)
        run_dir = handle.run_dir(run_id)
        handle.transport.make_dirs(f"{run_dir}/.wrfbatch")
        pending = [f for f in self.store.get_run(run_id).input_files if not f.staged]
        if not pending:
            return
        # One batch, so that the SSH transport moves every file over one connection.
        try:
            results = handle.transport.upload_many(
                [(self.uploads.path(run_id, f.filename), f"{run_dir}/{f.filename}")
                 for f in pending], sha256=[self._upload_digest(run_id, f) for f in pending])
        except (TransferError, RemoteCommandError) as exc:
            # The copy itself failed (a full disk, for example), not the connection.
            self._fail_staging(run_id, exc)
            raise
        for file, result in zip(pending, results, strict=True):
            self.store.mark_input_file_staged(run_id, file.filename, result.sha256)
            logger.debug("run %s: staged %s (%s)", run_id, file.filename,
                         "unchanged" if result.skipped else f"{result.bytes_moved} bytes")

    def _upload_digest(self, run_id: str, file: InputFileRecord) -> str | None:
        """Return the SHA-256 computed when the service received ``file``, or None when the
        stored copy has changed since (another size, or written after it was recorded), so
        that the transport hashes the bytes it sends instead."""
        info = self.uploads.path(run_id, file.filename).stat()
        if info.st_size != file.size_bytes or info.st_mtime > file.time_uploaded.timestamp():
            logger.warning("run %s: the stored upload %s changed after it was received; "
                           "staging records the SHA-256 of its current content",
                           run_id, file.filename)
            return None
        return file.sha256

    def _fail_staging(self, run_id: str, exc: TransportError) -> None:
        """Mark a run ``error`` when an input could not be copied (a full disk, for example).

        A dropped connection is not a TransferError, so it leaves the run as it was.
        """
        logger.warning("run %s: staging failed: %s", run_id, exc)
        self.store.update_run(run_id, {"status": RunState.ERROR, "error_code": "staging",
                                       "error_message": exc.message}, expected_status=_EDITABLE)

    @staticmethod
    def _check_install(handle: ClusterHandle, version: str) -> None:
        """Raise NotFoundError when the version's WRF install lacks its programs."""
        install = handle.config.wrf[version]
        programs = [f"{install.path}/main/{name}" for name in ("real.exe", "wrf.exe")]
        if not all(handle.transport.exists(path) for path in programs):
            raise NotFoundError(
                f"the WRF {version} install of cluster {handle.name} is incomplete: "
                f"{install.path}/main/ must contain real.exe and wrf.exe; ask the administrator "
                f"to fix its path in the configuration (on the embedded default, 'wrfbatch "
                f"demo' or 'wrfbatch-standin install' creates stand-in installs)"
            )

    # ------------------------------------------------------------------ start, stop, delete

    def start(self, run_id: str, cores: int) -> Run:
        """Submit the run's jobs with ``cores`` MPI tasks for wrf.exe.

        Raises ConflictError unless the run is ``ready``, and InvalidInputError
        for a core count that the grid does not allow (with the valid ones).
        SchedulerUnavailableError means the controller did not respond: the run
        stays ``ready`` and a later start submits exactly once. SubmitError
        means the scheduler rejected a job, and the run stays ``ready`` too.
        """
        record = self.store.get_run(check_run_id(run_id))
        self._require(record.status, {RunState.READY}, "start", self._start_fix(record))
        handle = self.clusters.get(record.cluster)
        summary = self.read_summary(run_id)
        self._check_cores(summary, cores, handle.config.max_cores)
        tasks = {"real": real_stage_tasks(summary, cores, handle.config.real_cores),
                 "wrf": cores}
        problems = stage_problems(summary, tasks)
        if problems:
            valid = valid_core_counts(summary, handle.config.max_cores)
            raise InvalidInputError(f"cores = {cores} is not valid for this grid: "
                                    f"{'; '.join(problems)}. Largest valid core counts: "
                                    f"{', '.join(map(str, valid[-8:])) or 'none'}")
        attempt = record.attempt + 1
        record = self.store.update_run(run_id, {
            "status": RunState.STARTING, "attempt": attempt, "cores": cores,
            "error_code": None, "error_message": None, "percent_complete": 0.0,
            "remaining_time_s": None, "time_started": _now(), "time_stopped": None,
            "output_files": [], "output_size_bytes": 0,
        }, expected_status={RunState.READY})
        try:
            self._submitter.submit_all(handle, record, summary)
        except (SchedulerUnavailableError, SubmitError, TransportError) as exc:
            self._undo_start(record.id, attempt, exc)
            raise
        logger.info("run %s: started attempt %d on %d cores", run_id, attempt, cores)
        return self.get(run_id)

    def _undo_start(self, run_id: str, attempt: int, exc: Exception) -> None:
        """Put a run whose submission failed back to ``ready`` with the same attempt number.

        Keeping the attempt number means a retry searches the scheduler for
        this attempt's job names first, so a job whose sbatch output was lost
        is found instead of submitted twice.
        """
        logger.warning("run %s: start failed, back to ready: %s", run_id, exc)
        if isinstance(exc, SubmitError):
            self._submitter.cancel_attempt(self.clusters.get(self.store.get_run(run_id).cluster),
                                           run_id, attempt)
        self.store.update_run(run_id, {"status": RunState.READY, "attempt": attempt - 1,
                                       "time_started": None},
                              expected_status={RunState.STARTING})

    @staticmethod
    def _check_cores(summary: NamelistSummary, cores: int, max_cores: int) -> None:
        if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
            raise InvalidInputError(f"invalid cores {cores!r}: give a positive whole number")
        if cores > max_cores:
            raise InvalidInputError(
                f"cores = {cores} exceeds this cluster's limit of {max_cores}")
        problem = decomposition_problem(summary, cores - summary.io_tasks)
        if problem:
            valid = valid_core_counts(summary, max_cores)
            raise InvalidInputError(
                f"cores = {cores} is not valid for this grid: {problem}. Valid core counts: "
                f"{', '.join(map(str, valid[-8:]))}"
            )

    def stop(self, run_id: str) -> Run:
        """Cancel every job of a running run and keep its files; ConflictError otherwise."""
        record = self.store.get_run(check_run_id(run_id))
        self._require(record.status, {RunState.STARTING, RunState.ACTIVE}, "stop",
                      "only a starting or active run can be stopped")
        handle = self.clusters.get(record.cluster)
        self._submitter.cancel_attempt(handle, run_id, record.attempt)
        self.store.update_run(run_id, {"status": RunState.STOPPED, "time_stopped": _now(),
                                       "remaining_time_s": None},
                              expected_status={RunState.STARTING, RunState.ACTIVE})
        self._refresher.collect_outputs(handle, run_id)
        logger.info("run %s: stopped", run_id)
        return self.get(run_id)

    def delete(self, run_id: str) -> Run:
        """Cancel the run's jobs, remove its files here and on the cluster, keep its metadata."""
        record = self.store.get_run(check_run_id(run_id))
        handle = self.clusters.get(record.cluster)
        changes: dict[str, object] = {"deleted": True, "disk_usage_bytes": 0,
                                      "remaining_time_s": None}
        if record.status.running:
            self._submitter.cancel_attempt(handle, run_id, record.attempt)
            changes.update(status=RunState.STOPPED, time_stopped=_now())
        # A cancelled job (here or by an earlier stop) still writes its state file while it
        # ends: removing the directory before then would leave that file behind.
        self._submitter.wait_until_ended(handle, run_id, record.attempt)
        handle.transport.remove_tree(handle.run_dir(run_id))
        self.uploads.remove_run(run_id)
        for file in record.input_files:
            self.store.mark_input_file_staged(run_id, file.filename, None)
        self.store.update_run(run_id, changes)
        logger.info("run %s: deleted", run_id)
        return self.get(run_id)

    # ------------------------------------------------------------------ outputs

    def download_output(self, run_id: str, filename: str) -> Path:
        """Copy one of a run's output files (or rank 0's rsl logs) here; return its path.

        The copy is kept in ``<data_dir>/downloads/<run_id>/`` and refreshed when
        the cluster's file changes. Raises NotFoundError for a file that is not
        an output of the run, and ConflictError after the run was deleted.
        """
        record = self.store.get_run(check_run_id(run_id))
        check_file_name(filename)
        if record.deleted:
            raise ConflictError(f"run {run_id} was deleted, so its files are gone")
        outputs = {f["filename"] for f in record.output_files} | set(DOWNLOADABLE_LOGS)
        if filename not in outputs:
            listed = ", ".join(sorted(outputs - set(DOWNLOADABLE_LOGS))[:5]) or "none yet"
            raise NotFoundError(
                f"{filename} is not an output file of run {run_id}; its output files: {listed}"
            )
        handle = self.clusters.get(record.cluster)
        local = self.settings.service.data_dir / "downloads" / run_id / filename
        remote = f"{handle.run_dir(run_id)}/{filename}"
        if filename in DOWNLOADABLE_LOGS and not handle.transport.exists(remote):
            raise NotFoundError(f"run {run_id} has no {filename} yet")
        handle.transport.download(remote, local)
        logger.info("run %s: downloaded %s", run_id, filename)
        return local

    # ------------------------------------------------------------------ polling

    def refresh(self, cluster: str | None = None) -> None:
        """Update the state, progress and outputs of a cluster's running runs.

        Uses a constant number of remote commands whatever the number of runs.
        Raises TransportError or SchedulerUnavailableError when the cluster
        cannot be reached; runs then keep their state.
        """
        self._refresher.refresh(self.clusters.get(cluster))

    def reconcile(self) -> None:
        """Finish interrupted starts after a service restart, then refresh every cluster.

        A run left ``starting`` may have jobs whose ids were never saved, or
        stages never submitted: the submitter looks each job up by name and
        submits only what the scheduler does not have.
        """
        for name in self.cluster_names():
            handle = self.clusters.get(name)
            for record in running_runs(self.store, name):
                if record.status == RunState.STARTING:
                    self._resume_start(handle, record.id)
            try:
                self.refresh(name)
            except (TransportError, SchedulerUnavailableError) as exc:
                logger.warning("cluster %s: reconcile refresh failed: %s", name, exc)

    def _resume_start(self, handle: ClusterHandle, run_id: str) -> None:
        record = self.store.get_run(run_id)
        try:
            self._submitter.submit_all(handle, record, self.read_summary(run_id))
        except (SchedulerUnavailableError, TransportError) as exc:
            logger.warning("run %s: resuming start failed, will retry: %s", run_id, exc)
        except SubmitError as exc:
            self.store.update_run(run_id, {"status": RunState.ERROR, "error_code": "submit",
                                           "error_message": str(exc)})

    def render(self, run_id: str, cores: int) -> dict[str, str]:
        """Return the namelist and batch scripts a start with ``cores`` would use."""
        record = self.store.get_run(check_run_id(run_id))
        handle = self.clusters.get(record.cluster)
        summary = self.read_summary(run_id)
        scripts = self._submitter.render_scripts(handle, record, summary, cores,
                                                 record.attempt + 1)
        namelist = self.uploads.path(run_id, NAMELIST).read_text(errors="replace")
        return {NAMELIST: namelist, **{f"{stage.value}.sh": text for stage, text in scripts}}

    def close(self) -> None:
        self.clusters.close()
        self.store.close()

    @staticmethod
    def _start_fix(record: RunRecord) -> str:
        """Say what a run must go through before it can start."""
        if record.status != RunState.CREATED:
            return "call setup again to start a new attempt"
        uploaded = {f.filename for f in record.input_files}
        missing = [name for name in record.required_input_files if name not in uploaded]
        if not record.required_input_files:
            return "call setup first"
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                               else "")
            return f"setup found missing input files ({shown}); upload them and call setup again"
        return "inputs changed since the last setup; call setup again"

    @staticmethod
    def _require(state: RunState, allowed: set[RunState], action: str, fix: str) -> None:
        if state not in allowed:
            raise ConflictError(f"cannot {action} a run that is {state.value}: {fix}")


__all__ = ["RunManager"]
