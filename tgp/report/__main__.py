"""``python -m tgp.report SWEEP_DIR``: same as ``tgp-report``."""

import sys

from tgp.report.cli import main

sys.exit(main())
