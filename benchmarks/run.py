"""Run the benchmarks against the testbed and print each figure next to its target.

Usage: ``python -m benchmarks.run [--only NAME ...] [--quick]`` from the project
root. ``--quick`` uses smaller sizes and one round, to check that the benchmarks
work; only a full run gives the figures recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import subprocess
import sys
import time
from collections.abc import Callable

from wrfbatch.errors import WrfbatchError

from .common import Figure, machine

BENCHMARKS = ("staging", "refresh_scale", "ssh_reuse", "api", "memory")


# A benchmark that fails for a reason such as a restarted daemon is run once more after this.
RETRY_DELAY_S = 30


def _run_with_retry(run: Callable[[bool], list[Figure]], quick: bool) -> list[Figure]:
    try:
        return run(quick)
    except (WrfbatchError, OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"  failed ({exc}); running it again in {RETRY_DELAY_S} s")
        time.sleep(RETRY_DELAY_S)
        return run(quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=BENCHMARKS,
                        help="run only this benchmark (repeat for several)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and one round, to check the benchmarks themselves")
    args = parser.parse_args(argv)
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    for key, value in machine().items():
        print(f"{key}: {value}")
    missed = 0
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n== {name}: {module.__doc__.splitlines()[0]}")
        start = time.perf_counter()
        figures = _run_with_retry(module.run, args.quick)
        for figure in figures:
            print(figure.line())
        missed += sum(figure.met is False for figure in figures)
        print(f"  ({time.perf_counter() - start:.0f} s)")
    print(f"\n{missed} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
