"""Tests of dpm.market: names, specs, InstrumentTable construction and validation."""

from __future__ import annotations

import datetime as dt
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpm.errors import InvalidInputError, InvalidTypeError, UnknownInstrumentError
from dpm.market.names import format_name, parse_name
from dpm.market.specs import NO_EXPIRY, Future, Kind, Option, Perpetual, Spot, to_ms
from dpm.market.table import InstrumentTable

UTC = dt.timezone.utc
DEC26 = int(dt.datetime(2026, 12, 27, 8, tzinfo=UTC).timestamp() * 1000)

NAMES = [
    "BTC-PERPETUAL",
    "ETH-PERPETUAL",
    "BTC_USDC-PERPETUAL",
    "BTC-27DEC26",
    "ETH-27DEC26",
    "BTC-27DEC26-60000-C",
    "BTC-27DEC26-60000-P",
    "ETH-5JAN27-3100-C",
    "BTC_USDC-27DEC26-60000-C",
    "XRP_USDC-27DEC26-0d625-C",
    "BTC_USDC",
    "BTC-SPOT",
]


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name, cls, fields",
    [
        (
            "BTC-27DEC26-60000-C",
            Option,
            {
                "underlying": "BTC",
                "expiry": DEC26,
                "strike": 60000.0,
                "option_type": "call",
                "inverse": True,
                "contract_size": 1.0,
                "settlement": "BTC",
            },
        ),
        (
            "ETH-27DEC26-2500-P",
            Option,
            {
                "underlying": "ETH",
                "strike": 2500.0,
                "option_type": "put",
                "inverse": True,
                "contract_size": 1.0,
                "settlement": "ETH",
            },
        ),
        (
            "BTC-27DEC26",
            Future,
            {
                "underlying": "BTC",
                "expiry": DEC26,
                "inverse": True,
                "contract_size": 10.0,
                "settlement": "BTC",
            },
        ),
        (
            "ETH-27DEC26",
            Future,
            {"underlying": "ETH", "inverse": True, "contract_size": 1.0, "settlement": "ETH"},
        ),
        (
            "ETH-PERPETUAL",
            Perpetual,
            {"underlying": "ETH", "inverse": True, "contract_size": 1.0, "settlement": "ETH"},
        ),
        ("BTC-PERPETUAL", Perpetual, {"underlying": "BTC", "inverse": True, "contract_size": 10.0}),
        (
            "BTC_USDC-PERPETUAL",
            Perpetual,
            {"underlying": "BTC", "inverse": False, "contract_size": 1.0, "settlement": "USDC"},
        ),
        (
            "BTC_USDC-27DEC26-60000-C",
            Option,
            {"underlying": "BTC", "inverse": False, "settlement": "USDC", "contract_size": 1.0},
        ),
        ("XRP_USDC-27DEC26-0d625-C", Option, {"underlying": "XRP", "strike": 0.625, "inverse": False}),
        ("BTC_USDC", Spot, {"underlying": "BTC", "settlement": "USDC", "contract_size": 1.0}),
        ("BTC-SPOT", Spot, {"underlying": "BTC", "settlement": "USD"}),
        (
            "BTC-5JUN20-9000-P",
            Option,
            {"expiry": int(dt.datetime(2020, 6, 5, 8, tzinfo=UTC).timestamp() * 1000)},
        ),
    ],
)
def test_parse_known_names(name, cls, fields):
    spec = parse_name(name)
    assert type(spec) is cls
    for k, v in fields.items():
        assert getattr(spec, k) == v, k
    assert format_name(spec) == name
    assert spec.name == name


def test_expiry_is_0800_utc():
    spec = parse_name("BTC-27DEC26")
    assert spec.expiry_datetime == dt.datetime(2026, 12, 27, 8, tzinfo=UTC)
    assert spec.expiry_ms == spec.expiry == DEC26


def test_contract_size_override():
    assert parse_name("BTC-PERPETUAL", contract_size=1).contract_size == 1.0
    assert parse_name("BTC-27DEC26-60000-C", contract_size=0.1).contract_size == 0.1


@pytest.mark.parametrize(
    "bad",
    [
        "BTC",
        "btc-PERPETUAL",
        "BTC-27DEC26-60000",
        "BTC-27DEC26-60000-X",
        "BTC-27XYZ26",
        "BTC-31FEB26",
        "BTC-05JUN20",
        "BTC-27DEC26-060000-C",
        "BTC-27DEC26-0d6250-C",
        "BTC-27DEC26-60000.5-C",
        "BTC_USDC-SPOT",
        "",
        "BTC-27DEC26-0-C",
        "BTC--PERPETUAL",
    ],
)
def test_parse_rejects_bad_or_non_canonical_names(bad):
    with pytest.raises(InvalidInputError, match="name"):
        parse_name(bad)


