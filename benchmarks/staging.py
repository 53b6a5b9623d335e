"""Staging: upload and download a met_em-like set and one large file, against scp and cp.

Each round times, for each direction: OpenSSH ``scp`` (same key, pinned
known_hosts, the same cipher preference as wrfbatch), wrfbatch's SSHTransport
with its default settings (``upload_many``/``download_many``), the same with
``verify_remote_sha256`` on (the cluster hashes every file too), and a local
``cp``. The figures are medians over the rounds, and the ratio is scp's time
over wrfbatch's time (throughput ratio); the targets apply to the default
settings. Destinations are emptied before every measurement, so nothing is
skipped as identical.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from wrfbatch.standin.metem import write_met_em_set
from wrfbatch.transports.local import file_sha256
from wrfbatch.transports.openssh import CIPHERS
from wrfbatch.transports.ssh import SSHTransport

from .common import MiB, Figure, median, no_disruption, ssh_config, testbed_env, timed

SET_FILES = 24
SET_FILE_BYTES = 40 * 1000 * 1000
BIG_FILE_BYTES = 1024 * MiB
# Hourly met_em files for 24 hours: 24 files of one domain.
NAMELIST = {
    "time_control": {"start_year": 2024, "start_month": 1, "start_day": 1, "start_hour": 0,
                     "end_year": 2024, "end_month": 1, "end_day": 1, "end_hour": 23,
                     "interval_seconds": 3600},
    "domains": {"max_dom": 1, "e_we": 42, "e_sn": 42, "e_vert": 30},
}


def run(quick: bool) -> list[Figure]:
    env = testbed_env()
    config = ssh_config(env)
    rounds = 1 if quick else 3
    set_bytes = (4 if quick else SET_FILES) * SET_FILE_BYTES
    big_bytes = 256 * MiB if quick else BIG_FILE_BYTES
    work = Path(tempfile.mkdtemp(prefix="wrfbatch-bench-staging-"))
    remote = f"{env['TESTBED_REMOTE_HOME']}/wrfbatch-bench-staging"
    transport = SSHTransport(config)
    verified = SSHTransport(config.model_copy(update={"verify_remote_sha256": True}))
    try:
        files = _make_inputs(work, quick, big_bytes)
        # As the service computes them while it receives an upload, before setup stages it.
        digests = {path: file_sha256(path) for path in files}
        cases = {"set": files[:-1], "1 file": files[-1:]}
        times: dict[str, list[float]] = {}
        for _ in range(rounds):
            for case, paths in cases.items():
                _measure_case(case, paths, digests, work, remote, (transport, verified), times)
        return _figures(times, {"set": set_bytes, "1 file": big_bytes})
    finally:
        transport.remove_tree(remote)
        transport.close()
        verified.close()
        shutil.rmtree(work, ignore_errors=True)


def _make_inputs(work: Path, quick: bool, big_bytes: int) -> list[Path]:
    """Write the met_em set and the large file; return the set's paths, then the large file."""
    namelist = {group: dict(values) for group, values in NAMELIST.items()}
    if quick:
        namelist["time_control"]["end_hour"] = 3
    paths = write_met_em_set(namelist, work / "source", size_bytes=SET_FILE_BYTES)
    big = work / "source" / "wrfinput_d01"
    with big.open("wb") as handle:
        for _ in range(big_bytes // (16 * MiB)):
            handle.write(_random_bytes(16 * MiB))
    return [*paths, big]


def _random_bytes(size: int) -> bytes:
    with open("/dev/urandom", "rb") as source:
        return source.read(size)


def _measure_case(
    case: str, paths: list[Path], digests: dict[Path, str], work: Path, remote: str,
    transports: tuple[SSHTransport, SSHTransport], times: dict[str, list[float]],
) -> None:
    transport, verified = transports
    back = work / "back"
    names = [path.name for path in paths]
    scp = _scp_command(transport)
    target = f"{transport.config.user}@{transport.config.host}"

    def reset() -> None:
        transport.remove_tree(remote)
        transport.make_dirs(remote)
        shutil.rmtree(back, ignore_errors=True)
        back.mkdir()

    # wrfbatch uploads last, so the downloads below read the files it wrote.
    measurements: dict[str, Callable[[], object]] = {
        f"{case} upload: cp": lambda: subprocess.run(["cp", *map(str, paths), str(back)],
                                                     check=True),
        f"{case} upload: scp": lambda: subprocess.run(
            [*scp, *map(str, paths), f"{target}:{remote}/"], check=True),
        f"{case} upload: wrfbatch, remote SHA-256": lambda: verified.upload_many(
            [(path, f"{remote}/{path.name}") for path in paths]),
        f"{case} upload: wrfbatch, hashing": lambda: transport.upload_many(
            [(path, f"{remote}/{path.name}") for path in paths]),
        f"{case} upload: wrfbatch": lambda: transport.upload_many(
            [(path, f"{remote}/{path.name}") for path in paths],
            sha256=[digests[path] for path in paths]),
    }
    for name, action in measurements.items():
        reset()
        with no_disruption():
            times.setdefault(name, []).append(timed(action))
    downloads: dict[str, Callable[[], object]] = {
        f"{case} download: scp": lambda: subprocess.run(
            [*scp, *[f"{target}:{remote}/{name}" for name in names], str(back)], check=True),
        f"{case} download: wrfbatch": lambda: transport.download_many(
            [(f"{remote}/{name}", back / name) for name in names]),
        f"{case} download: wrfbatch, remote SHA-256": lambda: verified.download_many(
            [(f"{remote}/{name}", back / name) for name in names]),
    }
    for name, action in downloads.items():
        shutil.rmtree(back, ignore_errors=True)
        back.mkdir()
        with no_disruption():
            times.setdefault(name, []).append(timed(action))
    transport.remove_tree(remote)
    shutil.rmtree(back, ignore_errors=True)


def _scp_command(transport: SSHTransport) -> list[str]:
    config = transport.config
    return ["scp", "-q", "-F", "/dev/null", "-P", str(config.port), "-i", str(config.key_file),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={config.known_hosts_file}", "-o", f"Ciphers={CIPHERS}"]


def _figures(times: dict[str, list[float]], sizes: dict[str, int]) -> list[Figure]:
    figures = []
    for case, size in sizes.items():
        for direction in ("upload", "download"):
            scp = median(times[f"{case} {direction}: scp"])
            ours = median(times[f"{case} {direction}: wrfbatch"])
            target = 1.0 if case == "set" else 0.9
            figures.append(Figure(f"{case} {direction}: scp", size / scp / MiB, "MiB/s", "", None))
            figures.append(Figure(f"{case} {direction}: wrfbatch", size / ours / MiB, "MiB/s",
                                  "", None))
            figures.append(Figure(f"{case} {direction}: wrfbatch / scp throughput", scp / ours,
                                  "x", f">= {target}", scp / ours >= target))
            if direction == "upload":
                hashing = median(times[f"{case} upload: wrfbatch, hashing"])
                figures.append(Figure(f"{case} upload: SHA-256 computed here / scp",
                                      scp / hashing, "x", "", None))
            checked = median(times[f"{case} {direction}: wrfbatch, remote SHA-256"])
            figures.append(Figure(f"{case} {direction}: with remote SHA-256 / scp", scp / checked,
                                  "x", "", None))
        if f"{case} upload: cp" in times:
            copy = median(times[f"{case} upload: cp"])
            figures.append(Figure(f"{case}: local cp (physical limit)", size / copy / MiB,
                                  "MiB/s", "", None))
    return figures
