"""One entry point for a user's market: :func:`load_market`, and :func:`save_market` for dpm snapshots."""
from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpm.errors import InvalidInputError, InvalidTypeError, MarketDataError
from dpm.market.loaders.quotes import (
    DEFAULT_FORWARD_TOLERANCE,
    DEFAULT_MAX_AGE_S,
    DEFAULT_MAX_SKEW_S,
    Quotes,
    bid_ask_ivs_from_prices,
    build_snapshot,
    fill_mark_ivs,
    iso,
)
from dpm.market.loaders.venues import read_marks_table, read_payload
from dpm.market.snapshot import ForwardCurve, MarketSnapshot, UnderlyingMarket
from dpm.market.spline import SplineSlice
from dpm.market.surface import ArbitrageIssue, ArbitrageReport, SVISlice, VolSurface

__all__ = ["FORMATS", "check_market_covers", "load_market", "save_market", "snapshot_from_dict", "snapshot_to_dict"]

PathLike = str | os.PathLike
#: Accepted values of ``format``.
FORMATS = ("venue", "marks", "dpm-json", "dpm-parquet")
_FORMAT_TAG = "dpm.market_snapshot"
_VERSION = 1


# --------------------------------------------------------------------------- dpm snapshot <-> dict
def _f(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else float(x)


def _uf(x: Any) -> float:
    return math.nan if x is None else float(x)


def _slice_to_dict(s: Any) -> dict[str, Any]:
    meta = {"T": s.T, "forward": _f(s.forward), "label": s.label, "n_quotes": int(s.n_quotes),
            "iv_rmse": _f(s.iv_rmse), "iv_max_error": _f(s.iv_max_error), "k_min": _f(s.k_min), "k_max": _f(s.k_max)}
    if isinstance(s, SplineSlice):
        return {"type": "spline", **meta, "knots": [float(v) for v in s.knots], "values": [float(v) for v in s.values],
                "n_inside": int(s.n_inside), "n_two_sided": int(s.n_two_sided)}
    return {"type": "svi", **meta, "a": s.a, "b": s.b, "rho": s.rho, "m": s.m, "sigma": s.sigma}


def _slice_from_dict(d: dict[str, Any]) -> Any:
    meta = dict(forward=_uf(d["forward"]), label=d["label"], n_quotes=int(d["n_quotes"]),
                iv_rmse=_uf(d["iv_rmse"]), iv_max_error=_uf(d["iv_max_error"]), k_min=_uf(d["k_min"]),
                k_max=_uf(d["k_max"]))
    if d["type"] == "spline":
        return SplineSlice(float(d["T"]), np.array(d["knots"], dtype=np.float64), np.array(d["values"], dtype=np.float64),
                           n_inside=int(d["n_inside"]), n_two_sided=int(d["n_two_sided"]), **meta)
    if d["type"] == "svi":
        return SVISlice(float(d["T"]), float(d["a"]), float(d["b"]), float(d["rho"]), float(d["m"]),
                        float(d["sigma"]), **meta)
    raise MarketDataError(f"unknown slice type {d['type']!r}")


def snapshot_to_dict(snapshot: MarketSnapshot) -> dict[str, Any]:
    """A JSON-able dict that :func:`snapshot_from_dict` turns back into an identical snapshot."""
    if not isinstance(snapshot, MarketSnapshot):
        raise InvalidTypeError(f"snapshot: expected a MarketSnapshot, got {type(snapshot).__name__}")
    und = {}
    for name, um in snapshot.underlyings.items():
        vs = um.vol_surface
        surf = None
        if vs is not None:
            rep = vs.report
            surf = {"slices": [_slice_to_dict(s) for s in vs.slices], "lifted": list(vs.lifted),
                    "report": {"repair": rep.repair, "k_grid": list(rep.k_grid),
                               "issues": [{"kind": i.kind, "label": i.label, "T": i.T, "k_range": list(i.k_range),
                                           "max_violation_before": i.max_violation_before,
                                           "max_violation_after": i.max_violation_after, "action": i.action}
                                          for i in rep.issues]}}
        fc = um.forward_curve
        und[name] = {"index_price": um.index_price, "perpetual_price": um.perpetual_price,
                     "funding_rate": um.funding_rate,
                     "forward_curve": {"index_price": fc.index_price, "times": [float(t) for t in fc.times],
                                       "basis": [float(b) for b in fc.basis]},
                     "vol_surface": surf}
    return {"format": _FORMAT_TAG, "version": _VERSION, "timestamp_ms": snapshot.timestamp_ms,
            "timestamp": iso(snapshot.timestamp_ms), "underlyings": und, "usd_rates": dict(snapshot.usd_rates)}


def snapshot_from_dict(d: dict[str, Any], source: str = "snapshot") -> MarketSnapshot:
    """Inverse of :func:`snapshot_to_dict` (validates through the constructors)."""
    if not isinstance(d, dict) or d.get("format") != _FORMAT_TAG:
        raise MarketDataError(f"{source}: not a saved dpm market snapshot (no format tag {_FORMAT_TAG!r})")
    if d.get("version") != _VERSION:
        raise MarketDataError(f"{source}: snapshot version {d.get('version')!r}, this dpm reads {_VERSION}")
    try:
        und = {}
        for name, u in d["underlyings"].items():
            fc = u["forward_curve"]
            curve = ForwardCurve(float(fc["index_price"]), np.array(fc["times"], dtype=np.float64),
                                 np.array(fc["basis"], dtype=np.float64))
            vs = None
            if u["vol_surface"] is not None:
                s = u["vol_surface"]
                r = s["report"]
                issues = tuple(ArbitrageIssue(i["kind"], i["label"], float(i["T"]), tuple(float(x) for x in i["k_range"]),
                                              float(i["max_violation_before"]), float(i["max_violation_after"]),
                                              i["action"]) for i in r["issues"])
                kg = r["k_grid"]
                report = ArbitrageReport(issues, (float(kg[0]), float(kg[1]), int(kg[2])), bool(r["repair"]))
                vs = VolSurface([_slice_from_dict(x) for x in s["slices"]], report, [bool(x) for x in s["lifted"]])
            und[name] = UnderlyingMarket(float(u["index_price"]), curve, vs, perpetual_price=float(u["perpetual_price"]),
                                         funding_rate=float(u["funding_rate"]))
        rates = {str(k): float(v) for k, v in d.get("usd_rates", {}).items()}
        return MarketSnapshot(int(d["timestamp_ms"]), und, rates)
    except (KeyError, TypeError, IndexError) as exc:
        raise MarketDataError(f"{source}: saved snapshot is incomplete or malformed ({type(exc).__name__}: {exc})") from None
    except (InvalidInputError, InvalidTypeError) as exc:
        raise MarketDataError(f"{source}: saved snapshot holds invalid values ({exc})") from None


# --------------------------------------------------------------------------- parquet (long table of leaves)
def _flatten(obj: Any, path: str, out: list[tuple[str, str, Any]]) -> None:
    if isinstance(obj, dict):
        out.append((path, "dict", None))
        for k, v in obj.items():
            _flatten(v, f"{path}/{k}", out)
    elif isinstance(obj, list):
        out.append((path, "list", len(obj)))
        for i, v in enumerate(obj):
            _flatten(v, f"{path}/{i}", out)
    elif obj is None:
        out.append((path, "null", None))
    elif isinstance(obj, bool):
        out.append((path, "bool", obj))
    elif isinstance(obj, int):
        out.append((path, "int", obj))
    elif isinstance(obj, float):
        out.append((path, "float", obj))
    else:
        out.append((path, "str", str(obj)))


def _unflatten(paths: list[str], types: list[str], f: list, i: list, s: list) -> Any:
    root: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for p, t, fv, iv, sv in zip(paths, types, f, i, s):
        val: Any = {"dict": {}, "list": [], "null": None, "bool": bool(iv) if iv is not None else None,
                    "int": iv, "float": fv, "str": sv}[t]
        if p == "":
            root = val
            nodes[p] = val
            continue
        parent_path, _, key = p.rpartition("/")
        parent = nodes[parent_path]
        if isinstance(parent, list):
            parent.append(val)
        else:
            parent[key] = val
        if t in ("dict", "list"):
            nodes[p] = val
    return root


def _write_parquet(d: dict[str, Any], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - exercised only without pyarrow
        raise ImportError("saving a snapshot as Parquet needs pyarrow: pip install dpm[io]") from exc
    rows: list[tuple[str, str, Any]] = []
    _flatten(d, "", rows)
    table = pa.table({
        "path": pa.array([r[0] for r in rows], pa.string()),
        "type": pa.array([r[1] for r in rows], pa.string()),
        "float": pa.array([r[2] if r[1] == "float" else None for r in rows], pa.float64()),
        "int": pa.array([int(r[2]) if r[1] in ("int", "bool", "list") else None for r in rows], pa.int64()),
        "str": pa.array([r[2] if r[1] == "str" else None for r in rows], pa.string()),
    }, metadata={b"format": _FORMAT_TAG.encode()})
    if path.suffix in (".arrow", ".feather"):
        import pyarrow.feather as feather

        feather.write_feather(table, path)
    else:
        pq.write_table(table, path)


def _read_arrow_table(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover
        raise ImportError(f"reading {path} needs pyarrow: pip install dpm[io]") from exc
    if path.suffix in (".arrow", ".feather"):
        import pyarrow.feather as feather

        return feather.read_table(path)
    return pq.read_table(path)


# --------------------------------------------------------------------------- save / load
def save_market(snapshot: MarketSnapshot, path: PathLike) -> Path:
    """Save a snapshot so that :func:`load_market` gives it back exactly (same numbers, bit for bit).

    The format follows the suffix: ``.json`` (readable; floats written with ``repr``, NaN as ``null``), or
    ``.parquet`` / ``.arrow`` / ``.feather`` (a long table of the same tree, one row per number; needs
    pyarrow). Returns the path.
    """
    p = Path(path)
    d = snapshot_to_dict(snapshot)
    if p.suffix == ".json":
        with open(p, "w", encoding="utf-8") as fh:
            json.dump(d, fh, indent=1, allow_nan=False)
    elif p.suffix in (".parquet", ".arrow", ".feather"):
        _write_parquet(d, p)
    else:
        raise InvalidInputError(f"path: unknown suffix {p.suffix!r}; use .json, .parquet, .arrow or .feather")
    return p


def _paths(path_or_paths: Any) -> list[Path]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        p = Path(path_or_paths)
        if p.is_dir():
            files = sorted(x for x in p.iterdir() if x.is_file() and x.suffix.lower() in
                           (".json", ".csv", ".parquet", ".arrow", ".feather"))
            if not files:
                raise MarketDataError(f"{p}: directory holds no .json/.csv/.parquet market files")
            return files
        if not p.exists():
            raise MarketDataError(f"{p}: no such file or directory")
        return [p]
    if isinstance(path_or_paths, Sequence) and path_or_paths:
        out = []
        for x in path_or_paths:
            if not isinstance(x, (str, os.PathLike)):
                raise InvalidTypeError(f"path_or_paths: expected paths, got {type(x).__name__} {x!r}")
            p = Path(x)
            if not p.is_file():
                raise MarketDataError(f"{p}: no such file")
            out.append(p)
        return out
    raise InvalidTypeError(f"path_or_paths: expected a path, a directory or a non-empty list of paths, got "
                           f"{path_or_paths!r}")


def _detect(p: Path) -> str:
    suf = p.suffix.lower()
    if suf == ".json":
        with open(p, encoding="utf-8") as fh:
            head = fh.read(4096)
        return "dpm-json" if f'"{_FORMAT_TAG}"' in head else "venue"
    if suf == ".csv":
        return "marks"
    if suf in (".parquet", ".arrow", ".feather"):
        t = _read_arrow_table(p)
        md = t.schema.metadata or {}
        return "dpm-parquet" if md.get(b"format") == _FORMAT_TAG.encode() else "marks"
    raise MarketDataError(f"{p}: unknown file type {p.suffix!r} (expected .json, .csv, .parquet, .arrow)")


def _read_csv_columns(p: Path) -> dict[str, list]:
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        fields = reader.fieldnames or []
    if not rows:
        raise MarketDataError(f"{p}: no rows")
    return {f: [r[f] for r in rows] for f in fields if f}


def _check_age(snapshot: MarketSnapshot, source: str, now_ms: int | None, max_age_s: float | None) -> None:
    if now_ms is None or max_age_s is None:
        return
    age = (now_ms - snapshot.timestamp_ms) / 1000.0
    if age > max_age_s:
        raise MarketDataError(f"{source}: stale snapshot: its time {iso(snapshot.timestamp_ms)} is {age:.0f} s before "
                              f"now ({iso(now_ms)}), more than max_age_s={max_age_s:g}")


def load_market(
    path_or_paths: PathLike | Sequence[PathLike],
    *,
    now_ms: int | None = None,
    max_age_s: float | None = DEFAULT_MAX_AGE_S,
    format: str | None = None,
    max_skew_s: float | None = DEFAULT_MAX_SKEW_S,
    forward_tolerance: float = DEFAULT_FORWARD_TOLERANCE,
) -> MarketSnapshot:
    """Load a user's market into a :class:`~dpm.market.snapshot.MarketSnapshot`.

    Parameters
    ----------
    path_or_paths : path, directory or list of paths
        * venue payloads saved as JSON (Deribit ``public/get_instruments``,
          ``public/get_book_summary_by_currency``, ``public/ticker``, ``public/get_index_price``; OKX
          ``public/instruments``, ``public/opt-summary``, ``market/tickers``, ``public/mark-price``,
          ``market/index-tickers``): a directory of them or a list of files, combined into one market;
        * a marks table (``.csv``, or ``.parquet``/``.arrow`` without the dpm tag): instrument name, mark
          price and/or mark IV, underlying (forward) / index price, timestamp (see
          :func:`dpm.market.loaders.venues.read_marks_table`); Deribit ticker dumps like the bundled
          chain are marks tables;
        * a snapshot saved by :func:`save_market` (``.json`` or ``.parquet``/``.arrow``), returned exactly.
    now_ms : int, optional
        "Now" for the staleness check, ms since the epoch (default: the machine's clock).
    max_age_s : float or None
        Refuse marks (or a saved snapshot) older than this many seconds before ``now_ms``; None disables
        the check (historical markets).
    format : {'venue', 'marks', 'dpm-json', 'dpm-parquet'}, optional
        Skip auto-detection (which reads the file suffix, the dpm format tag and the payload fields).
    max_skew_s : float or None
        Largest spread of timestamps inside one market (marks of different instants); None disables.
    forward_tolerance : float
        Relative tolerance between index prices, between the forwards quoted within one expiry, and
        between an expiry's option forward and its future's mark.

    Returns
    -------
    MarketSnapshot
        At the latest record's time; per underlying the index, the forward curve (futures marks, else the
        options' forwards), the perpetual mark and funding, and the venue-following vol surface
        (``VolSurface.from_marks(..., method="spline")``).

    Raises
    ------
    MarketDataError
        Missing or unreadable files, unrecognised payloads, and every failed check (stale or
        inconsistent marks, missing expiries, too few quotes in an expiry, non-finite or negative
        values), naming the file, instrument, field and value.
    InvalidTypeError, InvalidInputError
        Bad arguments (a non-path, an unknown ``format``).
    """
    if format is not None and format not in FORMATS:
        raise InvalidInputError(f"format: expected one of {FORMATS}, got {format!r}")
    if max_age_s is not None and not (isinstance(max_age_s, (int, float)) and max_age_s >= 0):
        raise InvalidInputError(f"max_age_s: expected a number >= 0 or None, got {max_age_s!r}")
    if not (isinstance(forward_tolerance, (int, float)) and 0 < forward_tolerance < 1):
        raise InvalidInputError(f"forward_tolerance: expected a number in (0, 1), got {forward_tolerance!r}")
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    elif isinstance(now_ms, bool) or not isinstance(now_ms, (int, np.integer)):
        raise InvalidTypeError(f"now_ms: expected int milliseconds, got {type(now_ms).__name__} {now_ms!r}")
    paths = _paths(path_or_paths)
    kinds = [format or _detect(p) for p in paths]
    if any(k.startswith("dpm-") for k in kinds):
        if len(paths) != 1:
            raise MarketDataError(f"a saved dpm snapshot is loaded alone, got {len(paths)} files: "
                                  f"{[str(p) for p in paths][:5]}")
        p = paths[0]
        if kinds[0] == "dpm-json":
            with open(p, encoding="utf-8") as fh:
                try:
                    d = json.load(fh)
                except json.JSONDecodeError as exc:
                    raise MarketDataError(f"{p}: not valid JSON ({exc})") from None
        else:
            t = _read_arrow_table(p)
            cols = t.to_pydict()
            try:
                d = _unflatten(cols["path"], cols["type"], cols["float"], cols["int"], cols["str"])
            except KeyError as exc:
                raise MarketDataError(f"{p}: saved snapshot table lacks {exc}") from None
        snap = snapshot_from_dict(d, str(p))
        _check_age(snap, str(p), now_ms, max_age_s)
        return snap
    q = Quotes()
    for p, k in zip(paths, kinds):
        if k == "venue":
            read_payload(str(p), q)
        elif k == "marks":
            cols = (_read_csv_columns(p) if p.suffix.lower() == ".csv" else _read_arrow_table(p).to_pydict())
            read_marks_table(cols, str(p), q)
        else:  # pragma: no cover - guarded above
            raise MarketDataError(f"{p}: cannot combine format {k!r} with venue payloads")
    fill_mark_ivs(q)
    bid_ask_ivs_from_prices(q)
    return build_snapshot(q, now_ms=now_ms, max_age_s=max_age_s, max_skew_s=max_skew_s,
                          forward_tolerance=forward_tolerance)


def check_market_covers(snapshot: MarketSnapshot, table: Any) -> None:
    """Raise :class:`MarketDataError` unless ``snapshot`` carries market data *of their own expiry* for every
    instrument of ``table`` (an ``InstrumentTable``, e.g. a user's book).

    ``snapshot.instrument_inputs`` already refuses a missing underlying, an expired instrument and an option
    without a surface; a loaded venue market should moreover price each option on a smile *of its expiry*
    and each future on a forward *of its expiry*, not on one interpolated between other expiries. The
    message names the first instrument that is not covered and the expiries the market has.
    """
    from dpm.market.snapshot import MS_PER_YEAR

    names = table.name
    kind = np.asarray(table.kind)
    expiry = np.asarray(table.expiry_ms, dtype=np.int64)
    und_code = np.asarray(table.underlying)
    for code, uname in enumerate(table.underlyings):
        sel = np.flatnonzero(und_code == code)
        if sel.size == 0:
            continue
        if uname not in snapshot:
            raise MarketDataError(f"instrument {names[sel[0]]!r}: underlying {uname!r} is not in the market "
                                  f"(has {sorted(snapshot.underlyings)})")
        um = snapshot[uname]
        T = (expiry[sel] - snapshot.timestamp_ms) / MS_PER_YEAR
        for kcode, nodes, what in ((3, None if um.vol_surface is None else um.vol_surface.times, "smile"),
                                   (1, um.forward_curve.times, "forward (futures mark or options' forward)")):
            pick = kind[sel] == kcode
            if not pick.any():
                continue
            if nodes is None:
                i = sel[np.flatnonzero(pick)[0]]
                raise MarketDataError(f"instrument {names[i]!r}: underlying {uname!r} has no vol surface")
            gap = np.min(np.abs(T[pick][:, None] - np.asarray(nodes)[None, :]), axis=1)
            bad = np.flatnonzero(gap > 1e-9)
            if bad.size:
                i = sel[np.flatnonzero(pick)[bad[0]]]
                have = sorted({iso(snapshot.timestamp_ms + t * MS_PER_YEAR)[:10] for t in nodes})
                raise MarketDataError(
                    f"instrument {names[i]!r}: the market has no {what} for its expiry "
                    f"{iso(int(expiry[i]))[:10]} (expiries in the market: {have}); load the marks of that expiry")