def test_parse_rejects_non_str():
    with pytest.raises(InvalidTypeError):
        parse_name(42)


def test_format_rejects_expiry_not_at_0800():
    spec = Future("BTC", dt.datetime(2026, 12, 27, 9, tzinfo=UTC))
    with pytest.raises(InvalidInputError, match="08:00"):
        format_name(spec)


def test_spec_expiry_accepts_datetime_date_and_ms():
    a = Option("BTC", dt.datetime(2026, 12, 27, 8, tzinfo=UTC), 60000, "C")
    b = Option("BTC", DEC26, 60000.0, "call")
    c = Option("BTC", dt.date(2026, 12, 27), 60000, 1)
    d = Option("BTC", np.datetime64("2026-12-27T08:00:00"), 60000, "call")
    assert a == b == c == d
    assert to_ms(dt.datetime(2026, 12, 27, 8)) == DEC26  # naive = UTC


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Option("BTC", DEC26, -1.0, "call"), "strike"),
        (lambda: Option("BTC", DEC26, float("nan"), "call"), "strike"),
        (lambda: Option("BTC", DEC26, 100.0, "straddle"), "option_type"),
        (lambda: Option("BTC", DEC26, 100.0, "call", contract_size=0.0), "contract_size"),
        (lambda: Future("BTC", DEC26, contract_size=float("nan")), "contract_size"),
        (lambda: Future("BTC", DEC26, inverse=True, settlement="USDC"), "settlement"),
        (lambda: Perpetual("btc"), "underlying"),
    ],
)
def test_spec_validation(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


_dates = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31))
_codes = st.sampled_from(["BTC", "ETH", "SOL", "XRP", "MATIC", "USDC", "A1"])
_strikes = st.one_of(
    st.integers(min_value=1, max_value=10_000_000).map(float),
    st.decimals(min_value="0.0001", max_value="100000", places=4).map(float),
)


@st.composite
def specs(draw):
    und = draw(_codes)
    kind = draw(st.sampled_from(["option", "future", "perp", "spot"]))
    inverse = draw(st.booleans())
    settle = None if inverse else draw(st.sampled_from(["USDC", "USDT"]))
    if kind == "spot":
        return Spot(und, draw(st.sampled_from(["USD", "USDC", "USDT"])))
    if kind == "perp":
        return Perpetual(und, inverse, settlement=settle)
    expiry = draw(_dates)
    if kind == "future":
        return Future(und, expiry, inverse, settlement=settle)
    return Option(
        und, expiry, draw(_strikes), draw(st.sampled_from(["call", "put"])), inverse, settlement=settle
    )


@settings(max_examples=400, deadline=None)
@given(specs())
def test_round_trip_spec_name_spec(spec):
    name = format_name(spec)
    back = parse_name(name)
    assert back == spec
    assert format_name(back) == name


@settings(max_examples=200, deadline=None)
@given(st.lists(specs(), min_size=1, max_size=20, unique_by=format_name))
def test_table_from_specs_rows_round_trip(spec_list):
    table = InstrumentTable.from_specs(spec_list)
    assert list(table.name) == [format_name(s) for s in spec_list]
    for i, s in enumerate(spec_list):
        assert table.row(i) == s
    assert InstrumentTable.from_names(table.name).equals(table)


# ---------------------------------------------------------------------------------------------- table
@pytest.fixture(scope="module")
def table():
    return InstrumentTable.from_names(NAMES)


def test_table_columns(table):
    assert len(table) == len(NAMES)
    assert table.underlyings == ("BTC", "ETH", "XRP")
    assert table.kind.dtype == np.int8 and table.underlying.dtype == np.int16
    assert table.option_type.dtype == np.int8 and table.strike.dtype == np.float64
    assert table.expiry_ms.dtype == np.int64 and table.inverse.dtype == bool
    assert table.contract_size.dtype == np.float64 and table.name.dtype == object
    i = table.index_of("BTC-27DEC26-60000-P")
    assert table.kind[i] == Kind.OPTION and table.option_type[i] == -1 and table.strike[i] == 60000.0
    assert table.expiry_ms[i] == DEC26 and table.inverse[i] and table.settlement[i] == "BTC"
    p = table.index_of("BTC-PERPETUAL")
    assert table.kind[p] == Kind.PERPETUAL and np.isnan(table.strike[p]) and table.expiry_ms[p] == NO_EXPIRY
    assert table.contract_size[p] == 10.0 and table.option_type[p] == 0
    s = table.index_of("BTC-SPOT")
    assert table.kind[s] == Kind.SPOT and not table.inverse[s] and table.settlement[s] == "USD"
    assert list(table.underlying_names) == [parse_name(n).underlying for n in NAMES]


