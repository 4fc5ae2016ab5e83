"""Tests for dpm.plot (skipped without matplotlib)."""
from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from dpm.market.sample import default_market, deribit_marks, deribit_snapshot
from dpm.plot import plot_smiles


def _is_png(path):
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_smiles_deribit_with_marks(tmp_path):
    import matplotlib.pyplot as plt

    snap = deribit_snapshot()
    fig = plot_smiles(snap, marks=deribit_marks())
    ax = fig.axes[0]
    n = len(snap["BTC"].vol_surface.slices)
    lines = ax.get_lines()
    assert len(lines) == 2 * n                       # one smile and one set of marks per expiry
    dots = [ln for ln in lines if ln.get_linestyle() == "None"]
    assert sum(len(ln.get_xdata()) for ln in dots) == 310
    # smile lines are the fitted vols in percent
    sl = snap["BTC"].vol_surface.slices[-1]
    k, v = lines[-2].get_xdata(), lines[-2].get_ydata()
    np.testing.assert_allclose(v, 100 * sl.implied_vol(k), rtol=1e-12)
    out = tmp_path / "smiles.png"
    fig.savefig(out, dpi=60)
    assert out.stat().st_size > 5000 and _is_png(out)
    plt.close(fig)


def test_plot_smiles_surface_on_given_axes(tmp_path):
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2)
    vs = default_market()["ETH"].vol_surface
    k = np.linspace(-0.2, 0.2, 9)
    marks = {"strike": 3100 * np.exp(k), "forward": np.full(9, 3100.0), "time": np.full(9, vs.times[3]),
             "iv": vs.implied_vol(3100 * np.exp(k), vs.times[3], 3100.0)}
    out_fig = plot_smiles(vs, marks=marks, ax=a2)
    assert out_fig is fig and len(a2.get_lines()) == 2 * len(vs.slices) and not a1.get_lines()
    fig.savefig(tmp_path / "eth.png", dpi=50)
    assert _is_png(tmp_path / "eth.png")
    plt.close(fig)


def test_plot_smiles_bad_input():
    from dpm.errors import InvalidInputError, InvalidTypeError

    with pytest.raises(InvalidTypeError, match="VolSurface"):
        plot_smiles(42)
    with pytest.raises(InvalidInputError, match="marks"):
        plot_smiles(default_market(), marks={"x": [1.0]})


def test_plot_risk_matrix_heat_map(tmp_path):
    import matplotlib.pyplot as plt

    from dpm.engines.margin import MarginEngine
    from dpm.market.sample import default_instruments
    from dpm.models import deribit_pm
    from dpm.plot import plot_risk_matrix
    from dpm.portfolio.accounts import Account

    engine = MarginEngine(default_market(), default_instruments(), deribit_pm("coin"))
    acct = Account("short-vol", [("BTC-25DEC26-85000-P", -5.0), ("BTC-25DEC26-100000-C", -5.0),
                                 ("BTC-PERPETUAL", 2_000.0)])
    mv, vs, pnl, und = engine.risk_matrix(acct)
    assert und == "BTC" and pnl.shape == (vs.size, mv.size)
    # short straddle: losses grow with the vol shock and away from the strike range
    assert np.all(np.diff(pnl[:, mv.size // 2]) < 0)
    # the matrix agrees with the engine's own scenarios where they coincide (0 move, no vol shock)
    assert pnl[np.argmin(np.abs(vs)), np.argmin(np.abs(mv))] == pytest.approx(0.0, abs=1e-6)
    out = tmp_path / "risk_matrix.png"
    fig = plot_risk_matrix(engine, acct, path=out)
    assert out.stat().st_size > 8000 and _is_png(out)
    assert len(fig.axes) == 2  # the heat map and its colour bar
    plt.close(fig)
