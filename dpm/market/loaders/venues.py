"""Readers of venue public-API payloads saved as JSON (Deribit JSON-RPC v2, OKX REST v5) and of plain
marks tables, into :class:`~dpm.market.loaders.quotes.Quotes`.

Deribit (https://docs.deribit.com/): ``public/get_instruments``, ``public/get_book_summary_by_currency``
(and ``..._by_instrument``), ``public/ticker``, ``public/get_index_price``. OKX
(https://www.okx.com/docs-v5/en/): ``GET /api/v5/public/instruments``, ``/api/v5/public/opt-summary``,
``/api/v5/market/tickers``, ``/api/v5/public/mark-price``, ``/api/v5/market/index-tickers``. A payload is
either the whole response (``{"jsonrpc": ..., "result": ...}``, ``{"code": "0", "data": [...]}``) or its
``result``/``data`` part; its kind is recognised from its fields.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from typing import Any

from dpm.errors import InvalidInputError, MarketDataError
from dpm.market.loaders.quotes import Quotes, number
from dpm.market.names import format_name, parse_name
from dpm.market.specs import EXPIRY_HOUR_UTC, Future, Option, Perpetual, to_ms

__all__ = ["detect_payload", "read_json", "read_marks_table", "read_payload"]


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise MarketDataError(f"{path}: not valid JSON ({exc})") from None


def _spec(name: str, source: str) -> Any:
    try:
        return parse_name(name)
    except InvalidInputError as exc:
        raise MarketDataError(f"{source}: instrument {name!r}: unreadable instrument name ({exc})") from None


# --------------------------------------------------------------------------- detection
def detect_payload(obj: Any) -> tuple[str, Any, int | None]:
    """``(kind, body, envelope_time_ms)`` of a saved payload.

    ``kind`` is one of ``deribit_instruments``, ``deribit_book_summary``, ``deribit_ticker``,
    ``deribit_index``, ``okx_instruments``, ``okx_opt_summary``, ``okx_tickers``, ``okx_mark_price``,
    ``okx_index_tickers``, or ``unknown``.
    """
    env_ms = None
    if isinstance(obj, dict) and "jsonrpc" in obj:
        if "error" in obj:
            return "deribit_error", obj["error"], None
        if "usOut" in obj:
            env_ms = int(obj["usOut"]) // 1000
        obj = obj.get("result")
        body = obj
        if isinstance(body, list):
            first = body[0] if body and isinstance(body[0], dict) else {}
            if "mark_price" in first:
                return "deribit_book_summary", body, env_ms
            if "kind" in first and "instrument_name" in first:
                return "deribit_instruments", body, env_ms
            return ("deribit_empty" if not body else "unknown"), body, env_ms
        if isinstance(body, dict):
            if "instrument_name" in body and "mark_price" in body:
                return "deribit_ticker", body, env_ms
            if "index_price" in body:
                return "deribit_index", body, env_ms
        return "unknown", body, env_ms
    if isinstance(obj, dict) and "data" in obj and "code" in obj:
        if str(obj["code"]) != "0":
            return "okx_error", obj, None
        obj = obj["data"]
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        first = obj[0]
        if "markVol" in first:
            return "okx_opt_summary", obj, None
        if "idxPx" in first:
            return "okx_index_tickers", obj, None
        if "ctVal" in first or "listTime" in first:
            return "okx_instruments", obj, None
        if "markPx" in first:
            return "okx_mark_price", obj, None
        if "bidPx" in first and "last" in first:
            return "okx_tickers", obj, None
        if "instrument_name" in first and "mark_price" in first:
            return "deribit_book_summary", obj, None
        if "instrument_name" in first and "kind" in first:
            return "deribit_instruments", obj, None
    if isinstance(obj, dict) and "instrument_name" in obj and "mark_price" in obj:
        return "deribit_ticker", obj, None
    if isinstance(obj, dict) and "index_price" in obj:
        return "deribit_index", obj, None
    return "unknown", obj, None


def read_payload(path: str, quotes: Quotes) -> str:
    """Add one saved payload's records to ``quotes``; returns the payload kind."""
    obj = read_json(path)
    kind, body, env_ms = detect_payload(obj)
    src = os.fspath(path)
    if kind in ("deribit_error", "okx_error"):
        raise MarketDataError(f"{src}: the saved response is an error, not market data: {body!r}"[:400])
    if kind == "unknown":
        raise MarketDataError(
            f"{src}: not a recognised venue payload (expected a Deribit public/get_instruments, "
            "get_book_summary_by_currency, ticker or get_index_price response, or an OKX public/instruments, "
            "opt-summary, market/tickers, public/mark-price or market/index-tickers response)")
    if kind == "deribit_empty":
        raise MarketDataError(f"{src}: the Deribit response has an empty result (no instruments)")
    handler = {
        "deribit_instruments": _deribit_instruments,
        "deribit_book_summary": _deribit_book_summary,
        "deribit_ticker": _deribit_ticker,
        "deribit_index": _deribit_index,
        "okx_instruments": _okx_instruments,
        "okx_opt_summary": _okx_opt_summary,
        "okx_tickers": _okx_tickers,
        "okx_mark_price": _okx_mark_price,
        "okx_index_tickers": _okx_index_tickers,
    }[kind]
    handler(body, src, quotes, env_ms)
    return kind


