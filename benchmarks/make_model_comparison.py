"""Walk-forward comparison of dpm's risk models on the bundled BTC/ETH history -> docs/models.md.

Run from the repository root (takes 20-40 minutes on 2 cores; ``--quick`` runs 2020 only):

    python benchmarks/make_model_comparison.py            # rewrite the generated part of docs/models.md + PNGs
    python benchmarks/make_model_comparison.py --print    # only print the tables
    python benchmarks/make_model_comparison.py --quick --print

Everything is computed here from dpm/data/crypto_daily_usd.csv; the part of docs/models.md between
the BEGIN/END GENERATED markers is replaced, the rest of the page is left alone. Needs the optional
extras scikit-learn (learned model) and, for the reference column of the GARCH table, arch.

Set-up (also stated in the generated text):

* BTC and ETH daily closes on their common range (from 2017-11-10); margins set at each close from
  2019-06-01 to the second-last day, each for the next day (1-day horizon, so breaches are
  independent under the null).
* Every model is walked forward (dpm.models.risk_model.WalkForward): parameters refitted every 30
  days on the returns up to the refit close, forecasts from the returns up to each close, never a
  later one. Scenario models draw 10,000 scenarios a day (seed = row); historical ones (FHS, HAR,
  learned) use their 500-day window.
* Portfolios: long BTC; long BTC / short ETH (equal USD legs, rebalanced at each close); a short
  30-day ATM BTC straddle sold at each close and held one day, revalued in full with Black-76
  (dpm.pricing.price) at a flat implied vol equal to the annualised EWMA(0.94) vol — a proxy, as
  the data have no implied-vol history. Its next-day vol is the EWMA update of today's, so each
  scenario's vol shock is the one its BTC move implies.
"""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpm.market.history import load_history, load_ohlc  # noqa: E402
from dpm.models.backtest import (  # noqa: E402
    christoffersen_independence,
    es_backtest_z2,
    kupiec_pof,
    model_margins,
    procyclicality_report,
)
from dpm.models.calibration.ewma import ewma_covariance, ewma_variance  # noqa: E402
from dpm.models.calibration.gjr_garch import fit_gjr_garch  # noqa: E402
from dpm.models.calibration.realized import realized_variance  # noqa: E402
from dpm.models.dependence.copulas import (  # noqa: E402
    empirical_tail_dependence,
    fit_copula,
    pseudo_observations,
)
from dpm.models.dependence.dcc import fit_dcc  # noqa: E402
from dpm.models.dependence.learned import tail_features, walk_forward_quantiles  # noqa: E402
from dpm.models.dependence.regimes import fit_gaussian_hmm  # noqa: E402
from dpm.models.risk_model import WalkForward, risk_model  # noqa: E402
from dpm.pricing import price  # noqa: E402

DOC = ROOT / "docs" / "models.md"
IMG = ROOT / "docs" / "img"
BEGIN = "<!-- BEGIN GENERATED: benchmarks/make_model_comparison.py -->"
END = "<!-- END GENERATED -->"

ASSETS = ("BTC", "ETH")
START, END_DATE = "2019-06-01", None
REFIT = 30
N_SCEN = 10_000
LAMBDA = 0.94
PERIODS = {"March 2020": ("2020-02-15", "2020-04-30"), "May 2021": ("2021-04-01", "2021-07-15")}
LINEAR = {"long BTC": np.array([1.0, 0.0]), "long BTC / short ETH": np.array([1.0, -1.0])}
STRADDLE = "short BTC straddle"
PORTFOLIOS = (*LINEAR, STRADDLE)

