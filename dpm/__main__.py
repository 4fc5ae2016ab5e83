"""``python -m dpm``: see :mod:`dpm.cli`."""
import sys

from dpm.cli import main

sys.exit(main())
