"""Tests for dpm.market.history: bundled data, user loaders, validation."""
from __future__ import annotations

import numpy as np
import pytest

from dpm.errors import InvalidInputError
from dpm.market.history import history_from_long, history_from_wide, load_history


def test_bundled_history_values():
    h = load_history()
    assert h.assets == ("BTC", "ETH", "USDT")
    assert h.dates.dtype == np.dtype("datetime64[D]")
    assert len(h) == 3766 and h.close.shape == (3766, 3)
    assert str(h.dates[0]) == "2014-09-17" and str(h.dates[-1]) == "2025-01-07"
    assert str(h.first_date("ETH")) == "2017-11-09"
    assert np.all(np.isnan(h.close[: h.first_index[1], 1]))
    # values straight from the CSV (data/README.md): Black Thursday closes
    assert h.price_on("BTC", "2020-03-11") == 7911.43
    assert h.price_on("BTC", "2020-03-12") == 4970.79
    assert not h.close.flags.writeable
    with pytest.raises(InvalidInputError, match="no close for ETH"):
        h.price_on("ETH", "2015-01-01")


def test_log_returns_common_range():
    h = load_history()
    r = h.log_returns(["BTC", "ETH"], start="2020-03-12", end="2020-03-13")
    assert [str(d) for d in r.dates] == ["2020-03-12", "2020-03-13"]
    assert r.values[0, 0] == pytest.approx(np.log(4970.79 / 7911.43), rel=1e-14)
    assert r.prices.shape == (3, 2)
    full = h.log_returns(["ETH", "BTC"])
    assert str(full.dates[0]) == "2017-11-10"  # common range starts at ETH's first day + 1
    np.testing.assert_array_equal(full.column("BTC"), full.values[:, 1])
    assert np.all(np.isfinite(full.values))
    with pytest.raises(InvalidInputError, match="too little history"):
        h.log_returns("BTC", start="2020-01-01", end="2020-01-05", min_obs=30)
    with pytest.raises(InvalidInputError, match="unknown asset 'DOGE'"):
        h.log_returns(["BTC", "DOGE"])


def test_long_and_wide_csv(tmp_path):
    long = tmp_path / "long.csv"
    long.write_text("date,asset,close,volume\n2024-01-01,AAA,10,1\n2024-01-02,AAA,11,1\n"
                    "2024-01-02,BBB,5,1\n2024-01-03,AAA,12,1\n2024-01-03,BBB,5.5,1\n")
    h = load_history(long)
    assert h.assets == ("AAA", "BBB")
    assert np.isnan(h.close[0, 1]) and h.close[2, 1] == 5.5
    wide = tmp_path / "wide.csv"
    wide.write_text("date,AAA,BBB\n2024-01-01,10,\n2024-01-02,11,5\n2024-01-03,12,5.5\n")
    w = load_history(wide)
    np.testing.assert_array_equal(w.close, h.close)
    np.testing.assert_array_equal(w.dates, h.dates)


def test_parquet_roundtrip(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"date": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
                          "AAA": [10.0, 11.0, 12.0], "BBB": [np.nan, 5.0, 5.5]})
    path = tmp_path / "h.parquet"
    frame.to_parquet(path)
    h = load_history(path)
    assert h.assets == ("AAA", "BBB")
    assert h.close[2, 1] == 5.5 and np.isnan(h.close[0, 1])
    long = frame.melt(id_vars="date", var_name="asset", value_name="close").dropna()
    long.to_parquet(tmp_path / "l.parquet")
    hl = load_history(tmp_path / "l.parquet")
    np.testing.assert_array_equal(hl.close, h.close)


@pytest.mark.parametrize("text, match", [
    ("date,asset,close\n2024-01-01,AAA,10\n2024-01-02,AAA,-1\n", r"> 0.*'AAA' on 2024-01-02"),
    ("date,asset,close\n2024-01-01,AAA,10\n2024-01-02,AAA,nan\n", r"'AAA' on 2024-01-02"),
    ("date,asset,close\n2024-01-01,AAA,10\n2024-01-01,AAA,11\n", r"duplicate record.*'AAA'.*2024-01-01"),
    ("date,AAA\n2024-01-02,10\n2024-01-01,11\n", "not sorted"),
    ("date,AAA\n2024-01-01,10\n2024-01-01,11\n", "duplicate date"),
    ("date,AAA\n2024-01-01,10\n2024-01-02,\n2024-01-03,11\n", r"missing price.*'AAA' on 2024-01-02"),
    ("date,AAA\n2024-01-01,10\n2024-01-02,inf\n", r"finite.*'AAA' on 2024-01-02"),
    ("date,AAA\n2024-01-01,10\n", "too little history"),
    ("day,AAA\n2024-01-01,10\n2024-01-02,11\n", "no 'date' column"),
    ("date,AAA\n2024-01-01,10\n2024-01-02,abc\n", "cannot read 'abc'"),
])
def test_bad_files(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        load_history(p)


def test_constructors_do_not_mutate_and_validate():
    close = np.array([[1.0, np.nan], [2.0, 3.0], [2.5, 3.5]])
    keep = close.copy()
    h = history_from_wide(["2024-01-01", "2024-01-02", "2024-01-03"], ["A", "B"], close)
    np.testing.assert_array_equal(close, keep)
    assert h.close is not close
    with pytest.raises(InvalidInputError, match="shape"):
        history_from_wide(["2024-01-01"], ["A", "B"], [1.0, 2.0, 3.0])
    with pytest.raises(InvalidInputError, match="same length|rows"):
        history_from_long(["2024-01-01"], ["A", "A"], [1.0, 2.0])
    with pytest.raises(InvalidInputError, match="no such file"):
        load_history("/nonexistent/file.csv")
