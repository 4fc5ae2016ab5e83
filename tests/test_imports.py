"""Import cost: the engine and the command line do not load the heavy optional or slow modules.

``import dpm.engines.margin`` and ``python -m dpm --help`` (and a margin run on generated accounts)
must not import scipy.optimize / scipy.stats / scipy.special, pandas, pyarrow, matplotlib or dask:
each costs 0.2-0.5 s, more than everything the run needs. Checked in a fresh interpreter through
``sys.modules``, so no timing is asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dpm

ROOT = Path(dpm.__file__).resolve().parent.parent
HEAVY = ("scipy.optimize", "scipy.stats", "scipy.special", "scipy.linalg", "pandas", "pyarrow", "matplotlib",
         "dask", "distributed", "sklearn", "statsmodels", "grpc")

_PROBE = """
import contextlib, io, json, sys
{body}
heavy = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in {heavy!r}))
print(json.dumps(heavy))
"""


def _loaded(body: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = _PROBE.format(body=body, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("body", [
    "import dpm.engines.margin",
    "import dpm.engines.distributed, dpm.portfolio.io, dpm.portfolio.partitions, dpm._util.arrow",
    "from dpm.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])",
    "from dpm.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n    main(['margin', '--help'])",
    "from dpm.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
    "    assert main(['--accounts', '50', '--top', '1']) == 0",
])
def test_no_heavy_module_is_imported(body) -> None:
    assert _loaded(body) == []


def test_the_probe_sees_a_heavy_import() -> None:
    """The check can fail: fitting a smile does import scipy.optimize (lazily, when it is needed)."""
    loaded = _loaded("import numpy as np\nfrom dpm.market.surface import VolSurface\n"
                     "VolSurface.from_marks(np.array([80e3, 90e3, 100e3, 110e3, 120e3]), np.full(5, 0.1), "
                     "np.full(5, 1e5), np.array([0.7, 0.62, 0.6, 0.61, 0.66]))")
    assert "scipy.optimize" in loaded


def test_python_m_dpm_help_in_a_fresh_process() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "dpm", "--help"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "usage: dpm" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "dpm.cli" in imported
    assert not [m for m in imported if any(m == h or m.startswith(h + ".") for h in HEAVY)]
