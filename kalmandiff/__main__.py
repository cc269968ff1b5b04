"""``python -m kalmandiff``: see :mod:`kalmandiff.cli`."""

import sys

from .cli import main

sys.exit(main())
