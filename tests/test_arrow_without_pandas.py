"""The command-line tool runs pyarrow without pandas (pyarrow would import it, 0.5 s, to look for
pandas objects), and dpm's numpy view of pyarrow columns needs no pandas either.

Each check that imports or blocks pandas runs in a fresh interpreter, so that this process's
pyarrow is left as it was.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pytest.importorskip("pandas")

from dpm._util import arrow as _arrow  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, tmp_path: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_without_pandas_blocks_the_import_only_inside_the_block(tmp_path):
    out = _run("""
        import sys
        import numpy as np, pyarrow as pa, pyarrow.compute as pc
        from dpm._util import arrow as A
        with A.without_pandas():
            try:
                import pandas
                print("imported")
            except ModuleNotFoundError as exc:
                print("refused", exc.name)
            # pyarrow works as without pandas installed: arrays, scalars, compute, numpy views
            s = pc.cast(pa.array([1.5, 2.0]), pa.string())
            print(pc.any(pc.equal(s, "2")).as_py(), pa.array(["a", None]).null_count,
                  A.to_numpy(pa.chunked_array([pa.array([1, 2]), pa.array([3])]), np.int64).tolist())
            print("pandas" in sys.modules)
        import pandas
        print("pandas" in sys.modules, pa.table({"x": [1.0]}).to_pandas()["x"].tolist())
        """, tmp_path)
    assert out.split("\n")[:4] == ["refused pandas", "True 1 [1, 2, 3]", "False", "True [1.0]"]


def test_without_pandas_leaves_an_imported_pandas_alone(tmp_path):
    out = _run("""
        import pandas, sys
        from dpm._util import arrow as A
        with A.without_pandas():
            import pandas as pd
            print(pd is sys.modules["pandas"], len(sys.meta_path) == len(sys.meta_path))
        """, tmp_path)
    assert out.split() == ["True", "True"]


@pytest.mark.parametrize("fmt", ["parquet", "arrow", "csv"])
def test_cli_reads_and_writes_files_without_pandas_and_the_same_bytes(tmp_path, fmt):
    """The tool's files are byte-identical whether pyarrow runs with pandas (imported first) or
    without it (the tool's own run), and the tool's run imports neither pandas nor
    pyarrow.compute."""
    _run(f"""
        from dpm.market.sample import default_instruments
        from dpm.portfolio.io import write_accounts
        from dpm.portfolio.sample import generate_accounts
        # 300,000 positions: enough for every pyarrow fast path (readers from 4 MB, writers from 200,000 cells)
        write_accounts(generate_accounts(8_000, default_instruments(), seed=3), "book.{fmt}")
        """, tmp_path)
    run = """
        import sys
        {first}
        from dpm.cli import main
        for out in ("res_{tag}.{fmt}", "res_{tag}.json"):
            assert main(["--accounts-file", "book.{fmt}", "--out", out]) == 0
        print("PANDAS-IMPORTED", "pandas" in sys.modules, "NUMPY-MA", "numpy.ma" in sys.modules,
              "COMPUTE", "pyarrow.compute" in sys.modules)
        """
    out = _run(run.format(first="", fmt=fmt, tag="without"), tmp_path)
    # nor numpy.ma (25-35 ms, see _arrow.numpy_array) nor pyarrow.compute (120-180 ms, see _arrow.compute)
    assert "PANDAS-IMPORTED False NUMPY-MA False COMPUTE False" in out
    # pyarrow in its pandas mode
    _run(run.format(first="import pandas, pyarrow; pyarrow.array(pandas.Series([1.0]))", fmt=fmt, tag="with"),
         tmp_path)
    for ext in (fmt, "json"):
        assert (tmp_path / f"res_without.{ext}").read_bytes() == (tmp_path / f"res_with.{ext}").read_bytes()


@pytest.mark.parametrize("typ", [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(),
                                 pa.uint64(), pa.float16(), pa.float32(), pa.float64()])
def test_to_numpy_views_equal_pyarrow_to_numpy(typ):
    rng = np.random.default_rng(0)
    values = pa.array(rng.integers(0, 100, 1000)).cast(typ)
    for arr in (values, values.slice(7, 500), values.slice(999), values.slice(3, 0)):
        got = _arrow.to_numpy(arr, np.float64)
        np.testing.assert_array_equal(got, np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64))
    chunked = pa.chunked_array([values.slice(0, 10), values.slice(400, 3), values.slice(990)])
    np.testing.assert_array_equal(_arrow.to_numpy(chunked, np.int64),
                                  np.concatenate([c.to_numpy() for c in chunked.chunks]).astype(np.int64))


def test_to_numpy_of_other_columns_falls_back_to_pyarrow():
    assert _arrow.to_numpy(pa.array([True, False, True]), np.int64).tolist() == [1, 0, 1]
    assert _arrow.to_numpy(pa.array([1.0, None]), np.float64)[0] == 1.0  # nulls: pyarrow's conversion
    view = _arrow.to_numpy(pa.array(np.arange(5.0)), np.float64)
    assert not view.flags.writeable  # zero-copy, as pyarrow's own view


def _factorize_reference(col):
    """Distinct values in order of first appearance and the code of every row, from Python lists."""
    index: dict = {}
    codes = [index.setdefault(v, len(index)) for v in col.to_pylist()]
    return list(index), codes


def _dict_chunk(values, dictionary):
    d = pa.array(dictionary, type=pa.string())
    idx = pa.array([None if v is None else dictionary.index(v) for v in values], type=pa.int32())
    return pa.DictionaryArray.from_arrays(idx, d)


@pytest.mark.parametrize("case", ["same dictionary", "duplicate entries", "null entry", "other dictionaries",
                                  "unused entries", "null rows"])
def test_factorize_dictionary_columns_against_python(case):
    rng = np.random.default_rng(7)
    words = [f"acc-{i:03d}" for i in range(40)]
    dictionary = rng.permutation(words).tolist()
    chunks = []
    for k in range(4):
        vals = [dictionary[j] for j in rng.integers(0, 40, 200)]
        d = dictionary
        if case == "duplicate entries":
            d = dictionary + dictionary[:5]  # the same strings twice: two codes, one value
            vals = vals + dictionary[:5]
            chunk = pa.DictionaryArray.from_arrays(
                pa.array([d.index(v) if j < 200 else 40 + (j - 200) for j, v in enumerate(vals)], pa.int32()),
                pa.array(d, pa.string()))
            chunks.append(chunk)
            continue
        if case == "null entry":
            d = dictionary + [None]
        if case == "other dictionaries":
            d = rng.permutation(words).tolist()
        if case == "unused entries":
            d = dictionary + ["never-used"]
        if case == "null rows":
            vals[3] = None
        chunks.append(_dict_chunk(vals, d))
    col = pa.chunked_array(chunks)
    values, codes = _arrow.factorize(col)
    want_values, want_codes = _factorize_reference(col)
    assert values.to_pylist() == want_values and codes.tolist() == want_codes
    values, codes = _arrow.factorize(col, ordered=False)  # any order, the same partition of the rows
    assert [values[c].as_py() for c in codes.tolist()] == col.to_pylist()
    assert len(set(values.to_pylist())) == len(values)


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", ">f8", ">i4", "?"])
def test_numpy_array_equals_pa_array(dtype):
    rng = np.random.default_rng(1)
    base = (rng.random(1000) < 0.5) if dtype == "?" else rng.integers(0, 100, 1000).astype(dtype)
    native = base.dtype.newbyteorder("=")  # pa.array refuses byte-swapped arrays; numpy_array takes them
    for arr in (base, base[3:700], base[::3]):  # views at an offset and a strided one
        got = _arrow.numpy_array(arr)
        assert got.equals(pa.array(arr.astype(native))) and got.null_count == 0
        mask = rng.random(len(arr)) < 0.2
        assert _arrow.numpy_array(arr, mask).equals(pa.array(arr.astype(native), mask=mask))
    assert _arrow.numpy_array(base[:0]).equals(pa.array(base[:0].astype(native)))


def test_to_numpy_does_not_keep_a_whole_file_alive(tmp_path):
    """A column read from an Arrow IPC file in memory is a slice of the file's buffer: a view would
    pin the whole file (every column) for as long as the array lives, so it is copied."""
    table = pa.table({"a": np.arange(100_000, dtype=np.float64), "b": np.arange(100_000, dtype=np.int64)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    read = pa.ipc.open_file(pa.BufferReader(sink.getvalue().to_pybytes())).read_all()
    col = read.column("a")
    assert col.chunk(0).buffers()[1].parent is not None  # the layout this guards against
    got = _arrow.to_numpy(col, np.float64)
    assert got.flags.owndata or got.base.flags.owndata
    np.testing.assert_array_equal(got, np.arange(100_000, dtype=np.float64))
    alone = _arrow.to_numpy(pa.array(np.arange(10.0)), np.float64)  # its own buffer: a view
    assert not alone.flags.writeable


def test_compute_kernels_equal_pyarrow_compute():
    """dpm's calls of pyarrow's kernels by name give what pyarrow.compute's wrappers give."""
    import pyarrow.compute as pc

    k = _arrow.compute()
    text = pa.array(["a", "", None, "'=x", "b,c", 'q"', "a.0"])
    nums = pa.array([1, None, 3, 1], type=pa.int32())
    mask = pa.array([True, False, None, True, False, True, False])
    pairs = [
        (k.any(k.equal(text, "")), pc.any(pc.equal(text, ""))),
        (k.match_substring(text, "a"), pc.match_substring(text, "a")),
        (k.match_substring_regex(text, "^'*[=+]"), pc.match_substring_regex(text, "^'*[=+]")),
        (k.starts_with(text, "'"), pc.starts_with(text, "'")),
        (k.replace_substring(text, '"', '""'), pc.replace_substring(text, '"', '""')),
        (k.if_else(mask, text, "z"), pc.if_else(mask, text, "z")),
        (k.cast(nums, pa.string()), pc.cast(nums, pa.string())),
        (k.cast(pa.array([1.5, 2.0]), pa.int64(), safe=False), pc.cast(pa.array([1.5, 2.0]), pa.int64(), safe=False)),
        (k.fill_null(text, ""), pc.fill_null(text, "")),
        (k.fill_null(nums, pa.scalar(7, pa.int64())), pc.fill_null(nums, pa.scalar(7, pa.int64()))),
        (k.is_null(nums), pc.is_null(nums)),
        (k.count_distinct(nums), pc.count_distinct(nums)),
        (k.unique(nums), pc.unique(nums)),
        (k.index_in(text, pa.array(["b,c", "a"])), pc.index_in(text, value_set=pa.array(["b,c", "a"]))),
        (k.replace_with_mask(text, pa.array([True] + [False] * 6), pa.array(["X"])),
         pc.replace_with_mask(text, pa.array([True] + [False] * 6), pa.array(["X"]))),
        (k.binary_join_element_wise(text, text, "-"), pc.binary_join_element_wise(text, text, "-")),
        (k.filter(text, mask), pc.filter(text, mask)),
        (k.take(text, pa.array([2, 0])), pc.take(text, pa.array([2, 0]))),
        (k.dictionary_encode(text, null_encoding="encode"), pc.dictionary_encode(text, null_encoding="encode")),
    ]
    for got, want in pairs:
        assert got.equals(want), (got, want)
    enc = pc.dictionary_encode(text)
    assert k.dictionary_decode(enc).equals(enc.dictionary_decode())
    with pytest.raises(pa.ArrowInvalid):  # a safe cast refuses to truncate, as pyarrow.compute.cast
        k.cast(pa.array([1.5]), pa.int64())
