"""The administrator's subcommands: serve, token, check, render, validate and runs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings, embedded_cluster, load_settings
from ..errors import (
    ConflictError,
    InvalidInputError,
    NamelistError,
    NotFoundError,
    WrfbatchError,
)
from ..names import check_version
from .display import ProgressPrinter, format_table, run_details, runs_table

if TYPE_CHECKING:
    from ..runs import RunManager
    from ..store import Store

FINAL_STATES = ("done", "error", "stopped")


def add_commands(subparsers: Any) -> None:
    """Register every subcommand except ``demo``."""
    serve = subparsers.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="address to listen on (default: service.host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: service.port)")
    serve.set_defaults(handler=serve_command)
    _add_token_commands(subparsers)
    check = subparsers.add_parser("check", help="check SSH, Slurm and WRF installs of clusters")
    check.add_argument("cluster", nargs="*", help="clusters to check (default: all)")
    check.set_defaults(handler=check_command)
    render = subparsers.add_parser("render", help="print the namelist and batch scripts of a run")
    render.add_argument("run_id")
    render.add_argument("--cores", type=int, help="MPI tasks (default: the run's cores)")
    render.set_defaults(handler=render_command)
    validate = subparsers.add_parser("validate", help="check a namelist.input offline")
    validate.add_argument("namelist", type=Path)
    validate.add_argument("--version", required=True, help="WRF version, for example 3.9")
    validate.add_argument("--flavour", choices=("plain", "chem"), default="plain",
                          help="WRF build flavour: chem builds read &chem (default: plain)")
    validate.add_argument("--met-em", type=Path, metavar="DIR",
                          help="also check the headers of the met_em files in DIR")
    validate.set_defaults(handler=validate_command)
    _add_runs_commands(subparsers)


def _add_token_commands(subparsers: Any) -> None:
    token = subparsers.add_parser("token", help="create, list and revoke API tokens")
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create a token (and the user if new)")
    create.add_argument("user")
    create.add_argument("--admin", action="store_true", help="make a new user an admin")
    create.add_argument("--label", default="", help="a note shown in token list")
    create.set_defaults(handler=token_create_command)
    listing = actions.add_parser("list", help="list tokens (never the tokens themselves)")
    listing.add_argument("--user", help="only this user's tokens")
    listing.set_defaults(handler=token_list_command)
    revoke = actions.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", type=int)
    revoke.set_defaults(handler=token_revoke_command)


def _add_runs_commands(subparsers: Any) -> None:
    runs = subparsers.add_parser("runs", help="list, show and watch runs")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list runs, newest first")
    listing.add_argument("--user", help="only runs this user can see")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=runs_list_command)
    show = actions.add_parser("show", help="show one run with its jobs and files")
    show.add_argument("run_id")
    show.set_defaults(handler=runs_show_command)
    watch = actions.add_parser("watch", help="show a run's progress until it ends")
    watch.add_argument("run_id")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between updates")
    watch.add_argument("--timeout", type=float, help="give up after this many seconds")
    watch.set_defaults(handler=runs_watch_command)


def load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def open_manager(settings: Settings) -> RunManager:
    from ..runs import RunManager

    return RunManager(settings)


def open_store(settings: Settings) -> Store:
    from ..store import Store

    return Store(settings.service.resolved_database_url)


# ---------------------------------------------------------------------- serve


def serve_command(args: argparse.Namespace) -> int:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    from ..service import create_app
    from .demo import install_standins

    settings = load(args)
    host = args.host or settings.service.host
    port = args.port or settings.service.port
    if settings.clusters.get("local") == embedded_cluster(settings.service.data_dir):
        # The embedded default's WRF installs are stand-ins made on first use.
        install_standins(settings)
    # The service logs every request itself, so uvicorn's access log is off.
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
    return 0


# ---------------------------------------------------------------------- tokens


def token_create_command(args: argparse.Namespace) -> int:
    """Create the user when new, issue a token and print it once."""
    with open_store(load(args)) as store:
        try:
            store.create_user(args.user, is_admin=args.admin)
        except ConflictError:
            user = store.get_user(args.user)
            if args.admin and not user.is_admin:
                print(f"note: user {args.user} exists and is not an admin; --admin applies "
                      "only to new users", file=sys.stderr)
        token = store.create_token(args.user, args.label)
    print(token)
    return 0


def token_list_command(args: argparse.Namespace) -> int:
    with open_store(load(args)) as store:
        tokens = store.list_tokens(args.user)
    rows = [(t.id, t.user_name, t.label, t.prefix + "...", t.time_created, t.time_last_used,
             t.time_revoked) for t in tokens]
    print(format_table(("ID", "USER", "LABEL", "PREFIX", "CREATED", "LAST USED", "REVOKED"),
                       rows))
    return 0


def token_revoke_command(args: argparse.Namespace) -> int:
    with open_store(load(args)) as store:
        record = store.revoke_token(args.token_id)
    print(f"revoked token {record.id} of user {record.user_name}")
    return 0


# ---------------------------------------------------------------------- check


def check_command(args: argparse.Namespace) -> int:
    """Check each cluster; exit 1 when any check failed."""
    settings = load(args)
    names = args.cluster or list(settings.clusters)
    manager = open_manager(settings)
    failed = False
    try:
        for name in names:
            print(f"cluster {name}:")
            for result in _check_cluster(manager, name):
                failed |= not result[1]
                status = "ok" if result[1] else "FAILED"
                print(f"  {status:<6} {result[0]}: {result[2]}")
    finally:
        manager.close()
    return 1 if failed else 0


def _check_cluster(manager: RunManager, name: str) -> list[tuple[str, bool, str]]:
    try:
        return [(r.name, r.ok, r.detail) for r in manager.check(name)]
    except WrfbatchError as exc:
        return [("cluster", False, str(exc))]


# ---------------------------------------------------------------------- render and validate


def render_command(args: argparse.Namespace) -> int:
    manager = open_manager(load(args))
    try:
        cores = args.cores or manager.get(args.run_id).cores
        if cores is None:
            raise InvalidInputError(f"run {args.run_id} has not been started: give --cores")
        for name, text in manager.render(args.run_id, cores).items():
            print(f"# ===== {name} =====")
            print(text.rstrip("\n"))
    finally:
        manager.close()
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """Check a namelist offline: exit 0 when valid, else 1; one line per problem or warning."""
    problems, warnings = namelist_problems(args.namelist, args.version, args.flavour,
                                           args.met_em)
    for line in problems:
        print(f"{args.namelist}: {line}")
    for line in warnings:
        print(f"{args.namelist}: warning: {line}")
    if not problems:
        print(f"{args.namelist}: valid for WRF {args.version} ({args.flavour} build)")
    return 1 if problems else 0


def namelist_problems(
    path: Path, version: str, flavour: str = "plain", met_em_dir: Path | None = None
) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) of a namelist file for a WRF version and build flavour.

    With ``met_em_dir``, the headers of the met_em files there are checked too.
    """
    from ..namelist import required_input_files
    from ..namelist.metem_check import MET_EM_NAME, met_em_problems
    from ..namelist.validate import validate_namelist

    try:
        check_version(version)
        result = validate_namelist(path.read_text(errors="replace"), version, flavour)
        if met_em_dir is not None and result.summary is not None:
            files = [p for p in sorted(met_em_dir.iterdir()) if MET_EM_NAME.match(p.name)]
            result.extend(met_em_problems(result.summary, files))
            present = {p.name for p in files}
            missing = [name for name in required_input_files(result.summary)
                       if name.startswith("met_em.") and name not in present]
            if missing:
                return [str(p) for p in result.errors] + [
                    f"missing met_em file {name} in {met_em_dir}" for name in missing
                ], [str(p) for p in result.warnings]
    except NamelistError as exc:
        return exc.problems or [exc.message], []
    except (InvalidInputError, NotFoundError) as exc:
        return [exc.message], []
    except OSError as exc:
        return [f"cannot read {exc.filename or path}: {exc.strerror}"], []
    return [str(p) for p in result.errors], [str(p) for p in result.warnings]