#: (label, registry name, kwargs); the first two are the baselines
MODELS = [
    ("EWMA-normal (baseline)", "ewma", {}),
    ("FHS 500d (baseline)", "fhs", {}),
    ("GARCH(1,1)-normal", "garch", {}),
    ("t-GARCH", "t_garch", {}),
    ("GJR-GARCH skew-t", "gjr_skewt_garch", {}),
    ("HAR (Garman-Klass) + FHS", "har", {}),
    ("DCC (t-GARCH margins)", "dcc", {}),
    ("regime (2-state HMM)", "regime", {"n_states": 2}),
    ("regime (3-state HMM)", "regime", {"n_states": 3, "name": "regime3"}),
    ("t copula", "t_copula", {}),
    ("Clayton copula", "clayton_copula", {}),
    ("survival Gumbel copula", "gumbel_survival_copula", {}),
    ("empirical copula", "empirical_copula", {}),
    ("learned (GBM quantiles + FHS)", "learned", {}),
]
DIRECT = "learned, direct portfolio quantile"


def _fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def load_data(end=None):
    hist = load_history()
    lr = hist.log_returns(list(ASSETS), end=end)
    rv = []
    for a in ASSETS:
        o = load_ohlc(a)
        idx = np.searchsorted(o.dates, lr.dates)
        rv.append(realized_variance(o.open, o.high, o.low, o.close, "garman_klass")[idx])
    return lr, np.column_stack(rv)


# ---------------------------------------------------------------------------------------------
# Books: realised P&L and scenario revaluation (per unit of exposure)
# ---------------------------------------------------------------------------------------------

class Books:
    """Realised next-day P&L and scenario revaluation of the three portfolios at each close."""

    def __init__(self, lr) -> None:
        r = lr.values
        self.r = r
        self.prices = lr.prices[1:, 0]                      # BTC close of each return date
        n = r.shape[0]
        self.var_b = ewma_variance(r[:, 0], LAMBDA)          # var_b[t]: forecast of r[t] from r[:t]
        self.iv = np.sqrt(365.0 * self.var_b)                # flat implied-vol proxy at close t-1 ...
        self.T0, self.T1 = 30.0 / 365.0, 29.0 / 365.0
        self.realized = {}
        for name, w in LINEAR.items():
            pnl = np.full(n, np.nan)
            pnl[:-1] = np.expm1(r[1:]) @ w
            self.realized[name] = pnl
        pnl = np.full(n, np.nan)
        for t in range(n - 1):
            S0, S1 = self.prices[t], self.prices[t + 1]
            v0, v1 = self.iv[t + 1], self.iv[t + 2]          # vol at close t (forecast for t+1) and t+1
            if not (np.isfinite(v0) and np.isfinite(v1)):
                continue
            pnl[t] = -(self._straddle(S1, S0, v1, self.T1) - self._straddle(S0, S0, v0, self.T0))
        self.realized[STRADDLE] = pnl

    @staticmethod
    def _straddle(S, K, vol, T):
        S = np.asarray(S, dtype=np.float64)
        return price(S, K, vol, T, "call") + price(S, K, vol, T, "put")

    def exposure(self, name: str, t: int) -> float:
        return float(self.prices[t]) if name == STRADDLE else float(np.abs(LINEAR[name]).sum())

    def revalue(self, t: int, x: np.ndarray) -> dict[str, np.ndarray]:
        out = {name: np.expm1(x) @ w for name, w in LINEAR.items()}
        S0 = self.prices[t]
        xb = x[:, 0]
        v0 = self.iv[t + 1]
        v1 = np.sqrt(LAMBDA * v0 ** 2 + (1.0 - LAMBDA) * 365.0 * xb * xb)  # EWMA update, annualised
        out[STRADDLE] = -(self._straddle(S0 * np.exp(xb), S0, v1, self.T1) - self._straddle(S0, S0, v0, self.T0))
        return out


