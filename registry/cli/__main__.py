"""`python -m registry.cli`: the same entry point as the `corral` script."""

import sys

from registry.cli.main import main

sys.exit(main())
