"""Plain-text tables and the progress line of ``wrfbatch runs`` and ``wrfbatch demo``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from ..models import Run

BAR_WIDTH = 30


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return rows as left-aligned columns under a header line."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def format_size(size_bytes: int) -> str:
    """Return a size in bytes as B, KiB, MiB or GiB."""
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def runs_table(runs: Sequence[Run]) -> str:
    """Return the table of ``wrfbatch runs list``."""
    headers = ("ID", "NAME", "OWNER", "VERSION", "CLUSTER", "STATUS", "CORES", "DONE %",
               "CREATED")
    rows = [(run.id, run.run_name, run.owner, run.model.version, run.cluster, run.status,
             run.cores, run.percent_complete, run.time_created) for run in runs]
    return format_table(headers, rows)


def run_details(run: Run) -> str:
    """Return the key/value view of ``wrfbatch runs show``, with its jobs and files."""
    fields = [
        ("id", run.id), ("name", run.run_name), ("owner", run.owner), ("cluster", run.cluster),
        ("status", run.status), ("stage", run.stage), ("WRF version", run.model.version),
        ("domains", run.model.domains), ("start time", run.model.start_time),
        ("end time", run.model.end_time), ("cores", run.cores),
        ("percent complete", run.percent_complete), ("remaining s", run.remaining_time),
        ("created", run.time_created), ("started", run.time_started),
        ("stopped", run.time_stopped), ("output size", format_size(run.output_size)),
    ]
    if run.error is not None:
        fields.append(("error", f"{run.error.code}: {run.error.message}"))
    parts = [format_table(("FIELD", "VALUE"), fields)]
    if run.jobs:
        parts.append(format_table(("STAGE", "ATTEMPT", "JOB ID", "STATE", "REASON", "EXIT"), [
            (job.stage, job.attempt, job.job_id, job.state, job.reason, job.exit_code)
            for job in run.jobs]))
    parts.append(files_table(run))
    return "\n\n".join(parts)


def files_table(run: Run) -> str:
    """Return the input and output files of a run as one table."""
    rows = [("input", f.filename, format_size(f.size)) for f in run.input_files]
    rows += [("output", f.filename, format_size(f.size)) for f in run.output_files]
    return format_table(("KIND", "FILE", "SIZE"), rows)


def progress_line(run: Run) -> str:
    """Return a one-line progress bar: ``[#####-----]  50.0% active (wrf), 12 s left``."""
    percent = run.percent_complete or (100.0 if run.status == "done" else 0.0)
    filled = int(BAR_WIDTH * min(100.0, percent) / 100)
    stage = f" ({run.stage})" if run.stage else ""
    left = ""
    if run.remaining_time is not None and run.status == "active":
        left = f", {run.remaining_time:.0f} s left"
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {percent:5.1f}% {run.status}{stage}{left}"


class ProgressPrinter:
    """Prints progress lines: rewritten in place on a terminal, one per change elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = ""
        self._tty = stream.isatty()

    def show(self, run: Run) -> None:
        line = progress_line(run)
        if line == self._last:
            return
        if self._tty:
            self.stream.write("\r" + line.ljust(len(self._last)))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last = line

    def finish(self) -> None:
        if self._tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
