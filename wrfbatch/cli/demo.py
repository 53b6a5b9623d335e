"""``wrfbatch demo``: the main job, end to end, on the embedded default cluster.

It prepares the data directory (stand-in WRF installs, an admin token) and
starts the service in this process on a free loopback port. Then it does
what a scientist does with the Python client: create a run, upload a
namelist and met_em files, set up, start, follow the progress, and list the
output files of the finished run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..config import Settings, embedded_cluster, load_settings
from ..errors import ConflictError, WrfbatchError
from ..models import Run

DEMO_TOKEN_LABEL = "wrfbatch demo"
DEMO_USER = "demo"
DEMO_VERSION = "3.9"
# The demo's service refreshes run states at least this often, so that progress shows.
DEMO_POLL_INTERVAL_S = 1.0
SERVER_START_TIMEOUT_S = 30.0


def add_command(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the main job end to end on the embedded default cluster")
    demo.add_argument("--timeout", type=float, default=600.0,
                      help="give up when the run has not ended after this many seconds")
    demo.set_defaults(handler=demo_command)


def demo_settings(config: str | None) -> Settings:
    """Return the configured service settings with the embedded default cluster only."""
    loaded = load_settings(config)
    service = loaded.service.model_copy(update={
        "default_cluster": None,
        "poll_interval_s": min(loaded.service.poll_interval_s, DEMO_POLL_INTERVAL_S),
    })
    return Settings(service=service, clusters={"local": embedded_cluster(service.data_dir)})


def demo_command(args: argparse.Namespace) -> int:
    settings = demo_settings(args.config)
    data_dir = settings.service.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"data directory: {data_dir}")
    install_standins(settings)
    token = demo_token(settings)
    from ..service import create_app

    try:
        with background_server(create_app(settings)) as base_url:
            print(f"service listening on {base_url}")
            run = run_main_job(base_url, token, data_dir, args.timeout)
    finally:
        revoke_demo_tokens(settings)
    return 0 if run.status == "done" else 1


def install_standins(settings: Settings) -> None:
    """Create stand-in WRF installs for the embedded cluster's versions where missing."""
    from ..standin import install_standin

    _, cluster = settings.cluster("local")
    for version, install in sorted(cluster.wrf.items()):
        if (Path(install.path) / "main" / "wrf.exe").exists():
            continue
        print(f"installing a stand-in WRF {version} in {install.path}")
        install_standin(Path(install.path), version)


def demo_token(settings: Settings) -> str:
    """Create the demo admin user when missing and return a new token of it."""
    from ..store import Store

    with Store(settings.service.resolved_database_url) as store:
        with contextlib.suppress(ConflictError):
            store.create_user(DEMO_USER, is_admin=True)
        return store.create_token(DEMO_USER, label=DEMO_TOKEN_LABEL)


def revoke_demo_tokens(settings: Settings) -> None:
    """Revoke the tokens the demo created, so none stays usable after it ends."""
    from ..store import Store

    with Store(settings.service.resolved_database_url) as store:
        for token in store.list_tokens(DEMO_USER):
            if token.label == DEMO_TOKEN_LABEL and not token.revoked:
                store.revoke_token(token.id)


@contextlib.contextmanager
def background_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port; yield its base URL."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]},
                              name="wrfbatch-demo-server", daemon=True)
    thread.start()
    _wait_started(server, thread)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SERVER_START_TIMEOUT_S)
        listener.close()


def _wait_started(server: Any, thread: threading.Thread) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise WrfbatchError("the demo service did not start; run with --log-level INFO "
                                "to see why")
        time.sleep(0.05)


def run_main_job(base_url: str, token: str, data_dir: Path, timeout_s: float) -> Run:
    """Create, upload, set up, start and follow one run through the Cloudrun client."""
    from cloudrun import Cloudrun

    from .display import ProgressPrinter, files_table, format_size, format_table

    with Cloudrun(token, base_url=base_url) as api:
        run = api.create_run(model="wrf", version=DEMO_VERSION, run_name="demo")
        print(f"created run {run.id} (WRF {run.model.version})")
        input_dir = data_dir / "demo-inputs" / run.id
        inputs = write_inputs(input_dir, run.model.version)
        total = sum(path.stat().st_size for path in inputs)
        print(f"uploading {len(inputs)} files ({format_size(total)}) from {input_dir}")
        api.upload(run.id, inputs, progress=_upload_progress, setup=False)
        print()
        setup = api.setup(run.id)
        if setup.missing_input_files:
            print(f"setup: missing input files {setup.missing_input_files}", file=sys.stderr)
            return setup.run
        print(f"setup: {len(setup.required_input_files)} input files required, none missing; "
              "valid core counts:")
        print(format_table(("CORES", "ESTIMATED TIME (s)"),
                           [(o.cores, o.time) for o in setup.compute_options]))
        # The largest count that this machine has CPUs for, as a user would choose.
        usable = [o.cores for o in setup.compute_options if o.cores <= (os.cpu_count() or 1)]
        cores = max(usable or [setup.compute_options[0].cores])
        print(f"starting with {cores} core{'s' if cores > 1 else ''}")
        api.start(run.id, cores)
        printer = ProgressPrinter(sys.stdout)
        run = api.wait(run.id, timeout_s=timeout_s, poll_interval_s=DEMO_POLL_INTERVAL_S,
                       callback=printer.show)
        printer.finish()
    _print_outcome(run, files_table(run))
    return run


def _upload_progress(sent: int, total: int) -> None:
    # Off a terminal, only the last line is printed, so logs stay short.
    if not sys.stdout.isatty() and sent < total:
        return
    percent = 100.0 * sent / total if total else 100.0
    sys.stdout.write(f"\r  sent {percent:5.1f}% of {total} bytes")
    sys.stdout.flush()


def _print_outcome(run: Run, files: str) -> None:
    if run.status == "done":
        print(f"run {run.id} is done; its files:")
        print(files)
        return
    message = run.error.message if run.error else "no error recorded"
    print(f"run {run.id} ended {run.status}: {message}", file=sys.stderr)


def write_inputs(directory: Path, version: str) -> list[Path]:
    """Write a small namelist.input and matching synthetic met_em files; return their paths."""
    from ..namelist.params import DomainParams, NamelistParams, render_namelist
    from ..rendering import TemplateRenderer
    from ..standin import write_met_em_set

    directory.mkdir(parents=True, exist_ok=True)
    start = datetime(2019, 1, 1)
    params = NamelistParams(
        start=start, end=start + timedelta(hours=3), interval_seconds=3 * 3600,
        history_interval_min=60, domains=[DomainParams(e_we=40, e_sn=40)], dx_m=30000.0,
    )
    namelist = directory / "namelist.input"
    namelist.write_text(render_namelist(params, version, TemplateRenderer(None)))
    met_em = write_met_em_set(namelist, directory)
    return [namelist, *sorted(Path(path) for path in met_em)]