def test_table_arrays_are_read_only(table):
    for col in (
        "name",
        "kind",
        "underlying",
        "option_type",
        "strike",
        "expiry_ms",
        "inverse",
        "contract_size",
        "settlement",
    ):
        arr = getattr(table, col)
        assert not arr.flags.writeable, col
        with pytest.raises(ValueError):
            arr[0] = arr[1]
    with pytest.raises(AttributeError):
        table.strike = np.zeros(len(table))


def test_every_source_gives_the_same_table(table):
    specs_ = [table.row(i) for i in range(len(table))]
    assert InstrumentTable.from_specs(specs_).equals(table)
    recs = table.to_records()
    json.dumps(recs)  # JSON-friendly: no NaN, no numpy scalars
    assert InstrumentTable.from_records(recs).equals(table)
    assert InstrumentTable.from_records([{"name": n} for n in NAMES]).equals(table)
    assert InstrumentTable.from_frame(table.to_frame()).equals(table)
    assert InstrumentTable.from_arrow(table.to_arrow()).equals(table)
    assert InstrumentTable.from_columns(
        table.name,
        table.kind,
        table.underlying_names,
        table.option_type,
        table.strike,
        table.expiry_ms,
        table.inverse,
        table.contract_size,
        table.settlement,
    ).equals(table)
    assert pickle.loads(pickle.dumps(table)).equals(table)


def test_from_records_explicit_columns_for_non_deribit_names():
    recs = [
        {
            "name": "my-call",
            "kind": "option",
            "underlying": "BTC",
            "option_type": "call",
            "strike": 50000,
            "expiry_ms": DEC26,
            "inverse": False,
            "contract_size": 0.01,
            "settlement": "USDC",
        },
        {
            "name": "my-perp",
            "kind": Kind.PERPETUAL,
            "underlying": "BTC",
            "inverse": "true",
            "contract_size": 10,
            "settlement": "BTC",
        },
    ]
    t = InstrumentTable.from_records(recs)
    assert list(t.kind) == [3, 2] and t.strike[0] == 50000.0 and np.isnan(t.strike[1])
    assert t.expiry_ms[1] == NO_EXPIRY and t.inverse[1] and t.contract_size[0] == 0.01
    with pytest.raises(InvalidInputError, match="my-fut"):
        InstrumentTable.from_records([{"name": "my-fut", "kind": "future"}])


def test_index_of(table):
    idx = table.index_of(["BTC-SPOT", "BTC-PERPETUAL", "BTC-SPOT"])
    assert idx.dtype == np.int64 and list(idx) == [NAMES.index("BTC-SPOT"), 0, NAMES.index("BTC-SPOT")]
    assert list(table.index_of(np.array(NAMES))) == list(range(len(NAMES)))
    assert table.index_of([]).shape == (0,)
    assert isinstance(table.index_of("ETH-PERPETUAL"), int)
    with pytest.raises(UnknownInstrumentError, match="BTC-28DEC26") as exc:
        table.index_of(["BTC-SPOT", "BTC-28DEC26", "nope"])
    assert "position 1" in str(exc.value)
    with pytest.raises(KeyError):  # UnknownInstrumentError is a KeyError too
        table.index_of("nope")
    assert "BTC-SPOT" in table and "nope" not in table


def test_row_and_subset(table):
    for i, n in enumerate(NAMES):
        assert table.row(i) == parse_name(n)
    assert table.row(-1) == parse_name(NAMES[-1])
    with pytest.raises(UnknownInstrumentError):
        table.row(len(NAMES))
    opts = table.subset(table.kind == Kind.OPTION)
    assert list(opts.name) == [n for n in NAMES if parse_name(n).kind == Kind.OPTION]
    assert opts.underlyings == table.underlyings
    sub = table.subset([3, 0])
    assert list(sub.name) == [NAMES[3], NAMES[0]]
    assert table.subset(np.zeros(0, dtype=np.int64)).name.shape == (0,)


