"""Command line: margin accounts on a market and print a summary table.

``python -m dpm`` (or ``dpm``) with no arguments margins 10,000 generated sample accounts on the
bundled BTC/ETH sample market with dpm's default 63-scenario model. Options choose another preset,
read your own instruments/accounts files, and write the per-account results to CSV or JSON.

``python -m dpm stress`` revalues the accounts under the named historical crypto stresses (computed
from the bundled price history) and ``python -m dpm var`` computes Monte Carlo VaR / ES with
correlated shocks calibrated (EWMA) on the bundled history. ``margin`` is the default subcommand,
so ``python -m dpm --model deribit`` is ``python -m dpm margin --model deribit``.

Each subcommand has its own options (an option another subcommand uses is refused, not ignored).
Errors are one line on standard error, ``dpm: error: ...``, naming the file, field and row; the
exit status is

* ``0`` success (also when the reader of standard output goes away, as with ``| head``);
* ``1`` the command line is fine but the run cannot give a correct result: invalid file contents,
  a non-finite result, too little memory, a failed write;
* ``2`` the command line is wrong: unknown option or one the subcommand does not take, a value out
  of its range, an input file that does not exist, an output directory that does not exist;
* ``70`` an internal error (a bug in dpm: please report it with the output of ``--debug``);
* ``130`` interrupted (Ctrl-C).

``--debug`` prints the Python traceback as well. Output files are written completely or not at all
(temporary file in the same directory, renamed when every output is written).

Adding a subcommand takes a function that adds its options and a function that runs it::

    def _solvency_arguments(p):
        add_book_options(p)
        add_run_options(p)
        add_output_options(p)
        p.add_argument("--market", type=input_file((".json",)), help="market snapshot file")

    @command("solvency", "...", _solvency_arguments)
    def _solvency(args):
        market, table, book, source = load_book(args)
        ...
        written = write_results(args, columns)
        print(...)
        return 0
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpm._util import arrow as _arrow
from dpm.errors import DPMError

__all__ = [
    "COMMANDS",
    "DEFAULT_COMMAND",
    "EXIT_DATA",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "UsageError",
    "add_book_options",
    "add_output_options",
    "add_run_options",
    "build_parser",
    "command",
    "input_file",
    "load_book",
    "main",
    "write_results",
]

#: When this module was imported (the start of ``python -m dpm`` after the interpreter and numpy).
_T_IMPORT = time.perf_counter()

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130

#: Formats the readers and writers understand, by file suffix (Arrow IPC: ``.arrow``, ``.feather``, ``.ipc``).
DATA_SUFFIXES = (".csv", ".json", ".parquet", ".pq", ".arrow", ".feather", ".ipc")
#: Formats a ``--market`` file may have (a saved snapshot or a marks table).
MARKET_SUFFIXES = DATA_SUFFIXES
DEFAULT_ACCOUNTS = 10_000
MAX_WORKERS = 1024


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse parser whose errors become one-line :class:`UsageError` instead of usage + exit."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ----------------------------------------------------------------------------------------------------
# subcommand registry
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """A subcommand: ``arguments(parser)`` adds its options, ``run(args)`` returns the exit status."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Registered subcommands in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {}
#: Subcommand used when the command line starts with an option (or is empty).
DEFAULT_COMMAND = "margin"


def command(
    name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Decorator registering ``run(args) -> int`` as the subcommand ``name``."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, arguments, run)
        return run

    return register


def build_parser() -> argparse.ArgumentParser:
    """The ``dpm`` parser: global options and one subparser per registered subcommand."""
    from dpm import __version__

    p = _Parser(
        prog="dpm",
        allow_abbrev=False,
        description="Dynamic portfolio margin for crypto derivatives. Subcommands: "
        + "; ".join(f"{c.name}: {c.help}" for c in COMMANDS.values())
        + f". Without a subcommand, {DEFAULT_COMMAND!r} runs.",
        epilog="Exit status: 0 ok, 1 invalid data or no valid result, 2 invalid command line, "
        "70 internal error. 'dpm COMMAND --help' lists the options of a subcommand.",
    )
    p.add_argument("--version", action="version", version=f"dpm {__version__}")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for c in COMMANDS.values():
        sp = sub.add_parser(c.name, help=c.help, description=c.help, allow_abbrev=False)
        # SUPPRESS: a subparser default would overwrite a --debug given before the subcommand
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the Python traceback of an error")
        c.arguments(sp)
    return p


_GLOBAL_FLAGS = ("--debug",)


def _with_default_command(argv: list[str]) -> list[str]:
    """Insert :data:`DEFAULT_COMMAND` when the command line does not name a subcommand."""
    i = 0
    while i < len(argv) and argv[i] in _GLOBAL_FLAGS:
        i += 1
    if i == len(argv):
        return argv + [DEFAULT_COMMAND]
    tok = argv[i]
    if tok in COMMANDS or tok in ("-h", "--help", "--version"):
        return argv
    if tok.startswith("-"):
        return argv[:i] + [DEFAULT_COMMAND] + argv[i:]
    return argv  # an unknown word: argparse names the valid subcommands


# ----------------------------------------------------------------------------------------------------
# option types (a bad value is a usage error naming the option)
# ----------------------------------------------------------------------------------------------------
def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {v}")
        return v

    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = True, hi_open: bool = True) -> Callable[[str], float]:
    """argparse type: a finite float in the interval between ``lo`` and ``hi``."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text!r}")
        return v

    return parse


def input_file(suffixes: Sequence[str] = DATA_SUFFIXES) -> Callable[[str], str]:
    """argparse type: an existing, readable regular file whose suffix is one of ``suffixes``."""

    def parse(text: str) -> str:
        try:
            p = Path(text)
            exists, is_dir = p.exists(), p.is_dir()
        except (ValueError, OSError) as exc:  # embedded NUL byte, name too long, ...
            raise argparse.ArgumentTypeError(f"{_label(text)}: not a usable path ({exc})") from None
        if not exists:
            raise argparse.ArgumentTypeError(f"{_label(text)}: no such file")
        if is_dir:
            raise argparse.ArgumentTypeError(f"{_label(text)}: is a directory, not a file")
        if not os.access(p, os.R_OK):
            raise argparse.ArgumentTypeError(f"{_label(text)}: permission denied")
        if p.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{_label(text)}: cannot tell the format from the suffix {p.suffix!r}; "
                f"use one of {', '.join(suffixes)}"
            )
        return text

    return parse


def market_path(text: str) -> str:
    """argparse type: a market file (``MARKET_SUFFIXES``) or a directory of venue payloads."""
    try:
        is_dir = Path(text).is_dir()
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(f"{_label(text)}: not a usable path ({exc})") from None
    if is_dir:
        if not os.access(text, os.R_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{_label(text)}: permission denied")
        return text
    return input_file(MARKET_SUFFIXES)(text)


def output_file(text: str) -> str:
    """argparse type: a file path whose directory exists (the file itself is replaced)."""
    try:
        p = Path(text)
        directory = p.parent if str(p.parent) else Path(".")
        is_dir, dir_ok = p.is_dir(), directory.is_dir()
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(f"{_label(text)}: not a usable path ({exc})") from None
    if not text or is_dir:
        raise argparse.ArgumentTypeError(f"{_label(text)}: is a directory, not a file")
    if not dir_ok:
        raise argparse.ArgumentTypeError(f"{_label(text)}: directory {_label(str(directory))} does not exist")
    if not os.access(directory, os.W_OK):
        raise argparse.ArgumentTypeError(f"{_label(text)}: directory {_label(str(directory))} is not writable")
    return text


def output_target(text: str) -> str:
    """argparse type of ``--out``: a file path whose directory exists, or a directory (the results of
    a partitioned book, one file per partition; see :func:`add_partition_options`)."""
    try:
        p = Path(text)
        if text and p.is_dir():
            return text
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(f"{_label(text)}: not a usable path ({exc})") from None
    return output_file(text)


def scheduler_address(text: str) -> str:
    """argparse type of ``--scheduler``: ``local`` or a scheduler address such as ``tcp://host:8786``."""
    if text != "local" and (not text or any(ch.isspace() for ch in text)):
        raise argparse.ArgumentTypeError(f"expected 'local' or an address like tcp://host:8786, got {_label(text)!r}")
    return text