# --------------------------------------------------------------------------- Deribit
def _deribit_instruments(body: list, src: str, q: Quotes, env_ms: int | None) -> None:
    for it in body:
        name = it.get("instrument_name")
        if not isinstance(name, str):
            raise MarketDataError(f"{src}: an instrument has no 'instrument_name': {it!r}"[:300])
        spec = _spec(name, src)
        exp = it.get("expiration_timestamp")
        if isinstance(spec, (Option, Future)) and exp is not None and int(exp) != spec.expiry:
            raise MarketDataError(f"{src}: instrument {name!r}: field 'expiration_timestamp' {exp!r} disagrees "
                                  f"with the name's expiry {spec.expiry}")
        if isinstance(spec, Option):
            q.listed[name] = (src, spec.expiry)


def _row_kind(spec: Any) -> str:
    if isinstance(spec, Option):
        return "option"
    if isinstance(spec, Future):
        return "future"
    if isinstance(spec, Perpetual):
        return "perpetual"
    return "spot"


def _deribit_record(d: dict, src: str, q: Quotes, *, ts_field: str) -> None:
    name = d.get("instrument_name")
    if not isinstance(name, str):
        raise MarketDataError(f"{src}: a record has no 'instrument_name': {d!r}"[:300])
    spec = _spec(name, src)
    kind = _row_kind(spec)
    if kind == "spot":
        return
    ts = d.get(ts_field)
    if ts is None:
        raise MarketDataError(f"{src}: instrument {name!r}: field {ts_field!r} is missing")
    ts = int(number(ts, source=src, name=name, fieldname=ts_field, allow_missing=False))

    def num(f: str) -> float:
        return number(d.get(f), source=src, name=name, fieldname=f)

    common = dict(name=name, source=src, underlying=spec.underlying, kind=kind, timestamp_ms=ts,
                  inverse=bool(spec.inverse), mark_price=num("mark_price"))
    if kind == "option":
        bid_p = num("bid_price") if "bid_price" in d else num("best_bid_price")
        ask_p = num("ask_price") if "ask_price" in d else num("best_ask_price")
        if "best_bid_amount" in d and not number(d.get("best_bid_amount"), source=src, name=name,
                                                 fieldname="best_bid_amount") > 0:
            bid_p = math.nan
        if "best_ask_amount" in d and not number(d.get("best_ask_amount"), source=src, name=name,
                                                 fieldname="best_ask_amount") > 0:
            ask_p = math.nan
        bid_iv, ask_iv = num("bid_iv") / 100.0, num("ask_iv") / 100.0
        q.add(**common, expiry_ms=spec.expiry, strike=spec.strike,
              option_type=1 if spec.option_type == "call" else -1, mark_iv=num("mark_iv") / 100.0,
              bid_iv=bid_iv if bid_iv > 0 else math.nan, ask_iv=ask_iv if ask_iv > 0 else math.nan,
              bid_price=bid_p if bid_p > 0 else math.nan, ask_price=ask_p if ask_p > 0 else math.nan,
              forward=num("underlying_price"),
              index_price=num("index_price") if "index_price" in d else num("estimated_delivery_price"))
    elif kind == "future":
        q.add(**common, expiry_ms=spec.expiry)
    else:
        q.add(**common, funding_rate=num("funding_8h"))