def test_caller_arrays_not_frozen_or_mutated():
    strike = np.array([100.0, np.nan])
    exp = np.array([DEC26, NO_EXPIRY], dtype=np.int64)
    size = np.array([1.0, 10.0])
    before = (strike.copy(), exp.copy(), size.copy())
    t = InstrumentTable.from_columns(
        ["a", "b"], [3, 2], ["BTC", "BTC"], [1, 0], strike, exp, [True, True], size, ["BTC", "BTC"]
    )
    assert strike.flags.writeable and exp.flags.writeable and size.flags.writeable
    np.testing.assert_array_equal(strike, before[0])
    np.testing.assert_array_equal(exp, before[1])
    strike[0] = 5.0
    assert t.strike[0] == 100.0


def _cols(**over):
    base = {
        "name": ["BTC-27DEC26-60000-C", "BTC-PERPETUAL"],
        "kind": [3, 2],
        "underlying": ["BTC", "BTC"],
        "option_type": [1, 0],
        "strike": [60000.0, np.nan],
        "expiry_ms": [DEC26, NO_EXPIRY],
        "inverse": [True, True],
        "contract_size": [1.0, 10.0],
        "settlement": ["BTC", "BTC"],
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    "over, match",
    [
        ({"name": ["BTC-PERPETUAL", "BTC-PERPETUAL"]}, r"duplicate.*'BTC-PERPETUAL'.*rows 0 and 1"),
        ({"kind": [3, 7]}, r"unknown kind 7.*row 1.*'BTC-PERPETUAL'"),
        ({"kind": ["option", "swap"]}, r"unknown kind 'swap'.*row 1"),
        ({"strike": [-5.0, np.nan]}, r"strike.*row 0.*'BTC-27DEC26-60000-C'.*-5"),
        ({"strike": [0.0, np.nan]}, r"strike.*row 0"),
        ({"strike": [np.nan, np.nan]}, r"strike.*row 0.*nan"),
        ({"strike": [np.inf, np.nan]}, r"strike.*row 0"),
        ({"strike": [60000.0, 5.0]}, r"strike.*NaN.*row 1"),
        ({"contract_size": [1.0, 0.0]}, r"contract_size.*row 1.*'BTC-PERPETUAL'"),
        ({"contract_size": [1.0, -10.0]}, r"contract_size.*row 1"),
        ({"contract_size": [np.nan, 10.0]}, r"contract_size.*row 0.*nan"),
        ({"expiry_ms": [NO_EXPIRY, NO_EXPIRY]}, r"expiry_ms.*options and futures need an expiry.*row 0"),
        ({"expiry_ms": [np.nan, np.nan]}, r"expiry_ms.*row 0"),
        ({"expiry_ms": [DEC26, DEC26]}, r"expiry_ms.*perpetuals.*row 1"),
        ({"option_type": [0, 0]}, r"option_type.*row 0"),
        ({"option_type": [1, 1]}, r"option_type.*row 1"),
        ({"option_type": [2, 0]}, r"option_type.*row 0"),
        ({"settlement": ["USDC", "BTC"]}, r"settlement.*inverse.*row 0"),
        ({"name": ["", "x"]}, r"name.*row 0"),
        ({"underlying": ["BTC", None]}, r"underlying.*row 1"),
    ],
)
def test_table_validation_errors(over, match):
    with pytest.raises(InvalidInputError, match=match):
        InstrumentTable.from_columns(**_cols(**over))


def test_table_validation_from_names_names_the_row():
    with pytest.raises(InvalidInputError, match=r"row 1.*'BTC-27DEC26-60000-X'"):
        InstrumentTable.from_names(["BTC-PERPETUAL", "BTC-27DEC26-60000-X"])
    with pytest.raises(InvalidInputError, match="duplicate"):
        InstrumentTable.from_names(["BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-PERPETUAL"])
    with pytest.raises(InvalidTypeError):
        InstrumentTable.from_columns(**_cols(kind=[3.5, 2.0]))


def test_check_not_expired(table):
    table.check_not_expired(DEC26 - 1)
    with pytest.raises(InvalidInputError, match=r"'BTC-27DEC26'.*row 3.*expired"):
        table.check_not_expired(DEC26)
    table.subset(table.expiry_ms == NO_EXPIRY).check_not_expired(DEC26 * 10)


def test_empty_table():
    t = InstrumentTable.from_names([])
    assert len(t) == 0 and t.underlying_names.shape == (0,)
    assert InstrumentTable.from_records([]).equals(t)
    t.check_not_expired(0)