# ----------------------------------------------------------------------------------------------------
# option groups shared by subcommands
# ----------------------------------------------------------------------------------------------------
def add_book_options(p: argparse.ArgumentParser, *, seed_help: str | None = None) -> None:
    """Accounts: generated (``--accounts``, ``--seed``) or read from files; instruments file.

    ``seed_help`` describes ``--seed`` when the subcommand uses the seed for more than the account
    generator (then ``--seed`` is allowed with ``--accounts-file``).
    """
    g = p.add_argument_group("accounts")
    g.add_argument("--accounts", type=int_range(0), default=None, metavar="N",
                   help=f"number of generated sample accounts (default {DEFAULT_ACCOUNTS:,}; "
                        "not with --accounts-file)")
    g.add_argument("--seed", type=int_range(0), default=None,
                   help=seed_help or "seed of the account generator (default 0; not with --accounts-file)")
    g.add_argument("--accounts-file", type=input_file(), metavar="PATH",
                   help="positions file (CSV/JSON/Parquet: account_id,instrument,quantity)")
    g.add_argument("--collateral-file", type=input_file(), metavar="PATH",
                   help="collateral file (account_id,currency,amount); needs --accounts-file")
    g.add_argument("--instruments-file", type=input_file(), metavar="PATH",
                   help="instrument file (default: the bundled sample listing)")
    m = p.add_argument_group("market")
    m.add_argument("--market", type=market_path, nargs="+", metavar="PATH",
                   help="market data: venue API payloads saved as JSON (Deribit, OKX), a marks table "
                        "(CSV/Parquet) or a saved dpm snapshot; several payload files or a directory "
                        "(default: the bundled generated market of 2026-11-27)")
    m.add_argument("--max-age", type=_max_age, default=300.0, metavar="SECONDS",
                   help="refuse marks older than this (default 300; 'none' for historical files)")
    m.add_argument("--market-format", choices=("venue", "marks", "dpm-json", "dpm-parquet"), default=None,
                   help="skip the detection of the market file's format")
    p.set_defaults(_seed_shared=seed_help is not None)


