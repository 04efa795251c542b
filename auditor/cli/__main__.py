"""``python -m auditor.cli``."""

import sys

from auditor.cli.main import main

sys.exit(main())
