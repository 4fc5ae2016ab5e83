"""The column types that `write_columns` stores in Parquet / Arrow files and that `read_columns`
gives back for columns whose type the caller does not declare.

Pinned because a mutation run found them unchecked: the round-trip test compared values only, so a
writer that stored NaN instead of null, text as dictionary-less pages, or an integer column as
floats, and a reader that turned a JSON column of integers into floats, all passed it. The
expected types are read back with pyarrow itself (an independent reader), not with dpm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dpm.portfolio.io import read_columns, write_columns

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _columns():
    return {
        "f": np.array([0.5, np.nan, -2.0]),
        "f_full": np.array([1.0, 2.0, 3.0]),
        "i": np.array([1, -2, 2**62], dtype=np.int64),
        "b": np.array([True, False, True]),
        "s": np.array(["a", None, "c"], dtype=object),
        "mixed": np.array([np.float64(1.5), np.int64(2), float("nan")], dtype=object),
    }


def _read_arrow(path, fmt):
    if fmt == "parquet":
        return pq.read_table(path)
    with pa.memory_map(str(path)) as src:
        return pa.ipc.open_file(src).read_all()


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_types_written(tmp_path, fmt):
    path = tmp_path / f"c.{fmt}"
    write_columns(path, _columns())
    t = _read_arrow(path, fmt)
    types = {f.name: f.type for f in t.schema}
    assert types["f"] == pa.float64() and types["f_full"] == pa.float64()
    assert types["i"] == pa.int64()
    assert types["b"] == pa.bool_()
    assert pa.types.is_string(types["s"]) or pa.types.is_large_string(types["s"])
    # NaN is stored as null (a missing value), not as a NaN payload; a column without NaN has no nulls
    assert t.column("f").null_count == 1 and t.column("f").to_pylist()[0] == 0.5
    assert t.column("f_full").null_count == 0
    assert t.column("s").to_pylist() == ["a", None, "c"]
    # numpy scalars inside an object column are stored as plain numbers, a NaN as null
    assert t.column("mixed").to_pylist() == [1.5, 2.0, None]
    assert pa.types.is_floating(types["mixed"])


def test_parquet_dictionary_pages_for_text_only(tmp_path):
    path = tmp_path / "c.parquet"
    write_columns(path, _columns())
    rg = pq.ParquetFile(path).metadata.row_group(0)
    enc = {rg.column(k).path_in_schema: set(rg.column(k).encodings) for k in range(rg.num_columns)}
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert enc["s"] & dictionary, enc["s"]
    for name in ("f", "f_full", "i", "b"):
        assert not (enc[name] & dictionary), (name, enc[name])


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "json"])
def test_undeclared_columns_keep_their_types(tmp_path, fmt):
    path = tmp_path / f"c.{fmt}"
    write_columns(path, _columns())
    back = read_columns(path)
    assert back["f"].dtype == np.float64 and np.isnan(back["f"][1])
    assert back["i"].dtype == np.int64 and back["i"][2] == 2**62  # exact: not through a float
    assert back["b"].dtype == np.bool_
    assert back["s"].dtype == object and list(back["s"]) == ["a", None, "c"]


@pytest.mark.parametrize(
    "values, dtype, expected",
    [
        ([1.0, None, 2.5], np.float64, [1.0, np.nan, 2.5]),  # null in a float column: NaN
        ([True, False], np.bool_, [True, False]),
        ([1, -3], np.int64, [1, -3]),
        ([1, 2**63], object, [1, 2**63]),  # beyond int64: kept exact as Python ints
        ([True, 1], object, [True, 1]),  # a bool is not an integer here
        ([1, 1.5], object, [1, 1.5]),  # mixed ints and floats: not silently widened
        ([None, None], object, [None, None]),  # no float at all: not a float column
        (["x", 1.0], object, ["x", 1.0]),
        ([], object, []),
    ],
)
def test_json_columns_of_undeclared_type(tmp_path, values, dtype, expected):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"columns": {"c": values}}))
    back = read_columns(path)["c"]
    assert back.dtype == dtype
    if dtype == np.float64:
        np.testing.assert_array_equal(back, np.array(expected, dtype=np.float64))
    else:
        assert list(back) == expected
        assert [type(v) for v in back.tolist()] == [type(v) for v in expected]
