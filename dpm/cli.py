"""Command line: margin accounts on a market and print a summary table.

``python -m dpm`` (or ``dpm``) with no arguments margins 10,000 generated sample accounts on the
bundled BTC/ETH sample market with dpm's default 63-scenario model. Options choose another preset,
read your own instruments/accounts files, and write the per-account results to CSV or JSON.

``python -m dpm stress`` revalues the accounts under the named historical crypto stresses (computed
from the bundled price history) and ``python -m dpm var`` computes Monte Carlo VaR / ES with
correlated shocks calibrated (EWMA) on the bundled history.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

import numpy as np

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from dpm.models.presets import PRESETS

    p = argparse.ArgumentParser(
        prog="dpm",
        description="Dynamic portfolio margin for crypto derivatives: margin many accounts under a "
                    "scenario (risk-matrix) model and print a summary.",
    )
    p.add_argument("command", nargs="?", default="margin", choices=["margin", "stress", "var"],
                   help="margin (default): scenario margin; stress: named historical stresses; "
                        "var: Monte Carlo VaR/ES")
    p.add_argument("--model", default="default", choices=sorted(PRESETS),
                   help="margin model preset (default: dpm's 63-scenario model)")
    p.add_argument("--accounts", type=int, default=10_000,
                   help="number of generated sample accounts (ignored with --accounts-file)")
    p.add_argument("--seed", type=int, default=0, help="seed of the account generator")
    p.add_argument("--accounts-file", help="positions file (CSV/JSON/Parquet: account_id,instrument,quantity)")
    p.add_argument("--collateral-file", help="collateral file (account_id,currency,amount)")
    p.add_argument("--instruments-file", help="instrument file (default: the bundled sample listing)")
    p.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--top", type=int, default=10, help="rows of the largest-margin table")
    p.add_argument("--paths", type=int, default=10_000, help="Monte Carlo paths (var)")
    p.add_argument("--level", type=float, default=0.99, help="confidence level (var)")
    p.add_argument("--horizon", type=int, default=1, help="horizon in days (var)")
    p.add_argument("--student-t", type=float, default=None, metavar="DOF",
                   help="Student-t copula with this many degrees of freedom (var; default normal)")
    p.add_argument("--csv", help="write per-account results to this CSV file")
    p.add_argument("--json", help="write per-account results to this JSON file")
    return p


def _fmt(x: float) -> str:
    return f"{x:,.2f}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dpm`` / ``python -m dpm``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from dpm.engines.margin import MarginEngine
    from dpm.market.sample import default_instruments, default_market
    from dpm.models.presets import preset
    from dpm.portfolio import io
    from dpm.portfolio.sample import generate_accounts

    market = default_market()
    table = io.read_instruments(args.instruments_file) if args.instruments_file else default_instruments()
    if args.accounts_file:
        book = io.read_accounts(args.accounts_file, table, collateral_path=args.collateral_file)
        source = args.accounts_file
    else:
        book = generate_accounts(args.accounts, table, seed=args.seed)
        source = f"{args.accounts:,} generated sample accounts (seed {args.seed})"
    if args.command == "stress":
        return _stress(args, market, table, book, source)
    if args.command == "var":
        return _var(args, market, table, book, source)
    model = preset(args.model)

    t0 = time.perf_counter()
    engine = MarginEngine(market, table, model, workers=args.workers)
    t1 = time.perf_counter()
    res = engine.margin_many(book, workers=args.workers)
    t2 = time.perf_counter()

    s = res.summary()
    print(f"dpm portfolio margin — model {model.name!r} ({model.source})")
    print(f"market: {market!r}")
    print(f"accounts: {source}; {book.n_positions:,} positions over {len(table):,} instruments; "
          f"{engine.pnl_matrix.shape[1]} scenarios per underlying")
    print(f"time: revalue market {1e3 * (t1 - t0):.1f} ms, margin accounts {1e3 * (t2 - t1):.1f} ms\n")
    summary_rows = [
        ["accounts", f"{int(s['accounts']):,}"],
        ["total initial margin (USD)", _fmt(s["total_initial_margin"])],
        ["total maintenance margin (USD)", _fmt(s["total_maintenance_margin"])],
        ["total equity (USD)", _fmt(s["total_equity"])],
        ["accounts below initial margin", f"{int(s['below_initial']):,}"],
        ["accounts below maintenance margin", f"{int(s['below_maintenance']):,}"],
    ]
    print(_table(summary_rows, ["summary", "value"]))
    print()
    order = np.argsort(-res.initial_margin, kind="stable")[: max(0, args.top)]
    rows = []
    for i in order:
        j = int(np.argmax(res.charge[i])) if res.charge.shape[1] else 0
        u = res.underlyings[j] if res.underlyings else ""
        k = int(res.worst_scenario[i, j]) if res.underlyings else -1
        labels = res.scenario_labels.get(u, ())
        rows.append([
            str(res.account_id[i]), _fmt(res.initial_margin[i]), _fmt(res.maintenance_margin[i]),
            _fmt(res.equity[i]), f"{res.margin_ratio[i]:.3f}", u,
            labels[k] if 0 <= k < len(labels) else "-",
        ])
    if rows:
        print(f"largest {len(rows)} initial margins:")
        print(_table(rows, ["account", "IM (USD)", "MM (USD)", "equity (USD)", "MM/equity",
                            "main underlying", "worst scenario"]))
    _write(args, res.to_columns())
    return 0


def _write(args: argparse.Namespace, cols: dict) -> None:
    from dpm.portfolio import io

    if args.csv:
        io.write_columns(args.csv, cols, format="csv")
        print(f"\nwrote {args.csv}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({k: np.asarray(a).tolist() for k, a in cols.items()}, fh)
        print(f"wrote {args.json}")


def _stress(args: argparse.Namespace, market, table, book, source: str) -> int:
    from dpm.engines.risk import ScenarioRiskEngine
    from dpm.models.generators.stress import historical_stress_scenarios

    scen = historical_stress_scenarios(underlyings=tuple(u for u in ("BTC", "ETH") if u in table.underlyings))
    t0 = time.perf_counter()
    res = ScenarioRiskEngine(market, table, workers=args.workers).stress(book, scen, workers=args.workers)
    t1 = time.perf_counter()
    print("dpm stress test — named historical crypto stresses (moves computed from the bundled history)")
    print(f"accounts: {source}; {book.n_positions:,} positions; {len(scen.names)} scenarios; "
          f"{1e3 * (t1 - t0):.1f} ms\n")
    rows = []
    for j, name in enumerate(res.scenario_names):
        moves = ", ".join(f"{u} {scen.price_move[j, k]:+.1%}" for k, u in enumerate(scen.underlyings))
        loss = res.loss[:, j]
        rows.append([name, moves, _fmt(loss.sum()), _fmt(loss.max()), f"{int((res.worst_scenario == j).sum()):,}"])
    print(_table(rows, ["scenario", "moves", "total loss (USD)", "largest account loss", "worst for #accounts"]))
    order = np.argsort(-res.worst_loss, kind="stable")[: max(0, args.top)]
    if order.size:
        print(f"\nlargest {order.size} stress losses:")
        print(_table([[str(res.account_id[i]), _fmt(res.worst_loss[i]), res.scenario_names[res.worst_scenario[i]]]
                      for i in order], ["account", "worst loss (USD)", "scenario"]))
    cols = {"account_id": res.account_id, "worst_loss": res.worst_loss,
            "worst_scenario": np.array([res.scenario_names[k] for k in res.worst_scenario], dtype=object)}
    cols.update({f"loss:{n}": res.loss[:, j] for j, n in enumerate(res.scenario_names)})
    _write(args, cols)
    return 0


def _var(args: argparse.Namespace, market, table, book, source: str) -> int:
    from dpm.engines.risk import ScenarioRiskEngine
    from dpm.market.history import load_history
    from dpm.models.calibration.ewma import ewma_covariance
    from dpm.models.generators.montecarlo import mc_scenarios

    unds = [u for u in ("BTC", "ETH") if u in table.underlyings]
    lr = load_history().log_returns(unds)
    cov = ewma_covariance(lr.values)  # the EWMA (lambda 0.94) forecast for the day after the history
    dist = "normal" if args.student_t is None else "student_t"
    scen = mc_scenarios(cov, n_paths=args.paths, horizon=args.horizon, dist=dist, dof=args.student_t,
                        seed=args.seed, underlyings=unds)
    t0 = time.perf_counter()
    res = ScenarioRiskEngine(market, table, workers=args.workers).var_es(book, scen, (args.level,), workers=args.workers)
    t1 = time.perf_counter()
    vols = ", ".join(f"{u} {np.sqrt(cov[k, k] * 365):.0%}" for k, u in enumerate(unds))
    print(f"dpm Monte Carlo VaR / ES — {args.paths:,} joint paths ({dist}), {args.horizon}-day horizon, "
          f"level {args.level:.2%}")
    print(f"EWMA vols (annualised) on {lr.dates[-1]}: {vols}")
    print(f"accounts: {source}; {book.n_positions:,} positions; full revaluation + tail statistics "
          f"{1e3 * (t1 - t0):.1f} ms\n")
    var, es = res.var[0], res.es[0]
    print(_table([["accounts", f"{len(var):,}"], ["total VaR (USD)", _fmt(var.sum())], ["total ES (USD)", _fmt(es.sum())],
                  ["largest ES (USD)", _fmt(es.max() if es.size else 0.0)]], ["summary", "value"]))
    order = np.argsort(-es, kind="stable")[: max(0, args.top)]
    if order.size:
        print(f"\nlargest {order.size} ES:")
        print(_table([[str(res.account_id[i]), _fmt(var[i]), _fmt(es[i])] for i in order],
                     ["account", "VaR (USD)", "ES (USD)"]))
    _write(args, {"account_id": res.account_id, "var": var, "es": es})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
