"""``python -m syncd.simulator`` is ``syncd simulator``."""

import sys

from syncd.simulator.cli import main

raise SystemExit(main(sys.argv[1:]))
