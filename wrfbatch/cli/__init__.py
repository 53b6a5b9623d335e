"""The ``wrfbatch`` command line: serve the API, manage tokens, check clusters, inspect runs.

Logging is configured here and nowhere else (``--log-level``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import WrfbatchError
from . import commands, demo

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="wrfbatch", description="Run WRF on a Slurm cluster behind the Cloudrun API."
    )
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file (TOML); default: $WRFBATCH_CONFIG, else the "
                             "embedded default, which runs jobs on this machine")
    parser.add_argument("--log-level", default=None,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="lowest level of log messages written to stderr (default WARNING; "
                             "serve logs at INFO unless this is given)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_commands(subparsers)
    demo.add_command(subparsers)
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format=LOG_FORMAT, stream=sys.stderr)
    # Alembic reports every migration step at INFO, which hides the service's own start lines.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, getattr(logging, level)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level or ("INFO" if args.command == "serve" else "WARNING"))
    try:
        status: int = args.handler(args)
    except WrfbatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