def model_run(wf: WalkForward, books: Books, rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """VaR 99 %, VaR 97.5 % and ES 97.5 % of every portfolio on every row (one scenario set a day
    revalued for all three books)."""
    v, e = model_margins(wf, lambda t, x: np.stack([books.revalue(t, x)[p] for p in PORTFOLIOS]), rows,
                         (0.99, 0.975), n_scenarios=N_SCEN)
    return {p: {"var99": v[:, b, 0], "var975": v[:, b, 1], "es975": e[:, b, 1]} for b, p in enumerate(PORTFOLIOS)}


def direct_quantiles(lr, books: Books, rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Learned model fitted directly to each linear portfolio's standardised next-day P&L.

    Features as the learned model's (without the regime probability, which needs a fit per refit),
    both assets side by side; target the next-day P&L over its EWMA sigma; VaR from the predicted
    1 % and 2.5 % quantiles, ES 97.5 % as the 2.5 % quantile times the ES/VaR ratio of the target
    known at the close.
    """
    r = lr.values
    X, sigma, _ = tail_features(r)
    n, u, f = X.shape
    Xf = X.reshape(n, u * f)
    cov = ewma_covariance(r, LAMBDA, path=True)
    out = {}
    for name, w in LINEAR.items():
        sp = np.sqrt(np.einsum("i,tij,j->t", w, cov[1:], w))  # sp[t]: sigma of the P&L of day t+1
        y = books.realized[name] / sp
        q = walk_forward_quantiles(Xf, y, (0.01, 0.025), first_train=int(rows[0]) + 1, refit_every=REFIT)
        # ES/VaR ratio of the standardised P&L below its 2.5 % quantile, on the data known at the close
        ratio = np.empty(rows.size)
        for i, t in enumerate(rows):
            hist = y[: t][np.isfinite(y[: t])]
            qq = np.quantile(hist, 0.025)
            ratio[i] = hist[hist <= qq].mean() / qq
        out[name] = {"var99": -q[rows, 0] * sp[rows], "var975": -q[rows, 1] * sp[rows],
                     "es975": -q[rows, 1] * ratio * sp[rows]}
    return out


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

def score(books: Books, rows: np.ndarray, dates: np.ndarray, m: dict[str, np.ndarray], p: str) -> dict:
    pnl = books.realized[p][rows]
    expo = np.array([books.exposure(p, int(t)) for t in rows])
    b99 = -pnl > m["var99"]
    k = kupiec_pof(b99, 0.01)
    ind = christoffersen_independence(b99)
    z = es_backtest_z2(pnl, np.maximum(m["var975"], 0.0), np.maximum(m["es975"], 1e-12), 0.025, n_sim=2000, seed=1)
    rate = m["es975"] / expo
    pro = procyclicality_report(np.maximum(rate, 1e-12), dates[rows], PERIODS)
    return {"breaches": k.breaches, "expected": k.expected, "kupiec_p": k.p_value, "ind_p": ind.p_value,
            "z2": z.z2, "z2_p": z.p_value, "z2_reject": z.reject_5pct, "mean_rate": float(np.mean(rate)),
            "p2t": {name: v["peak_to_trough"] for name, v in pro.items()}, "n": k.n}


def comparison_table(scores: dict) -> str:
    lines = ["| portfolio | model | VaR 99 % breaches (expected) | Kupiec p | Christoffersen p | "
             "ES 97.5 % Z2 | Z2 p | passes | mean ES 97.5 % margin | peak/trough Mar 2020 | "
             "peak/trough May 2021 |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for p in PORTFOLIOS:
        for label, s in scores[p].items():
            ok = s["kupiec_p"] > 0.05 and s["ind_p"] > 0.05 and not s["z2_reject"]
            lines.append(
                f"| {p} | {label} | {s['breaches']} ({s['expected']:.1f}) | {_fmt_p(s['kupiec_p'])} | "
                f"{_fmt_p(s['ind_p'])} | {s['z2']:+.3f} | {_fmt_p(s['z2_p'])} | {'yes' if ok else 'no'} | "
                f"{s['mean_rate']:.2%} | {s['p2t']['March 2020']:.2f} | {s['p2t']['May 2021']:.2f} |")
    return "\n".join(lines)


def verdict(scores: dict) -> str:
    """Per portfolio: the passing models, the cheapest of them, and how they compare with the baselines."""
    out = []
    for p in PORTFOLIOS:
        sc = scores[p]
        passing = {k: s for k, s in sc.items()
                   if s["kupiec_p"] > 0.05 and s["ind_p"] > 0.05 and not s["z2_reject"]}
        base = {k: s for k, s in sc.items() if "baseline" in k}
        bp = [k for k in base if k in passing]
        line = f"- **{p}**: {len(passing)} of {len(sc)} models pass all three tests"
        if passing:
            cheapest = min(passing, key=lambda k: passing[k]["mean_rate"])
            steadiest = min(passing, key=lambda k: passing[k]["p2t"]["March 2020"])
            line += (f"; the cheapest passing model is {cheapest} ({passing[cheapest]['mean_rate']:.2%}), "
                     f"the least procyclical in March 2020 {steadiest} "
                     f"(peak/trough {passing[steadiest]['p2t']['March 2020']:.2f})")
        if bp:
            ref = min(bp, key=lambda k: base[k]["mean_rate"])
            better = [k for k in passing if k not in base and passing[k]["mean_rate"] < base[ref]["mean_rate"]
                      and passing[k]["p2t"]["March 2020"] <= base[ref]["p2t"]["March 2020"]]
            line += (f". Passing baseline: {ref} ({base[ref]['mean_rate']:.2%}); models that pass and are both "
                     f"cheaper and no more procyclical in March 2020: {', '.join(better) if better else 'none'}")
        else:
            line += ". No baseline passes"
        out.append(line + ".")
    models = [k for k in scores[PORTFOLIOS[0]] if all(k in scores[p] for p in PORTFOLIOS)]
    everywhere = [k for k in models if all(scores[p][k]["kupiec_p"] > 0.05 and scores[p][k]["ind_p"] > 0.05
                                           and not scores[p][k]["z2_reject"] for p in PORTFOLIOS)]
    out.append(f"- **Passing on all three books**: {', '.join(everywhere) if everywhere else 'none'}.")
    return "\n".join(out)


def garch_table(r_btc: np.ndarray) -> str:
    try:
        from arch import arch_model
    except ImportError:
        arch_model = None
    lines = ["| model | parameter | dpm | robust s.e. | classic s.e. | arch | arch robust s.e. | "
             "(dpm - arch) / s.e. |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    lls = []
    for label, dist, o in (("GARCH(1,1)-normal", "normal", 0), ("t-GARCH", "t", 0), ("GJR-GARCH t", "t", 1),
                           ("GJR-GARCH skew-t", "skewt", 1)):
        f = fit_gjr_garch(r_btc, dist=dist, asymmetric=bool(o))
        ap = ase = None
        if arch_model is not None:
            m = arch_model(r_btc * 100, mean="Zero", vol="GARCH", p=1, o=o, q=1, dist=dist).fit(disp="off")
            ap = m.params.to_numpy().copy()
            ase = m.std_err.to_numpy().copy()
            ap[0] /= 1e4
            ase[0] /= 1e4
            lls.append(f"{label}: dpm {f.loglik:.3f}, arch {m.loglikelihood + r_btc.size * np.log(100):.3f}")
        for i, nm in enumerate(f.param_names):
            scale = 1e6 if nm == "omega" else 1.0
            unit = " (x1e-6)" if nm == "omega" else ""
            arch_cols = (f"{ap[i] * scale:.4f} | {ase[i] * scale:.4f} | {(f.params[i] - ap[i]) / ase[i]:+.3f}"
                         if ap is not None else "— | — | —")
            lines.append(f"| {label} | {nm}{unit} | {f.params[i] * scale:.4f} | {f.robust_std_errors[i] * scale:.4f} | "
                         f"{f.std_errors[i] * scale:.4f} | {arch_cols} |")
    return "\n".join(lines) + "\n\nLog-likelihoods: " + "; ".join(lls) + "."


def vol_forecast_table(lr, rv_gk: np.ndarray, rows: np.ndarray, vol_paths: dict) -> str:
    """Out-of-sample losses of next-day variance forecasts ``h`` against two proxies: the squared
    return (conditionally unbiased, noisy) and the Garman-Klass range variance (efficient, biased low).
    QLIKE ``proxy/h + ln h`` and MSE ``(proxy - h)^2`` are the losses that rank forecasts correctly
    with a noisy unbiased proxy (Patton 2011)."""
    lines = ["| asset | model | QLIKE r² (diff. to EWMA) | MSE r² (ratio to EWMA) | QLIKE GK (diff.) | "
             "MSE GK (ratio) |", "|---|---|---:|---:|---:|---:|"]
    r = lr.values
    for j, a in enumerate(ASSETS):
        proxies = {"sq": r[rows + 1, j] ** 2, "gk": rv_gk[rows + 1, j]}
        res = {}
        for label, vols in vol_paths.items():
            h = vols[rows, j] ** 2
            row = {}
            for k, px in proxies.items():
                ok = np.isfinite(h) & np.isfinite(px) & (h > 0)
                row[k] = (float(np.mean(px[ok] / h[ok] + np.log(h[ok]))), float(np.mean((px[ok] - h[ok]) ** 2)),
                          int(ok.sum()))
            res[label] = row
        base = res[next(iter(res))]
        for label, row in res.items():
            lines.append(f"| {a} | {label} | {row['sq'][0] - base['sq'][0]:+.4f} | {row['sq'][1] / base['sq'][1]:.3f} | "
                         f"{row['gk'][0] - base['gk'][0]:+.4f} | {row['gk'][1] / base['gk'][1]:.3f} |")
    return "\n".join(lines)


def dependence_tables(lr) -> str:
    r = lr.values
    z = np.column_stack([r[:, j] / np.sqrt(fit_gjr_garch(r[:, j], dist="t", asymmetric=False).variance[:-1])
                         for j in range(r.shape[1])])
    dcc = fit_dcc(z)
    u = pseudo_observations(z)
    out = [f"DCC(1,1) on t-GARCH residuals, {lr.dates[0]} … {lr.dates[-1]}: a = {dcc.a:.4f} "
           f"(robust s.e. {dcc.robust_std_errors[0]:.4f}), b = {dcc.b:.4f} ({dcc.robust_std_errors[1]:.4f}); "
           f"the BTC-ETH correlation forecast ranges from {np.min(dcc.correlation[1:, 0, 1]):.2f} to "
           f"{np.max(dcc.correlation[1:, 0, 1]):.2f} (mean {np.mean(dcc.correlation[1:, 0, 1]):.2f}).", "",
           "| copula | parameters | pseudo-log-likelihood | AIC | lower tail dependence | upper tail dependence |",
           "|---|---|---:|---:|---:|---:|"]
    for fam in ("gaussian", "t", "clayton", "clayton_survival", "gumbel", "gumbel_survival"):
        c = fit_copula(u, fam)
        lo, up = c.tail_dependence()
        par = (f"rho = {c.corr[0, 1]:.3f}" if fam == "gaussian" else
               f"rho = {c.corr[0, 1]:.3f}, nu = {c.nu:.2f}" if fam == "t" else f"theta = {c.theta:.3f}")
        out.append(f"| {fam} | {par} | {c.loglik:.1f} | {c.aic:.1f} | {lo[0, 1]:.3f} | {up[0, 1]:.3f} |")
    e_lo = [empirical_tail_dependence(u, q, "lower")[0, 1] for q in (0.10, 0.05, 0.025, 0.01)]
    e_up = [empirical_tail_dependence(u, q, "upper")[0, 1] for q in (0.10, 0.05, 0.025, 0.01)]
    out += ["", "Empirical tail dependence of the same residuals, `P(U_ETH in tail | U_BTC in tail)` at "
            "q = 10 %, 5 %, 2.5 %, 1 %: lower " + ", ".join(f"{v:.2f}" for v in e_lo) + "; upper "
            + ", ".join(f"{v:.2f}" for v in e_up) + "."]
    out += ["", "| HMM | state | BTC vol (annual) | ETH vol (annual) | BTC-ETH correlation | mean stay (days) | "
                "share of days |", "|---|---|---:|---:|---:|---:|---:|"]
    for k in (2, 3):
        h = fit_gaussian_hmm(r, k)
        vols = h.vols() * np.sqrt(365.0)
        share = h.smoothed(r).mean(axis=0)
        for s in range(k):
            name = "stressed" if s == k - 1 else ("calm" if s == 0 else "middle")
            out.append(f"| {k} states (BIC {h.bic:.0f}) | {name} | {vols[s, 0]:.0%} | {vols[s, 1]:.0%} | "
                       f"{h.correlations()[s, 0, 1]:.3f} | {h.expected_durations()[s]:.1f} | {share[s]:.0%} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def figures(lr, rows, series: dict, margins, books) -> None:
    from matplotlib.figure import Figure

    from dpm.plot import plot_model_margins, plot_regimes

    d = lr.dates
    fig = Figure(figsize=(11, 6.5))
    ax = fig.subplots(2, 1, sharex=True)
    plot_regimes(d[rows], series["stressed_prob"][rows],
                 {"DCC (t-GARCH margins)": series["dcc_corr"][rows], "EWMA λ=0.94": series["ewma_corr"][rows]},
                 prices=books.prices[rows], ax=ax)
    fig.savefig(IMG / "models_regimes.png", dpi=110)
    fig = Figure(figsize=(11, 5))
    ax = fig.add_subplot(1, 1, 1)
    show = ["EWMA-normal (baseline)", "FHS 500d (baseline)", "GJR-GARCH skew-t", "regime (3-state HMM)",
            "learned (GBM quantiles + FHS)"]
    m = (d[rows] >= np.datetime64("2020-01-01")) & (d[rows] <= np.datetime64("2021-12-31"))
    plot_model_margins(d[rows][m], {k: margins[STRADDLE][k]["es975"][m] for k in show},
                       books.realized[STRADDLE][rows][m], ax=ax,
                       title="Short BTC straddle (1 BTC): 97.5 % ES margin (as -margin) vs realised next-day P&L, "
                             "2020-2021")
    fig.savefig(IMG / "models_margins.png", dpi=110)


# ---------------------------------------------------------------------------------------------

def compute(lr, rv, books: Books, rows: np.ndarray) -> dict:
    """Walk every model forward; margins of the three books and the forecast series for the tables."""
    first = int(rows[0])
    margins = {p: {} for p in PORTFOLIOS}
    wfs = {}
    timings = {}
    for label, name, kw in MODELS:
        t0 = time.time()
        kw = dict(kw)
        if name == "har":
            kw.update(realized=rv, min_obs=first)
        wf = WalkForward(risk_model(name, **kw), lr, refit_every=REFIT, first_fit=first, vol_shocks=False)
        res = model_run(wf, books, rows)
        for p in PORTFOLIOS:
            margins[p][label] = res[p]
        wfs[label] = wf
        timings[label] = time.time() - t0
        print(f"{label}: {timings[label]:.0f} s", file=sys.stderr, flush=True)
    t0 = time.time()
    direct = direct_quantiles(lr, books, rows)
    for p in LINEAR:
        margins[p][DIRECT] = direct[p]
    timings[DIRECT] = time.time() - t0
    vols = {"EWMA λ=0.94": "EWMA-normal (baseline)", "GARCH(1,1)-normal": "GARCH(1,1)-normal",
            "t-GARCH": "t-GARCH", "GJR-GARCH skew-t": "GJR-GARCH skew-t", "HAR-GK (log)": "HAR (Garman-Klass) + FHS",
            "regime (2-state HMM)": "regime (2-state HMM)", "learned (effective vol)": "learned (GBM quantiles + FHS)"}
    vols = {k: wfs[v].forecast_path()[0] for k, v in vols.items()}
    har_sq = WalkForward(risk_model("har", realized=None, log=False, min_obs=first), lr, refit_every=REFIT,
                         first_fit=first)
    vols["HAR-RV (squared returns, linear)"] = har_sq.forecast_path()[0]
    series = {"stressed_prob": wfs["regime (2-state HMM)"].extras_path("prob")[:, -1],
              "dcc_corr": wfs["DCC (t-GARCH margins)"].forecast_path()[1][:, 0, 1],
              "ewma_corr": wfs["EWMA-normal (baseline)"].forecast_path()[1][:, 0, 1]}
    return {"margins": margins, "timings": timings, "vols": vols, "series": series}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print", action="store_true", help="print the tables, do not write the docs")
    ap.add_argument("--quick", action="store_true", help="2020 to July 2021 only (a smoke run)")
    ap.add_argument("--cache", type=Path, help="pickle of the walk-forward results: reused if it exists, "
                                               "written otherwise (to iterate on the tables)")
    args = ap.parse_args()
    t_all = time.time()
    lr, rv = load_data("2021-07-31" if args.quick else END_DATE)
    start = "2020-01-01" if args.quick else START
    books = Books(lr)
    n = lr.values.shape[0]
    rows = np.arange(int(np.searchsorted(lr.dates, np.datetime64(start))), n - 1)
    if args.cache is not None and args.cache.exists():
        with open(args.cache, "rb") as fh:
            out = pickle.load(fh)
    else:
        out = compute(lr, rv, books, rows)
        out["seconds"] = time.time() - t_all
        if args.cache is not None:
            with open(args.cache, "wb") as fh:
                pickle.dump(out, fh)
    margins, timings = out["margins"], out["timings"]
    scores = {p: {k: score(books, rows, lr.dates, m, p) for k, m in margins[p].items()} for p in PORTFOLIOS}
    d0, d1 = lr.dates[rows[0]], lr.dates[rows[-1]]
    r_btc = load_history().log_returns("BTC").values[:, 0]
    sections = [
        f"Generated by `python benchmarks/make_model_comparison.py` from the bundled history: BTC and ETH "
        f"daily closes {lr.dates[0]} … {lr.dates[-1]}; margins set at each close from {d0} to {d1} "
        f"({rows.size} days) for the next day; every model refitted every {REFIT} days on the data up to "
        f"the refit close (walk-forward, no look-ahead); {N_SCEN:,} scenarios a day for simulation models, "
        f"the 500-day window for historical ones. Walk-forward run time {out['seconds']:.0f} s on 2 shared cores.",
        "#### Margin backtest: 99 % VaR coverage, 97.5 % ES (Acerbi-Székely Z2), capital cost and procyclicality",
        "\"passes\" = Kupiec p > 0.05, Christoffersen independence p > 0.05 and Z2 not rejected at 5 % "
        "(normal null, `es_backtest_z2`). Mean margin = 97.5 % ES over gross USD exposure (linear books) or "
        "over the BTC price (straddle: per 1 BTC of underlying). Peak/trough of that margin rate in "
        f"{', '.join(f'{k} ({a} … {b})' for k, (a, b) in PERIODS.items())}.",
        comparison_table(scores),
        "#### Which models win",
        verdict(scores),
        "#### GARCH fits on the full BTC history against `arch` (zero mean, same backcast)",
        garch_table(r_btc),
        "#### One-day variance forecasts, out of sample (same days; lower is better, EWMA = 0 / 1)",
        vol_forecast_table(lr, rv, rows, out["vols"]),
        "#### Dependence fitted on the whole BTC/ETH sample",
        dependence_tables(lr),
        "#### Run time per model (fits + scenarios + revaluation of the three books)",
        "| model | seconds |\n|---|---:|\n" + "\n".join(f"| {k} | {v:.0f} |" for k, v in timings.items()),
    ]
    body = "\n\n".join(sections)
    if args.print:
        print(body)
        return
    IMG.mkdir(parents=True, exist_ok=True)
    figures(lr, rows, out["series"], margins, books)
    text = DOC.read_text(encoding="utf-8")
    i, j = text.index(BEGIN), text.index(END)
    DOC.write_text(text[: i + len(BEGIN)] + "\n\n" + body + "\n\n" + text[j:], encoding="utf-8")
    print(f"wrote {DOC} and {IMG}/models_*.png", file=sys.stderr)


if __name__ == "__main__":
    main()
