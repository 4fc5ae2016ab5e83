"""``python -m dpm``: see :mod:`dpm.cli`."""
import sys

from .cli import main

sys.exit(main())