def _deribit_book_summary(body: list, src: str, q: Quotes, env_ms: int | None) -> None:
    for d in body:
        _deribit_record(d, src, q, ts_field="creation_timestamp")


def _deribit_ticker(body: dict, src: str, q: Quotes, env_ms: int | None) -> None:
    _deribit_record(body, src, q, ts_field="timestamp")
    name = body["instrument_name"]
    if "index_price" in body:
        q.add_index(underlying=_spec(name, src).underlying, timestamp_ms=int(body["timestamp"]), source=src,
                    name=name + " index_price",
                    price=number(body["index_price"], source=src, name=name, fieldname="index_price"))


def _deribit_index(body: dict, src: str, q: Quotes, env_ms: int | None) -> None:
    # get_index_price's result has no currency and no time: the currency comes from the file name
    # (..._btc...) or the request saved beside it; the time from the response envelope (usOut).
    m = re.search(r"(?i)(?:^|[^a-z])(btc|eth|sol|xrp|bnb|matic|usdc|paxg|ada|doge|dot|ltc|avax|trx|bch|link|"
                  r"near|uni|algo)(?:_usd[ct]?)?(?:[^a-z]|$)", os.path.basename(src))
    if m is None:
        raise MarketDataError(f"{src}: a public/get_index_price result names no currency; put the index name "
                              "in the file name (e.g. deribit_index_btc_usd.json)")
    und = m.group(1).upper()
    q.add_index(underlying=und, timestamp_ms=env_ms, source=src, name=f"{und} index",
                price=number(body.get("index_price"), source=src, name=f"{und} index", fieldname="index_price",
                             allow_missing=False))


# --------------------------------------------------------------------------- OKX
_OKX_DATE = re.compile(r"^\d{6}$")


def _okx_expiry(code: str, src: str, inst: str) -> int:
    if not _OKX_DATE.match(code):
        raise MarketDataError(f"{src}: instrument {inst!r}: unreadable expiry {code!r} (expected YYMMDD)")
    d = _dt.datetime(2000 + int(code[:2]), int(code[2:4]), int(code[4:]), EXPIRY_HOUR_UTC, tzinfo=_dt.timezone.utc)
    return to_ms(d)


def okx_name(inst_id: str, src: str = "") -> tuple[str, Any]:
    """dpm (Deribit-style) name and spec of an OKX instrument id.

    ``BTC-USD-220309-33000-C`` -> ``BTC-9MAR22-33000-C`` (coin-margined, inverse);
    ``BTC-USD-220325`` -> ``BTC-25MAR22``; ``BTC-USD-SWAP`` -> ``BTC-PERPETUAL``;
    ``BTC-USDT-SWAP`` -> ``BTC_USDT-PERPETUAL`` (linear). OKX expiries are 08:00 UTC like Deribit's.
    """
    parts = inst_id.split("-")
    if len(parts) < 2:
        raise MarketDataError(f"{src}: instrument {inst_id!r}: not an OKX derivative id")
    coin, quote = parts[0], parts[1]
    inverse = quote == "USD"
    settle = coin if inverse else quote
    if len(parts) == 3 and parts[2] == "SWAP":
        spec: Any = Perpetual(coin, inverse, 1.0, settle)
    elif len(parts) == 3:
        spec = Future(coin, _okx_expiry(parts[2], src, inst_id), inverse, 1.0, settle)
    elif len(parts) == 5 and parts[4] in ("C", "P"):
        if not inverse:
            raise MarketDataError(f"{src}: instrument {inst_id!r}: only coin-margined (-USD-) OKX options are "
                                  "supported")
        try:
            strike = float(parts[3])
        except ValueError:
            raise MarketDataError(f"{src}: instrument {inst_id!r}: unreadable strike {parts[3]!r}") from None
        spec = Option(coin, _okx_expiry(parts[2], src, inst_id), strike, "call" if parts[4] == "C" else "put",
                      True, 1.0, settle)
    else:
        raise MarketDataError(f"{src}: instrument {inst_id!r}: not an OKX option, future or swap id")
    return format_name(spec), spec


