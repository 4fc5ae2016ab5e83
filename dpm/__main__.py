"""``python -m dpm``: see :mod:`dpm.cli`."""
import sys

from dpm.cli import main

if __name__ == "__main__":  # not in the worker processes a local Dask cluster spawns (they import __main__)
    sys.exit(main())
