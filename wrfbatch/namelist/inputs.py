"""The input files that real.exe and wrf.exe need for a namelist."""

from __future__ import annotations

from datetime import datetime, timedelta

from .parse import NamelistSummary

WRF_DATE_FORMAT = "%Y-%m-%d_%H:%M:%S"


def format_wrf_date(moment: datetime, nocolons: bool = False) -> str:
    """Return a date as WRF writes it in file names, with '_' for ':' when nocolons is on."""
    text = moment.strftime(WRF_DATE_FORMAT)
    return text.replace(":", "_") if nocolons else text


def met_em_file_name(domain: int, moment: datetime, nocolons: bool = False) -> str:
    """Return ``met_em.d0N.<date>.nc`` for a domain and a valid time."""
    return f"met_em.d{domain:02d}.{format_wrf_date(moment, nocolons)}.nc"


def met_em_times(summary: NamelistSummary) -> list[datetime]:
    """Return every time from start to end of domain 1, every interval_seconds."""
    step = timedelta(seconds=summary.interval_seconds)
    times, moment = [], summary.start
    while moment <= summary.real_end:
        times.append(moment)
        moment += step
    return times


def required_input_files(summary: NamelistSummary) -> list[str]:
    """Return the files a real-data run needs before real.exe starts.

    Domain 1 needs a met_em file for every time of the window. A nest needs
    only its start time, unless sst_update or qna_update is on, or grid_fdda
    is on for that nest: real.exe then reads the nest's files at every time
    from its start to the end. A restart run also needs the restart file of
    every domain at the start time.
    """
    if summary.ideal:
        return ["input_sounding"]
    times = met_em_times(summary)
    files = [met_em_file_name(1, t, summary.nocolons) for t in times]
    all_times = summary.extra.get("nest_needs_all_times") or [False] * summary.max_dom
    for domain in range(2, summary.max_dom + 1):
        start = summary.starts[domain - 1]
        nest_times = [t for t in times if t >= start] if all_times[domain - 1] else [start]
        files += [met_em_file_name(domain, t, summary.nocolons) for t in nest_times]
    if summary.restart:
        stamp = format_wrf_date(summary.start, summary.nocolons)
        files += [f"wrfrst_d{d:02d}_{stamp}" for d in range(1, summary.max_dom + 1)]
    return files
