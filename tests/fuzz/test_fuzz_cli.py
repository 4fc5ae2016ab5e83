"""Fuzz the command line in-process: random argv and random input files through ``dpm.cli.main``.

Property: exit status 0, 1 or 2; no traceback (unless ``--debug``); a failure is one
``dpm: error: ...`` line on stderr; no output file after a failure and never a temporary file
left behind; input files unchanged.
"""
from __future__ import annotations

import contextlib
import io
import json

import pytest
from fuzz_harness import attempt, fuzz, no_crash, oracle
from fuzz_strategies import NASTY_TEXT, csv_text, encoded
from hypothesis import given
from hypothesis import strategies as st

from dpm.cli import main

pytest.importorskip("pyarrow")

POSITIONS = "account_id,instrument,quantity\nA,BTC-PERPETUAL,1000\nB,ETH-PERPETUAL,-50\nC,BTC-27DEC26,20\n"
COLLATERAL = "account_id,currency,amount\nA,BTC,0.5\nB,USDC,100\n"


def _reset(d) -> None:
    """The input files as every example starts (an earlier example may have written over one)."""
    (d / "out").mkdir(exist_ok=True)
    (d / "pos.csv").write_text(POSITIONS)
    (d / "coll.csv").write_text(COLLATERAL)
    (d / "pos.json").write_text(json.dumps({"accounts": [{"account_id": "A", "positions": [["BTC-PERPETUAL", 5]],
                                                          "collateral": {"BTC": 1.0}}]}))
    (d / "inst.csv").write_text("name\nBTC-PERPETUAL\nETH-PERPETUAL\nBTC-27DEC26\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_cli")


ints = st.one_of(st.integers(0, 30).map(str), st.sampled_from(["-1", "0", "1e3", "x", "", "10000000000000",
                                                               "99999999999999999999", "2.5", " 3"]))
floats = st.one_of(st.floats(0.001, 0.999).map(repr), st.sampled_from(["0", "1", "1.5", "nan", "inf", "-0.5", "x",
                                                                      "1e-300", "2", "4.5", "30"]))
input_names = st.sampled_from(["pos.csv", "coll.csv", "pos.json", "inst.csv", "bad.csv", "bad.json", "bad.parquet",
                               "missing.csv", "out", "pos.txt", "", "\x00x.csv"])
output_names = st.sampled_from(["out/r.csv", "out/r.json", "out/r2.csv", "no/such/dir/r.csv", "out", "pos.csv",
                                "out/r.parquet"])


@st.composite
def argv_and_files(draw):
    args: list[str] = []
    sub = draw(st.sampled_from([None, None, "margin", "stress", "var", "frob"]))
    if sub:
        args.append(sub)
    if draw(st.integers(0, 9)):  # keep most runs small; the default is 10,000 accounts
        args += ["--accounts", draw(ints)]
    for _ in range(draw(st.integers(0, 5))):
        opt = draw(st.sampled_from(["--seed", "--workers", "--top", "--model", "--paths", "--level", "--horizon",
                                    "--student-t", "--csv", "--json", "--accounts-file", "--collateral-file",
                                    "--instruments-file", "--debug", "--bogus", "token", "--accounts"]))
        if opt in ("--seed", "--top", "--horizon", "--accounts"):
            args += [opt, draw(ints)]
        elif opt == "--workers":
            args += [opt, draw(st.sampled_from(["1", "2", "0", "-1", "5000", "x"]))]
        elif opt == "--paths":
            args += [opt, draw(st.sampled_from(["200", "1000", "10", "0", "100000000", "x"]))]
        elif opt in ("--level", "--student-t"):
            args += [opt, draw(floats)]
        elif opt == "--model":
            args += [opt, draw(st.sampled_from(["default", "deribit", "okx", "span", "paradex", "nope"]))]
        elif opt in ("--csv", "--json"):
            args += [opt, "{dir}/" + draw(output_names)]
        elif opt.endswith("-file"):
            args += [opt, "{dir}/" + draw(input_names)]
        elif opt == "token":
            args.append(draw(st.sampled_from(NASTY_TEXT)))
        else:
            args.append(opt)
    bad_csv = draw(encoded(csv_text()))
    bad_json = draw(st.sampled_from([b'{"accounts": [', b'{"accounts": [{"account_id": "A", "positions": [["X", 1]]}]}',
                                     b"[]", b"\xff\xfe{}", b'{"accounts": [{"account_id": "A", "positions": '
                                                                  b'[["BTC-PERPETUAL", NaN]]}]}']))
    bad_parquet = draw(st.binary(max_size=64))
    return args, bad_csv, bad_json, bad_parquet


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@fuzz("cli.main", ci=15, long=1_500)
@given(case=argv_and_files())
def test_cli_fails_closed(workdir, case) -> None:
    args, bad_csv, bad_json, bad_parquet = case
    _reset(workdir)
    (workdir / "bad.csv").write_bytes(bad_csv)
    (workdir / "bad.json").write_bytes(bad_json)
    (workdir / "bad.parquet").write_bytes(bad_parquet)
    for f in (workdir / "out").iterdir():
        f.unlink()
    argv = [a.replace("{dir}", str(workdir)) for a in args]
    outputs = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--csv", "--json")}
    inputs = [workdir / n for n in ("pos.csv", "coll.csv", "pos.json", "inst.csv", "bad.csv", "bad.json")
              if str(workdir / n) not in outputs]  # a file named as an output may be replaced
    res = attempt("cli.main", lambda: _run(argv), fields=(), inputs=inputs, seconds=120)
    status, out, err = res
    debug = "--debug" in argv
    no_crash("cli.main", status in (0, 1, 2), f"exit status {status} for {argv!r}: {err[-500:]!r}")
    no_crash("cli.main", debug or "Traceback" not in out + err, f"a traceback for {argv!r}: {err[-500:]!r}")
    leftovers = [f.name for f in (workdir / "out").iterdir() if f.name.endswith(".tmp")]
    oracle("cli.main", not leftovers, f"temporary files left behind: {leftovers}")
    if status != 0:
        last = err.rstrip("\n").split("\n")[-1]
        no_crash("cli.main", last.startswith("dpm: error: "), f"no one-line error for {argv!r}: {err[-300:]!r}")
        no_crash("cli.main", debug or err.count("\n") == 1, f"more than one line for {argv!r}: {err[-300:]!r}")
        written = [f.name for f in (workdir / "out").iterdir()]
        oracle("cli.main", not written, f"a failed run wrote {written} for {argv!r}")
