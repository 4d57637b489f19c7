"""``python -m occreid``: the same as the ``occreid`` console script (see :mod:`occreid.cli`)."""

import sys

from occreid.cli import main

sys.exit(main())
