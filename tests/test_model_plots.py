"""Pictures of the risk models: regime probabilities and dynamic correlation, margins vs realised
losses (matplotlib Agg, written to PNG)."""
from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from dpm.errors import InvalidInputError  # noqa: E402
from dpm.market.history import load_history  # noqa: E402
from dpm.models.backtest import model_margins  # noqa: E402
from dpm.models.dependence.dcc import DCCModel  # noqa: E402
from dpm.models.dependence.regimes import RegimeModel  # noqa: E402
from dpm.models.risk_model import FHSModel, WalkForward  # noqa: E402
from dpm.plot import plot_model_margins, plot_regimes  # noqa: E402


def _is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lr():
    return load_history().log_returns(["BTC", "ETH"], start="2019-01-01", end="2020-06-30")


def test_regime_probability_and_dynamic_correlation_plot(lr, tmp_path):
    import matplotlib.pyplot as plt

    regime = WalkForward(RegimeModel(max_iter=50), lr, refit_every=90, first_fit=360)
    dcc = WalkForward(DCCModel(), lr, refit_every=90, first_fit=360)
    rows = np.arange(regime.first_day, len(lr.dates))
    prob = regime.extras_path("prob")[rows, -1]
    corr = dcc.forecast_path()[1][rows, 0, 1]
    assert np.all((prob >= 0) & (prob <= 1)) and np.all(np.abs(corr) < 1)
    # the stressed regime is likelier in March 2020 than in the calm of January 2020
    d = lr.dates[rows]
    assert prob[d == np.datetime64("2020-03-13")][0] > prob[d == np.datetime64("2020-01-15")][0]
    fig = plot_regimes(d, prob, {"DCC": corr}, prices=lr.prices[rows + 1, 0])
    ax_prob, ax_corr = fig.axes[0], fig.axes[1]
    np.testing.assert_allclose(ax_corr.get_lines()[0].get_ydata(), corr)
    assert ax_prob.get_ylim() == (0.0, 1.0)
    out = tmp_path / "regimes.png"
    fig.savefig(out, dpi=60)
    assert out.stat().st_size > 10_000 and _is_png(out)
    plt.close(fig)


def test_model_margins_against_realised_losses_plot(lr, tmp_path):
    import matplotlib.pyplot as plt

    r = lr.values
    rows = np.arange(420, r.shape[0] - 1)
    pnl = np.expm1(r[rows + 1, 0])                      # long 1 USD of BTC
    margins = {}
    for model in (FHSModel(window=300), RegimeModel(max_iter=50)):
        wf = WalkForward(model, lr, refit_every=120, first_fit=420)
        v, e = model_margins(wf, lambda t, x: np.expm1(x[:, 0]), rows, (0.99,), n_scenarios=2000)
        margins[model.name] = v[:, 0]
    fig = plot_model_margins(lr.dates[rows], margins, pnl)
    ax = fig.axes[0]
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[1].get_ydata(), -margins["fhs"])
    breaches = int(np.sum(-pnl > margins["fhs"]))
    assert f"fhs ({breaches} breaches)" in [t.get_text() for t in ax.get_legend().get_texts()]
    out = tmp_path / "margins.png"
    fig.savefig(out, dpi=60)
    assert out.stat().st_size > 10_000 and _is_png(out)
    plt.close(fig)
    with pytest.raises(InvalidInputError, match="expected shape"):
        plot_model_margins(lr.dates[rows], {"x": margins["fhs"][:-1]}, pnl)
    with pytest.raises(InvalidInputError, match="no model"):
        plot_model_margins(lr.dates[rows], {}, pnl)