def _okx_ts(d: dict, src: str, inst: str) -> int:
    return int(number(d.get("ts"), source=src, name=inst, fieldname="ts", allow_missing=False))


def _okx_instruments(body: list, src: str, q: Quotes, env_ms: int | None) -> None:
    for d in body:
        inst = d.get("instId", "")
        if d.get("instType") != "OPTION":
            continue
        name, spec = okx_name(inst, src)
        exp = d.get("expTime")
        if exp not in (None, "") and int(exp) != spec.expiry:
            raise MarketDataError(f"{src}: instrument {inst!r}: field 'expTime' {exp!r} is not the 08:00 UTC "
                                  f"expiry of its id ({spec.expiry})")
        q.listed[name] = (src, spec.expiry)


def _okx_opt_summary(body: list, src: str, q: Quotes, env_ms: int | None) -> None:
    for d in body:
        inst = d.get("instId", "")
        name, spec = okx_name(inst, src)
        if not isinstance(spec, Option):
            continue

        def num(f: str) -> float:
            return number(d.get(f), source=src, name=inst, fieldname=f)

        bid, ask = num("bidVol"), num("askVol")
        q.add(name=name, source=src, underlying=spec.underlying, kind="option", timestamp_ms=_okx_ts(d, src, inst),
              expiry_ms=spec.expiry, strike=spec.strike, option_type=1 if spec.option_type == "call" else -1,
              inverse=True, mark_iv=num("markVol"), bid_iv=bid if bid > 0 else math.nan,
              ask_iv=ask if ask > 0 else math.nan, forward=num("fwdPx"))


def _okx_futures_record(d: dict, src: str, q: Quotes, price_field: str) -> None:
    inst = d.get("instId", "")
    if d.get("instType") not in ("SWAP", "FUTURES"):
        return
    name, spec = okx_name(inst, src)
    q.add(name=name, source=src, underlying=spec.underlying, kind=_row_kind(spec),
          timestamp_ms=_okx_ts(d, src, inst), expiry_ms=getattr(spec, "expiry", 0), inverse=bool(spec.inverse),
          mark_price=number(d.get(price_field), source=src, name=inst, fieldname=price_field, allow_missing=False))


def _okx_mark_price(body: list, src: str, q: Quotes, env_ms: int | None) -> None:
    for d in body:
        _okx_futures_record(d, src, q, "markPx")


def _okx_tickers(body: list, src: str, q: Quotes, env_ms: int | None) -> None:
    # market/tickers has last/bid/ask, no mark: used only for swaps/futures without a mark-price record.
    marked = {(r["name"]) for r in q.rows}
    for d in body:
        inst = d.get("instId", "")
        if d.get("instType") not in ("SWAP", "FUTURES"):
            continue
        name, _ = okx_name(inst, src)
        if name in marked:
            continue
        bid = number(d.get("bidPx"), source=src, name=inst, fieldname="bidPx")
        ask = number(d.get("askPx"), source=src, name=inst, fieldname="askPx")
        mid = dict(d, midPx=0.5 * (bid + ask) if bid > 0 and ask > 0 else d.get("last"))
        _okx_futures_record(mid, src, q, "midPx")


def _okx_index_tickers(body: list, src: str, q: Quotes, env_ms: int | None) -> None:
    for d in body:
        inst = d.get("instId", "")
        coin, _, quote = inst.partition("-")
        if quote not in ("USD", "USDT", "USDC"):
            continue
        if quote != "USD" and any(x["underlying"] == coin for x in q.index):
            continue
        q.add_index(underlying=coin, timestamp_ms=_okx_ts(d, src, inst), source=src, name=inst,
                    price=number(d.get("idxPx"), source=src, name=inst, fieldname="idxPx", allow_missing=False))


# --------------------------------------------------------------------------- marks tables
_ALIASES = {
    "instrument_name": ("instrument_name", "instrument", "name", "instId"),
    "mark_price": ("mark_price", "markPx", "mark"),
    "mark_iv": ("mark_iv", "markVol", "iv"),
    "underlying_price": ("underlying_price", "forward", "fwdPx"),
    "index_price": ("index_price", "index", "idxPx"),
    "timestamp": ("timestamp", "timestamp_ms", "ts", "creation_timestamp"),
    "bid_iv": ("bid_iv", "bidVol"),
    "ask_iv": ("ask_iv", "askVol"),
    "bid_price": ("bid_price", "best_bid_price", "bidPx"),
    "ask_price": ("ask_price", "best_ask_price", "askPx"),
    "funding_rate": ("funding_rate", "funding_8h"),
}


