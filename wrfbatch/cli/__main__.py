"""Run the command line with ``python -m wrfbatch.cli``."""

import sys

from . import main

sys.exit(main())
