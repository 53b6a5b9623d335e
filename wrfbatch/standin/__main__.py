"""Command line of the stand-in WRF: ``install`` an install tree, write ``metem`` files.

    python -m wrfbatch.standin install --version 3.9 --prefix ~/wrf/3.9 [--python PY]
    python -m wrfbatch.standin metem --namelist namelist.input --out DIR [--levels N]
        [--soil-levels N] [--size-mb N]
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import WrfbatchError
from .install import install_standin
from .metem import write_met_em_set

MIB = 1024 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wrfbatch-standin",
                                     description="Stand-in WRF installs and synthetic inputs.")
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="create or replace a stand-in WRF install")
    install.add_argument("--version", required=True, help="WRF version, for example 3.9 or 4.5.2")
    install.add_argument("--prefix", required=True, help="directory of the install")
    install.add_argument("--python", default=sys.executable,
                         help="absolute path of the Python that runs the programs "
                              "(default: this Python)")
    metem = commands.add_parser("metem", help="write the met_em files a namelist needs")
    metem.add_argument("--namelist", required=True, help="namelist.input to read")
    metem.add_argument("--out", required=True, help="directory to write the files to")
    metem.add_argument("--levels", type=int, help="vertical levels (default: the namelist's "
                                                  "num_metgrid_levels)")
    metem.add_argument("--soil-levels", type=int, help="soil levels (default: the namelist's "
                                                       "num_metgrid_soil_levels)")
    metem.add_argument("--size-mb", type=float, help="approximate size of each file in MiB")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "install":
            path = install_standin(args.prefix, args.version, python=args.python)
            print(path)
        else:
            size = int(args.size_mb * MIB) if args.size_mb else None
            for path in write_met_em_set(args.namelist, args.out, num_metgrid_levels=args.levels,
                                         num_soil_levels=args.soil_levels, size_bytes=size):
                print(path)
    except WrfbatchError as exc:
        print(f"wrfbatch-standin: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