def _timestamp_value(v: Any, src: str, name: str) -> int:
    if isinstance(v, str) and not re.fullmatch(r"\s*[0-9.eE+]+\s*", v):
        try:
            d = _dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise MarketDataError(f"{src}: instrument {name!r}: field 'timestamp' {v!r} is neither ms since the "
                                  "epoch nor an ISO-8601 time") from None
        if d.tzinfo is None:
            raise MarketDataError(f"{src}: instrument {name!r}: field 'timestamp' {v!r} has no time zone")
        return to_ms(d)
    return int(number(v, source=src, name=name, fieldname="timestamp", allow_missing=False))


def read_marks_table(columns: dict[str, list], src: str, q: Quotes) -> None:
    """Add a marks table (columns as lists) to ``quotes``.

    Columns (aliases in parentheses): ``instrument_name`` (``instrument``, ``name``), ``timestamp`` (ms or
    ISO-8601 with zone), ``mark_iv`` (Deribit percent, as in its API, unless the column is ``iv``/
    ``markVol`` in decimal) and/or ``mark_price``, ``underlying_price`` (the option's forward; else the
    future's mark of that expiry), ``index_price``; optional ``bid_iv``/``ask_iv`` (same unit as
    ``mark_iv``), ``bid_price``/``ask_price``, ``funding_rate``. Options need ``mark_iv`` or a
    ``mark_price`` (then the vol is implied on the forward); futures and perpetuals need ``mark_price``.
    """
    cols = {}
    for key, names in _ALIASES.items():
        for n in names:
            if n in columns:
                cols[key] = (n, columns[n])
                break
    for need in ("instrument_name", "timestamp"):
        if need not in cols:
            raise MarketDataError(f"{src}: no {need!r} column (columns: {sorted(columns)[:20]})")
    if "mark_iv" not in cols and "mark_price" not in cols:
        raise MarketDataError(f"{src}: neither a 'mark_iv' nor a 'mark_price' column")
    iv_scale = 100.0 if cols.get("mark_iv", ("mark_iv",))[0] == "mark_iv" else 1.0
    names = cols["instrument_name"][1]
    n = len(names)

    def get(key: str, i: int) -> float:
        if key not in cols:
            return math.nan
        return number(cols[key][1][i], source=src, name=str(names[i]), fieldname=cols[key][0])

    fut_marks: dict[tuple[str, int], float] = {}
    pending = []
    for i in range(n):
        name = str(names[i])
        spec = _spec(name, src)
        kind = _row_kind(spec)
        if kind == "spot":
            continue
        ts = _timestamp_value(cols["timestamp"][1][i], src, name)
        common = dict(name=name, source=src, underlying=spec.underlying, kind=kind, timestamp_ms=ts,
                      inverse=bool(spec.inverse), mark_price=get("mark_price", i), index_price=get("index_price", i))
        if kind == "option":
            biv, aiv = get("bid_iv", i) / iv_scale, get("ask_iv", i) / iv_scale
            pending.append(dict(**common, expiry_ms=spec.expiry, strike=spec.strike,
                                option_type=1 if spec.option_type == "call" else -1,
                                mark_iv=get("mark_iv", i) / iv_scale, bid_iv=biv if biv > 0 else math.nan,
                                ask_iv=aiv if aiv > 0 else math.nan,
                                bid_price=get("bid_price", i), ask_price=get("ask_price", i),
                                forward=get("underlying_price", i)))
        elif kind == "future":
            q.add(**common, expiry_ms=spec.expiry)
            fut_marks[(spec.underlying, spec.expiry)] = common["mark_price"]
        else:
            q.add(**common, funding_rate=get("funding_rate", i))
    for r in pending:
        if not r["forward"] > 0:
            r["forward"] = fut_marks.get((r["underlying"], r["expiry_ms"]), math.nan)
        q.add(**r)