# ---------------------------------------------------------------------- runs


def runs_list_command(args: argparse.Namespace) -> int:
    manager = open_manager(load(args))
    try:
        runs = manager.list_runs(args.user, is_admin=args.user is None, limit=args.limit)
    finally:
        manager.close()
    print(runs_table(runs))
    return 0


def runs_show_command(args: argparse.Namespace) -> int:
    manager = open_manager(load(args))
    try:
        print(run_details(manager.get(args.run_id)))
    finally:
        manager.close()
    return 0


def runs_watch_command(args: argparse.Namespace) -> int:
    """Show a live progress bar until the run ends; exit 1 unless it ends ``done``."""
    manager = open_manager(load(args))
    printer = ProgressPrinter(sys.stdout)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        run = manager.get(args.run_id)
        while True:
            printer.show(run)
            if run.status in FINAL_STATES:
                break
            if deadline is not None and time.monotonic() >= deadline:
                printer.finish()
                print(f"run {run.id} is still {run.status} after {args.timeout} s",
                      file=sys.stderr)
                return 1
            time.sleep(args.interval)
            run = manager.get(args.run_id)
    finally:
        printer.finish()
        manager.close()
    if run.error is not None:
        print(f"error: {run.error.message}", file=sys.stderr)
    return 0 if run.status == "done" else 1
