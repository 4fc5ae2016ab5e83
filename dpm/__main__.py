"""``python -m dpm``: see :mod:`dpm.cli`."""
from dpm.cli import run

if __name__ == "__main__":  # not in the worker processes a local Dask cluster spawns (they import __main__)
    run()