def _max_age(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    return float_range(0.0, math.inf, lo_open=True, hi_open=True)(text)


def load_market_option(args: argparse.Namespace) -> Any:
    """The market of ``--market`` (loaded and checked), or the bundled generated market."""
    if not getattr(args, "market", None):
        from dpm.market.sample import default_market

        return default_market()
    from dpm.market.loaders import load_market

    paths = args.market if len(args.market) > 1 else args.market[0]
    return load_market(paths, max_age_s=args.max_age, format=args.market_format)


def add_partition_options(p: argparse.ArgumentParser) -> None:
    """``--partitions DIR``, ``--scheduler ADDRESS|local`` and ``--cluster-workers K`` (see
    :mod:`dpm.engines.distributed`)."""
    g = p.add_argument_group("partitioned books (Dask)")
    g.add_argument("--partitions", metavar="DIR",
                   help="a partitioned book: a directory of part-NNNNN.parquet positions files (with "
                        "part-NNNNN.collateral.parquet), whole accounts per file; margined partition by "
                        "partition, results into --out DIR (not with --accounts or --accounts-file)")
    g.add_argument("--scheduler", type=scheduler_address, metavar="ADDRESS",
                   help="run the partitions on a Dask cluster: 'local' starts one on this machine "
                        "(--cluster-workers processes), or the address of a running scheduler "
                        "(tcp://host:8786); needs dask[distributed] (pip install dpm[dask]). Without it, "
                        "--partitions run one after another in this process")
    g.add_argument("--cluster-workers", type=int_range(1, MAX_WORKERS), default=2, metavar="K",
                   help="worker processes of --scheduler local (default 2; each runs --workers threads, "
                        "default 1)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--top`` and ``--timings``."""
    p.add_argument("--workers", type=int_range(1, MAX_WORKERS), default=None, metavar="K",
                   help="threads (default: all cores)")
    p.add_argument("--top", type=int_range(0), default=10, metavar="ROWS",
                   help="rows of the largest-figures table (default 10)")
    p.add_argument("--timings", action="store_true",
                   help="print the time of each phase (read or generate the book, engine, margin, results, "
                        "print) on standard error")


#: Output options: argparse dest -> file format, or None for the format of the file's suffix
#: (``.csv``, ``.json``, ``.parquet``/``.pq``, ``.arrow``/``.feather``/``.ipc``).
OUTPUT_FORMATS: dict[str, str | None] = {"csv": "csv", "json": "json", "out": None}


def add_output_options(p: argparse.ArgumentParser) -> None:
    """``--out PATH`` (format from the suffix), ``--csv PATH`` and ``--json PATH`` (written
    atomically; see :func:`write_results`)."""
    g = p.add_argument_group("output")
    g.add_argument("--out", type=output_target, metavar="PATH",
                   help="write per-account results to this file, in the format of its suffix: .csv, .json, "
                        ".parquet (or .pq), .arrow (Arrow IPC; also .feather, .ipc); Parquet and Arrow "
                        "need pyarrow and are the fastest for large books. With --partitions: a directory, "
                        "one part-NNNNN.parquet per partition")
    g.add_argument("--csv", type=output_file, metavar="PATH", help="write per-account results to this CSV file")
    g.add_argument("--json", type=output_file, metavar="PATH",
                   help="write per-account results to this JSON file ({column: [values]}; "
                        "a value that is not a finite number is written as null)")


# ----------------------------------------------------------------------------------------------------
# helpers for subcommands
# ----------------------------------------------------------------------------------------------------
def load_book(args: argparse.Namespace) -> tuple[Any, Any, Any, str]:
    """``(market, instruments, book, description)`` from the options of :func:`add_book_options`."""
    from dpm.market.sample import default_instruments
    from dpm.portfolio import io
    from dpm.portfolio.sample import generate_accounts

    if args.accounts_file:
        if args.accounts is not None:
            raise UsageError("--accounts cannot be combined with --accounts-file (the file gives the accounts)")
        if args.seed is not None and not args._seed_shared:
            raise UsageError("--seed cannot be combined with --accounts-file (it seeds the account generator)")
    elif args.collateral_file:
        raise UsageError("--collateral-file needs --accounts-file")
    _check_distinct_paths(args)
    market = load_market_option(args)
    table = io.read_instruments(args.instruments_file) if args.instruments_file else default_instruments()
    if args.accounts_file:
        book = io.read_accounts(args.accounts_file, table, collateral_path=args.collateral_file)
        source = _label(args.accounts_file)
    else:
        n = DEFAULT_ACCOUNTS if args.accounts is None else args.accounts
        seed = 0 if args.seed is None else args.seed
        book = generate_accounts(n, table, seed=seed)
        source = f"{n:,} generated sample accounts (seed {seed})"
    return market, table, book, source


def _check_distinct_paths(args: argparse.Namespace) -> None:
    inputs = [getattr(args, k, None) for k in ("accounts_file", "collateral_file", "instruments_file")]
    outputs = [getattr(args, k, None) for k in OUTPUT_FORMATS]
    real_in = {os.path.realpath(p): p for p in inputs if p}
    seen: dict[str, str] = {}
    for p in filter(None, outputs):
        rp = os.path.realpath(p)
        if rp in real_in:
            raise UsageError(f"output {_label(p)} is also an input file; choose another output path")
        if rp in seen:
            raise UsageError(f"output {_label(p)} is given twice")
        seen[rp] = p


def require_finite(columns: Mapping[str, Any], account_id: Any, allow_infinite: Sequence[str] = ()) -> None:
    """Raise unless every float result is finite (``allow_infinite`` columns may hold ±inf, not NaN)."""
    from dpm.engines.results import first_non_finite

    bad = first_non_finite(columns, allow_infinite)
    if bad is not None:
        name, i, value = bad
        raise DPMError(
            f"results: column {name!r} of account {_label(repr(str(account_id[i])))} is {value!r}; "
            "dpm does not write or print a figure that is not a finite number (no file written)"
        )


def _json_text(columns: Mapping[str, Any]) -> str:
    """``{column: [values]}``, strict JSON: a value that is not a finite number is null."""
    from dpm.portfolio.io import json_columns_text

    return json_columns_text({k: np.asarray(v) for k, v in columns.items()}, nonfinite="null")


def write_results(args: argparse.Namespace, columns: Mapping[str, Any]) -> list[str]:
    """Write ``columns`` to every output option given; all files appear together or none does.

    Returns the paths written. CSV cells follow :func:`dpm.portfolio.io.write_columns` (text cells a
    spreadsheet would run as a formula get a leading ``'``); JSON is ``{column: [values]}`` with
    ``null`` for a value that is not a finite number.
    """
    from dpm._util.files import atomic_paths
    from dpm.portfolio import io

    targets = [(getattr(args, dest), fmt) for dest, fmt in OUTPUT_FORMATS.items() if getattr(args, dest, None)]
    if not targets:
        return []
    for path, fmt in targets:
        if Path(path).is_dir():
            raise UsageError(f"output {_label(path)}: is a directory, not a file (a directory takes the results "
                             "of --partitions)")
        if fmt is None and Path(path).suffix.lower() not in DATA_SUFFIXES:
            raise UsageError(f"output {_label(path)}: cannot tell the format from the suffix; "
                             f"use one of {', '.join(DATA_SUFFIXES)}")
    with atomic_paths([p for p, _ in targets]) as temps:
        for tmp, (path, fmt) in zip(temps, targets):
            fmt = fmt or io.format_of(path)
            if fmt == "json":
                tmp.write_text(_json_text(columns), encoding="utf-8")
            else:
                io.write_columns(tmp, columns, format=fmt)
    return [p for p, _ in targets]


def _label(text: Any) -> str:
    """``text`` safe for one terminal line: control, format and surrogate characters escaped."""
    s = str(text)
    if all(unicodedata.category(ch)[0] != "C" for ch in s):
        return s
    return "".join(ch if unicodedata.category(ch)[0] != "C" else ascii(ch)[1:-1] for ch in s)


def _fmt(x: float) -> str:
    return f"{x:,.2f}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def _print_written(paths: list[str]) -> None:
    for p in paths:
        print(f"wrote {_label(p)}")


# ----------------------------------------------------------------------------------------------------
# margin
# ----------------------------------------------------------------------------------------------------
def _margin_arguments(p: argparse.ArgumentParser) -> None:
    from dpm.models.presets import PRESETS

    p.add_argument("--model", default="default", choices=sorted(PRESETS),
                   help="margin model preset (default: dpm's 63-scenario model)")
    add_book_options(p)
    add_run_options(p)
    add_partition_options(p)
    add_output_options(p)


@command("margin", "scenario (risk-matrix) margin of every account (the default)", _margin_arguments)
def _margin(args: argparse.Namespace) -> int:
    from dpm.engines.margin import MarginEngine
    from dpm.models.presets import preset

    if args.partitions or args.scheduler:
        return _run_partitions(args, "margin", model=preset(args.model))
    t_start = time.perf_counter()
    market, table, book, source = load_book(args)
    model = preset(args.model)
    t0 = time.perf_counter()
    engine = MarginEngine(market, table, model, workers=args.workers)
    t1 = time.perf_counter()
    res = engine.margin_many(book, workers=args.workers)
    t2 = time.perf_counter()
    cols = res.to_columns()
    # margin_ratio = MM / equity is +inf for an account with equity <= 0 and a positive MM
    require_finite(cols, res.account_id, allow_infinite=("margin_ratio",))
    written = write_results(args, cols)
    t3 = time.perf_counter()

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
    order = np.argsort(-res.initial_margin, kind="stable")[: args.top]
    rows = []
    for i in order:
        j = int(np.argmax(res.charge[i])) if res.charge.shape[1] else 0
        u = res.underlyings[j] if res.underlyings else ""
        k = int(res.worst_scenario[i, j]) if res.underlyings else -1
        labels = res.scenario_labels.get(u, ())
        rows.append([
            _label(res.account_id[i]), _fmt(res.initial_margin[i]), _fmt(res.maintenance_margin[i]),
            _fmt(res.equity[i]), f"{res.margin_ratio[i]:.3f}", u,
            labels[k] if 0 <= k < len(labels) else "-",
        ])
    if rows:
        print(f"largest {len(rows)} initial margins:")
        print(_table(rows, ["account", "IM (USD)", "MM (USD)", "equity (USD)", "MM/equity",
                            "main underlying", "worst scenario"]))
    if written:
        print()
    _print_written(written)
    if args.timings:
        sys.stdout.flush()
        phases = {"startup": t_start - _T_IMPORT, "book": t0 - t_start, "engine": t1 - t0, "margin": t2 - t1,
                  "results": t3 - t2, "print": time.perf_counter() - t3}
        print("timings: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in phases.items())
              + " (startup: from importing dpm.cli to the subcommand)", file=sys.stderr)
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# stress
# ----------------------------------------------------------------------------------------------------
def _stress_arguments(p: argparse.ArgumentParser) -> None:
    add_book_options(p)
    add_run_options(p)
    add_partition_options(p)
    add_output_options(p)


def _bundled_underlyings(table: Any, what: str) -> tuple[str, ...]:
    unds = tuple(u for u in ("BTC", "ETH") if u in table.underlyings)
    if not unds:
        raise DPMError(
            f"{what}: the instruments have no BTC or ETH underlying (they have "
            f"{', '.join(table.underlyings) or 'none'}); the bundled history covers BTC and ETH"
        )
    return unds


@command("stress", "loss of every account under named historical crypto stresses", _stress_arguments)
def _stress(args: argparse.Namespace) -> int:
    from dpm.engines.risk import ScenarioRiskEngine
    from dpm.models.generators.stress import historical_stress_scenarios

    if args.partitions or args.scheduler:
        table = _partition_table(args)
        scen = historical_stress_scenarios(underlyings=_bundled_underlyings(table, "stress"))
        return _run_partitions(args, "stress", scenarios=scen)
    market, table, book, source = load_book(args)
    scen = historical_stress_scenarios(underlyings=_bundled_underlyings(table, "stress"))
    t0 = time.perf_counter()
    res = ScenarioRiskEngine(market, table, workers=args.workers).stress(book, scen, workers=args.workers)
    t1 = time.perf_counter()
    cols = {"account_id": res.account_id, "worst_loss": res.worst_loss,
            "worst_scenario": np.array([res.scenario_names[k] for k in res.worst_scenario], dtype=object)}
    cols.update({f"loss:{n}": res.loss[:, j] for j, n in enumerate(res.scenario_names)})
    require_finite(cols, res.account_id)
    written = write_results(args, cols)

    print("dpm stress test — named historical crypto stresses (moves computed from the bundled history)")
    print(f"accounts: {source}; {book.n_positions:,} positions; {len(scen.names)} scenarios; "
          f"{1e3 * (t1 - t0):.1f} ms\n")
    rows = []
    for j, name in enumerate(res.scenario_names):
        moves = ", ".join(f"{u} {scen.price_move[j, k]:+.1%}" for k, u in enumerate(scen.underlyings))
        loss = res.loss[:, j]
        rows.append([name, moves, _fmt(loss.sum()), _fmt(loss.max()) if loss.size else "-",
                     f"{int((res.worst_scenario == j).sum()):,}"])
    print(_table(rows, ["scenario", "moves", "total loss (USD)", "largest account loss", "worst for #accounts"]))
    order = np.argsort(-res.worst_loss, kind="stable")[: args.top]
    if order.size:
        print(f"\nlargest {order.size} stress losses:")
        print(_table([[_label(res.account_id[i]), _fmt(res.worst_loss[i]),
                       res.scenario_names[res.worst_scenario[i]]] for i in order],
                     ["account", "worst loss (USD)", "scenario"]))
    if written:
        print()
    _print_written(written)
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# var
# ----------------------------------------------------------------------------------------------------
def _var_arguments(p: argparse.ArgumentParser) -> None:
    add_book_options(p, seed_help="seed of the account generator and of the Monte Carlo paths (default 0)")
    add_run_options(p)
    g = p.add_argument_group("Monte Carlo")
    g.add_argument("--paths", type=int_range(1, 10_000_000), default=10_000,
                   help="Monte Carlo paths (default 10,000)")
    g.add_argument("--level", type=float_range(0.0, 1.0), default=0.99, help="confidence level in (0, 1)")
    g.add_argument("--horizon", type=int_range(1, 3650), default=1, help="horizon in days (default 1)")
    g.add_argument("--student-t", type=float_range(2.0, math.inf), default=None, metavar="DOF",
                   help="Student-t copula with DOF > 2 degrees of freedom (default normal)")
    add_partition_options(p)
    add_output_options(p)


@command("var", "Monte Carlo VaR / ES with EWMA-calibrated correlated shocks", _var_arguments)
def _var(args: argparse.Namespace) -> int:
    from dpm.engines.risk import ScenarioRiskEngine
    from dpm.market.history import load_history
    from dpm.models.calibration.ewma import ewma_covariance
    from dpm.models.generators.montecarlo import mc_scenarios

    if args.paths * (1.0 - args.level) < 1.0:
        raise UsageError(
            f"--paths {args.paths} leaves no path beyond the {args.level:g} quantile; "
            f"use at least {math.ceil(1.0 / (1.0 - args.level))} paths"
        )
    partitioned = bool(args.partitions or args.scheduler)
    if partitioned:
        table = _partition_table(args)
    else:
        market, table, book, source = load_book(args)
    unds = list(_bundled_underlyings(table, "var"))
    lr = load_history().log_returns(unds)
    cov = ewma_covariance(lr.values)  # the EWMA (lambda 0.94) forecast for the day after the history
    dist = "normal" if args.student_t is None else "student_t"
    seed = 0 if args.seed is None else args.seed
    scen = mc_scenarios(cov, n_paths=args.paths, horizon=args.horizon, dist=dist, dof=args.student_t,
                        seed=seed, underlyings=unds)
    if partitioned:
        return _run_partitions(args, "var_es", scenarios=scen, levels=(args.level,))
    t0 = time.perf_counter()
    res = ScenarioRiskEngine(market, table, workers=args.workers).var_es(book, scen, (args.level,),
                                                                        workers=args.workers)
    t1 = time.perf_counter()
    var, es = res.var[0], res.es[0]
    cols = {"account_id": res.account_id, "var": var, "es": es}
    require_finite(cols, res.account_id)
    written = write_results(args, cols)

    vols = ", ".join(f"{u} {np.sqrt(cov[k, k] * 365):.0%}" for k, u in enumerate(unds))
    print(f"dpm Monte Carlo VaR / ES — {args.paths:,} joint paths ({dist}), {args.horizon}-day horizon, "
          f"level {args.level:.2%}")
    print(f"EWMA vols (annualised) on {lr.dates[-1]}: {vols}")
    print(f"accounts: {source}; {book.n_positions:,} positions; full revaluation + tail statistics "
          f"{1e3 * (t1 - t0):.1f} ms\n")
    print(_table([["accounts", f"{len(var):,}"], ["total VaR (USD)", _fmt(var.sum())],
                  ["total ES (USD)", _fmt(es.sum())],
                  ["largest ES (USD)", _fmt(es.max()) if es.size else "-"]], ["summary", "value"]))
    order = np.argsort(-es, kind="stable")[: args.top]
    if order.size:
        print(f"\nlargest {order.size} ES:")
        print(_table([[_label(res.account_id[i]), _fmt(var[i]), _fmt(es[i])] for i in order],
                     ["account", "VaR (USD)", "ES (USD)"]))
    if written:
        print()
    _print_written(written)
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# partitioned books (margin, stress and var with --partitions / --scheduler)
# ----------------------------------------------------------------------------------------------------
def _partition_table(args: argparse.Namespace) -> Any:
    from dpm.market.sample import default_instruments
    from dpm.portfolio import io

    if not args.partitions:
        raise UsageError("--scheduler needs --partitions DIR (a partitioned book)")
    for opt, dest in (("--accounts", "accounts"), ("--accounts-file", "accounts_file"),
                      ("--collateral-file", "collateral_file")):
        if getattr(args, dest, None) is not None:
            raise UsageError(f"{opt} cannot be combined with --partitions (the directory gives the accounts)")
    if args.seed is not None and not args._seed_shared:
        raise UsageError("--seed cannot be combined with --partitions (it seeds the account generator)")
    for opt in ("csv", "json"):
        if getattr(args, opt, None):
            raise UsageError(f"--{opt} cannot be combined with --partitions: results are written per partition, "
                             "use --out DIR")
    p = Path(args.partitions)
    if not p.is_dir():
        raise UsageError(f"--partitions {_label(args.partitions)}: not a directory")
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {_label(args.out)}: with --partitions, a directory (one file per partition)")
        if os.path.realpath(out) == os.path.realpath(p):
            raise UsageError("--out is the --partitions directory; choose another directory for the results")
    return io.read_instruments(args.instruments_file) if args.instruments_file else default_instruments()


def _run_partitions(args: argparse.Namespace, kind: str, **kw: Any) -> int:
    from dpm.engines import distributed

    table = _partition_table(args)
    market = load_market_option(args)
    threads = args.workers if args.workers is not None else (1 if args.scheduler else None)
    run_fn = {"margin": distributed.margin_partitions, "var_es": distributed.var_es_partitions,
              "stress": distributed.stress_partitions}[kind]
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        client = None
        if args.scheduler:
            # one task at a time per worker process (memory: one partition), each on ``threads`` threads
            client = stack.enter_context(distributed.cluster(args.scheduler, n_workers=args.cluster_workers,
                                                             threads_per_worker=1))
        t1 = time.perf_counter()
        if kind == "margin":
            run = run_fn(args.partitions, market, table, kw["model"], out=args.out, client=client, threads=threads,
                         top=args.top)
        else:
            extra = (kw["levels"],) if kind == "var_es" else ()
            run = run_fn(args.partitions, market, table, kw["scenarios"], *extra, out=args.out, client=client,
                         threads=threads, top=args.top)
    where = f"Dask scheduler {_label(args.scheduler)}" if args.scheduler else "this process"
    print(f"dpm {kind.replace('_', '/')} — partitioned book {_label(args.partitions)}: {len(run.partitions):,} "
          f"partitions, {run.accounts:,} accounts, {run.positions:,} positions; on {where}")
    tasks = [p.seconds["task"] for p in run.partitions]
    print(f"time: cluster {1e3 * (t1 - t0):.0f} ms, run {1e3 * run.seconds:.0f} ms (inputs to workers "
          f"{1e3 * run.setup_seconds:.0f} ms, tasks {1e3 * sum(tasks):.0f} ms)\n")
    rows = [[k, _fmt(v)] for k, v in run.totals.items()] + [[k, f"{v:,}"] for k, v in run.counts.items()]
    print(_table(rows, ["summary", "value"]))
    top = run.top(args.top)
    if top.get(run.rank):
        cols = list(top)
        print(f"\nlargest {len(top[run.rank])} by {run.rank}:")
        print(_table([[_label(v) if isinstance(v, str) else _fmt(v) for v in row] for row in zip(*top.values())],
                     cols))
    if run.outputs:
        print(f"\nwrote {len(run.outputs)} files into {_label(args.out)}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# solvency
# ----------------------------------------------------------------------------------------------------
def _scenario_spec(text: str) -> tuple[str, dict[str, float], dict[str, float]]:
    """argparse type of ``--scenario NAME:BTC=-30%,ETH=-0.4,BTC.vol=+50%``."""
    name, sep, body = text.partition(":")
    name = name.strip()
    if not sep or not name or not body.strip():
        raise argparse.ArgumentTypeError(
            f"expected NAME:UNDERLYING=MOVE[,UNDERLYING.vol=SHOCK...] (e.g. crash:BTC=-30%,BTC.vol=+50%), "
            f"got {_label(text)!r}")
    price: dict[str, float] = {}
    vol: dict[str, float] = {}
    for item in body.split(","):
        key, eq, val = item.partition("=")
        key, val = key.strip(), val.strip()
        if not eq or not key or not val:
            raise argparse.ArgumentTypeError(f"scenario {_label(name)!r}: expected UNDERLYING=MOVE, got "
                                             f"{_label(item)!r}")
        pct = val.endswith("%")
        try:
            v = float(val[:-1] if pct else val) / (100.0 if pct else 1.0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"scenario {_label(name)!r}: {_label(key)}: not a number "
                                             f"{_label(val)!r}") from None
        if not math.isfinite(v) or v <= -1.0:
            raise argparse.ArgumentTypeError(f"scenario {_label(name)!r}: {_label(key)}: a move must be finite "
                                             f"and above -100 %, got {_label(val)!r}")
        und, dot, kind = key.partition(".")
        target = vol if dot else price
        if dot and kind.lower() != "vol":
            raise argparse.ArgumentTypeError(f"scenario {_label(name)!r}: {_label(key)!r}: use UNDERLYING or "
                                             "UNDERLYING.vol")
        if und in target:
            raise argparse.ArgumentTypeError(f"scenario {_label(name)!r}: {_label(key)!r} is given twice")
        target[und] = v
    return name, price, vol


def _solvency_arguments(p: argparse.ArgumentParser) -> None:
    from dpm.engines.solvency.waterfall import POLICIES
    from dpm.models.presets import PRESETS

    p.add_argument("--model", default="default", choices=sorted(PRESETS),
                   help="margin model preset: equity, maintenance margin, liquidation order (default: dpm's)")
    p.add_argument("--policy", default="deribit", choices=sorted(POLICIES),
                   help="venue liquidation / insurance fund / ADL / socialised-loss rules (default deribit)")
    p.add_argument("--fund", type=float_range(0.0, math.inf, lo_open=False), default=10_000_000.0, metavar="USD",
                   help="insurance fund in USD (default 10,000,000)")
    add_book_options(p)
    add_run_options(p)
    g = p.add_argument_group("scenarios")
    g.add_argument("--scenario", type=_scenario_spec, action="append", default=[], metavar="SPEC",
                   help="a user stress NAME:UNDERLYING=MOVE[,UNDERLYING.vol=SHOCK...], e.g. "
                        "crash:BTC=-30%%,ETH=-40%%,BTC.vol=+60%% (repeatable)")
    g.add_argument("--no-history", action="store_true",
                   help="leave out the named historical stresses (then give --scenario or keep the reverse stress)")
    g.add_argument("--no-reverse", action="store_true", help="leave out the venue reverse-stress move")
    g.add_argument("--metric", default="mahalanobis", choices=("mahalanobis", "percent"),
                   help="plausibility metric of the reverse stress (default mahalanobis: EWMA covariance of "
                        "the bundled history)")
    g.add_argument("--no-vol", action="store_true", help="reverse stress over prices only (no vol-level factor)")
    c = p.add_argument_group("close-out costs")
    c.add_argument("--half-spread", type=float_range(0.0, 1.0, lo_open=False), default=None, metavar="FRACTION",
                   help="half spread as a fraction of underlying notional, every instrument kind "
                        "(default per kind: 2 bp perpetuals, 5 bp futures, 10 bp options)")
    c.add_argument("--impact", type=float_range(0.0, math.inf, lo_open=False), default=0.7, metavar="Y",
                   help="market-impact prefactor Y of Y * sigma * (Q/V)^exponent (default 0.7; 0: no impact)")
    c.add_argument("--impact-exponent", type=float_range(0.0, 1.0, hi_open=False), default=0.5, metavar="DELTA",
                   help="impact exponent in (0, 1] (default 0.5, the square-root law; Almgren et al.: 0.6)")
    o = p.add_argument_group("report")
    o.add_argument("--report", type=output_file, metavar="PATH",
                   help="write the report as Markdown (.md, with PNG plots beside it) or HTML (.html)")
    o.add_argument("--no-plots", action="store_true", help="no plots in the report")
    add_output_options(p)


@command("solvency", "liquidations, close-out cost, insurance fund, ADL and socialised loss under stresses",
         _solvency_arguments)
def _solvency(args: argparse.Namespace) -> int:
    from dpm.engines.solvency import CloseOutCostModel, SolvencyEngine
    from dpm.models.generators.stress import hypothetical_scenarios
    from dpm.models.presets import preset

    if args.report and Path(args.report).suffix.lower() not in (".md", ".html", ".htm"):
        raise UsageError(f"--report {_label(args.report)}: cannot tell the format from the suffix "
                         f"{Path(args.report).suffix!r}; use .md or .html")
    names = [s[0] for s in args.scenario]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"--scenario: the name {_label(dup[0])!r} is given twice")
    if args.no_history and args.no_reverse and not args.scenario:
        raise UsageError("--no-history and --no-reverse leave no scenario; give --scenario")
    if args.report:
        real = os.path.realpath(args.report)
        for k in ("accounts_file", "collateral_file", "instruments_file", *OUTPUT_FORMATS):
            v = getattr(args, k, None)
            if v and os.path.realpath(v) == real:
                raise UsageError(f"--report {_label(args.report)} is also given as another input or output")
    market, table, book, source = load_book(args)
    unds = _bundled_underlyings(table, "solvency")
    kw = {} if args.half_spread is None else {"half_spread": args.half_spread}
    costs = CloseOutCostModel(impact=args.impact, exponent=args.impact_exponent, **kw)
    t0 = time.perf_counter()
    engine = SolvencyEngine(market, table, preset(args.model), policy=args.policy, costs=costs, workers=args.workers)
    user = []
    if args.scenario:
        known = set(table.underlyings) | set(book.currencies)
        for name, price, vol in args.scenario:
            for u in (*price, *vol):
                if u not in known:
                    raise UsageError(f"--scenario {_label(name)!r}: unknown underlying {_label(u)!r} (instruments: "
                                     f"{', '.join(table.underlyings)}; collateral: {', '.join(book.currencies)})")
        specs = [{"name": n, "price_move": pr, "vol_shock": vo} for n, pr, vo in args.scenario]
        cover = tuple(dict.fromkeys([*unds, *(u for _, pr, vo in args.scenario for u in (*pr, *vo))]))
        user.append(hypothetical_scenarios(specs, cover))
    space = engine.default_space(metric=args.metric, vol=not args.no_vol) if not args.no_reverse else None
    scen = None
    if args.no_history:
        first = user.pop(0) if user else None
        scen = first
    if scen is None and args.no_history:  # only the reverse-stress move
        rep = _reverse_only_report(engine, book, args.fund, space, args.workers)
    else:
        rep = engine.report(book, args.fund, scenarios=scen, user=user, reverse=not args.no_reverse, space=space,
                            workers=args.workers)
    t1 = time.perf_counter()
    cols = rep.columns()
    require_finite(cols, cols["scenario"])
    written = write_results(args, cols)
    if args.report:
        if Path(args.report).suffix.lower() == ".md":
            rep.to_markdown(args.report, plots=not args.no_plots)
        else:
            rep.to_html(args.report, plots=not args.no_plots)
        written.append(args.report)

    pol = engine.policy
    print(f"dpm solvency — policy {pol.name!r}, margin model {engine.model.name!r}, insurance fund "
          f"{_fmt(args.fund)} USD")
    print(f"accounts: {source}; {book.n_positions:,} positions; {len(cols['scenario'])} scenarios; "
          f"{1e3 * (t1 - t0):.0f} ms\n")
    for line in rep._summary_lines():
        print(line[2:])
    print()
    rows = [[_label(cols["scenario"][i]), f"{int(cols['accounts_liquidated'][i]):,}",
             f"{int(cols['accounts_bankrupt'][i]):,}", _fmt(cols["closeout_cost"][i]), _fmt(cols["uncovered"][i]),
             _fmt(cols["fund_used"][i]), _fmt(cols["deleveraged"][i]), _fmt(cols["socialised"][i]),
             _fmt(cols["shortfall"][i])] for i in range(len(cols["scenario"]))]
    print(_table(rows, ["scenario", "liquidated", "bankrupt", "close-out cost", "uncovered", "fund used",
                        "deleveraged", "socialised", "shortfall"]))
    if written:
        print()
    _print_written(written)
    return EXIT_OK


def _reverse_only_report(engine: Any, book: Any, fund: float, space: Any, workers: int | None) -> Any:
    from dpm.engines.solvency.report import SolvencyReport

    ex = engine.exposure(book)
    venue = engine.venue_reverse_stress(ex, fund, space, workers=workers)
    if not np.isfinite(venue.distance):
        raise DPMError("the reverse stress found no move under which uncovered losses exceed the fund, and "
                       "--no-history leaves no other scenario")
    run = engine.run(ex, venue.scenario_set(), fund, workers=workers)
    return SolvencyReport([run], venue, engine.policy, engine.model.name, ex)
# serve
# ----------------------------------------------------------------------------------------------------
def _serve_arguments(p: argparse.ArgumentParser) -> None:
    from dpm.models.presets import PRESETS

    p.add_argument("--model", default="default", choices=sorted(PRESETS),
                   help="margin model preset (default: dpm's 63-scenario model)")
    add_book_options(p)
    p.add_argument("--workers", type=int_range(1, MAX_WORKERS), default=None, metavar="K",
                   help="threads of a tick's re-margining (default: all cores)")
    g = p.add_argument_group("service")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int_range(0, 65535), default=50051,
                   help="port (default 50051; 0: any free port, printed at start)")
    g.add_argument("--journal", metavar="PATH", default=None,
                   help="SQLite event log + snapshots (recovered at start when it exists); "
                        "without it nothing is durable")
    g.add_argument("--synchronous", choices=("normal", "full"), default="normal",
                   help="journal commit durability: normal survives a process crash, full also a power "
                        "failure (an fsync per commit)")
    g.add_argument("--queue", type=int_range(1, 10_000_000), default=10_000, metavar="N",
                   help="events waiting for the writer at most (back-pressure beyond; default 10,000)")
    g.add_argument("--snapshot-every", type=int_range(0), default=200_000, metavar="N",
                   help="write a snapshot every N events (default 200,000; 0: only at shutdown)")
    g.add_argument("--check-port", type=int_range(0, 65535), default=None, metavar="PORT",
                   help="also open the binary pre-trade check channel on PORT (0: any free port, printed "
                        "at start; see docs/live.md); off by default")
    g.add_argument("--rpc-threads", type=int_range(2, 1024), default=16, metavar="N",
                   help="gRPC handler threads (default 16)")
    g.add_argument("--max-subscribers", type=int_range(1, 1023), default=8, metavar="N",
                   help="concurrent alert streams at most (default 8; below --rpc-threads)")


@command("serve", "run the live margin service (gRPC) on a live book", _serve_arguments)
def _serve(args: argparse.Namespace) -> int:
    from dpm.engines.margin import MarginEngine
    from dpm.live.runner import LiveRunner
    from dpm.market.sample import default_instruments
    from dpm.models.presets import preset
    from dpm.service.protocol import load
    from dpm.service.server import serve

    load()  # fail early (exit 1, one line) when the 'service' extra is missing
    if args.max_subscribers >= args.rpc_threads:
        raise UsageError("--max-subscribers must be below --rpc-threads (each alert stream holds a thread)")
    model = preset(args.model)
    resume = args.journal is not None and Path(args.journal).exists() and Path(args.journal).stat().st_size > 0
    if resume:
        if args.accounts is not None or args.accounts_file or args.collateral_file:
            raise UsageError(f"--journal {_label(args.journal)} already holds a book; do not give accounts")
        from dpm.portfolio import io

        table = io.read_instruments(args.instruments_file) if args.instruments_file else default_instruments()
        market, book, source = load_market_option(args), None, f"recovered from {_label(args.journal)}"
    else:
        market, table, book, source = load_book(args)
    engine = MarginEngine(market, table, model, workers=args.workers)
    opts = {"workers": args.workers}
    kw = dict(queue_size=args.queue, snapshot_every=args.snapshot_every)
    t0 = time.perf_counter()
    if args.journal is not None:
        runner = LiveRunner.open(args.journal, engine, book, synchronous=args.synchronous, book_options=opts, **kw)
    else:
        from dpm.live.book import LiveBook

        runner = LiveRunner(LiveBook(engine, book, **opts), None, **kw)
    t1 = time.perf_counter()
    print(f"dpm serve — model {model.name!r}; market: {market!r}")
    print(f"accounts: {source}; {len(runner.book):,} accounts, last event {runner.book.last_seq}; "
          f"ready in {t1 - t0:.1f} s; journal: {_label(args.journal) if args.journal else 'none (not durable)'}")

    def announce(line: str) -> None:
        print(line, flush=True)

    return serve(runner, args.host, args.port, announce=announce, max_workers=args.rpc_threads,
                 max_subscribers=args.max_subscribers, check_port=args.check_port)


# ----------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------
def _preload_pyarrow(args: argparse.Namespace) -> None:
    """Import pyarrow on a background thread when this run generates its book and writes a Parquet
    or Arrow file: its 0.2-0.3 s import then overlaps generating the book and margining instead of
    adding to them. Not when the book is read from a file: the reader needs pyarrow at once, and
    the thread only competed with it (10 alternating pairs, Parquet in and out: 1.10 s median
    without the thread, 1.18 s with it)."""
    if getattr(args, "accounts_file", None) is not None:
        return
    paths = [getattr(args, k, None) for k in ("instruments_file", *OUTPUT_FORMATS)]
    arrow_suffixes = (".parquet", ".pq", ".arrow", ".feather", ".ipc")
    if getattr(args, "partitions", None) is None and not any(
            p and Path(p).suffix.lower() in arrow_suffixes for p in paths):
        return
    if "pyarrow" in sys.modules:
        return

    def load() -> None:
        try:
            import pyarrow.parquet  # noqa: F401

            from dpm._util import arrow

            arrow.compute()
        except Exception:  # noqa: BLE001 - missing or broken: the reader or writer reports it when it runs
            pass

    threading.Thread(target=load, name="dpm-preload", daemon=True).start()


def _error(message: str) -> None:
    try:
        print(f"dpm: error: {_label(' '.join(str(message).splitlines()))}", file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed too: nothing more to say
        pass


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured in tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


#: Commands that compute, write their files and return, on this process alone (``serve`` runs a
#: service, and a run on Dask leaves its cluster to the interpreter's exit handlers).
_BATCH_COMMANDS = frozenset({"margin", "stress", "var", "solvency"})
#: Set by :func:`main` when the command it ran may end the process without the interpreter's shutdown.
_EXIT_EARLY = False


def run() -> None:
    """Entry point of the ``dpm`` command and of ``python -m dpm``: :func:`main`, then exit.

    A batch command on this process alone has written and closed its files when :func:`main`
    returns; the process then ends at once (``os._exit``, after flushing stdout and stderr) instead
    of through the interpreter's shutdown, which only frees what the run built (a book of 3.8 M
    positions, pyarrow's memory pools) and took 0.10-0.13 s of every run on a 2-vCPU host.
    """
    global _EXIT_EARLY
    _EXIT_EARLY = False
    status = main()
    if _EXIT_EARLY:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed or broken stream: leave it to the normal exit
            sys.exit(status)
        os._exit(status)
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dpm`` / ``python -m dpm``; returns the exit status (see the module docs)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    try:
        try:
            args, extra = build_parser().parse_known_args(_with_default_command(argv))
        except SystemExit as exc:  # --help and --version print and exit 0
            code = exc.code
            return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
        if extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (the {args.command!r} subcommand "
                             f"does not take them; see 'dpm {args.command} --help')")
        debug = bool(getattr(args, "debug", False))
        _preload_pyarrow(args)
        # no command uses pandas, and pyarrow would import it to look for pandas objects (0.5 s);
        # Dask's client may use pandas for its own work, so a run on Dask keeps it
        on_dask = getattr(args, "partitions", None) is not None or getattr(args, "scheduler", None) is not None
        global _EXIT_EARLY
        _EXIT_EARLY = args.command in _BATCH_COMMANDS and not on_dask
        with contextlib.nullcontext() if on_dask else _arrow.without_pandas():
            status = COMMANDS[args.command].run(args)
        sys.stdout.flush()
        return status
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader of stdout went away (``| head``): the output files are already complete
        _silence_stdout()
        return EXIT_OK
    except DPMError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        return EXIT_DATA
    except MemoryError as exc:
        if debug:
            traceback.print_exc()
        _error(f"out of memory{': ' + str(exc) if str(exc) else ''}; use fewer accounts, paths or positions")
        return EXIT_DATA
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say so in one line, the traceback with --debug
        if debug:
            traceback.print_exc()
        _error(f"internal error: {type(exc).__name__}: {exc} (a bug in dpm; run again with --debug and "
               "report the traceback)")
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
