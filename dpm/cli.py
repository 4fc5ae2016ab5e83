"""Command line: margin accounts on a market and print a summary table.

``python -m dpm`` (or ``dpm``) with no arguments margins 10,000 generated sample accounts on the
bundled BTC/ETH sample market with dpm's default 63-scenario model. Options choose another preset,
read your own instruments/accounts files, and write the per-account results to CSV or JSON.
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
    from .models.presets import PRESETS

    p = argparse.ArgumentParser(
        prog="dpm",
        description="Dynamic portfolio margin for crypto derivatives: margin many accounts under a "
                    "scenario (risk-matrix) model and print a summary.",
    )
    p.add_argument("command", nargs="?", default="margin", choices=["margin"],
                   help="what to run (default: margin)")
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
    from . import io
    from .engine import MarginEngine
    from .models.presets import preset
    from .sample import default_instruments, generate_accounts
    from .sample_market import default_market

    market = default_market()
    table = io.read_instruments(args.instruments_file) if args.instruments_file else default_instruments()
    if args.accounts_file:
        book = io.read_accounts(args.accounts_file, table, collateral_path=args.collateral_file)
        source = args.accounts_file
    else:
        book = generate_accounts(args.accounts, table, seed=args.seed)
        source = f"{args.accounts:,} generated sample accounts (seed {args.seed})"
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
    cols = res.to_columns()
    if args.csv:
        io.write_columns(args.csv, cols, format="csv")
        print(f"\nwrote {args.csv}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({k: np.asarray(a).tolist() for k, a in cols.items()}, fh)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
