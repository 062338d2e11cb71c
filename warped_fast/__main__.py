"""``python -m warped_fast ...``: the ``warped-fast`` command line."""

import sys

from .cli import main

sys.exit(main())
