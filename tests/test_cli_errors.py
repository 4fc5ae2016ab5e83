"""The command line fails closed: one-line messages, documented exit statuses, no partial files.

Every subcommand is run with bad input in-process (``dpm.cli.main``) and a few through
``python -m dpm`` in a subprocess; each run must end with the documented exit status, a single
``dpm: error: ...`` line naming the problem, no traceback, and no output file (not even a temporary
one) unless the run succeeded.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dpm import cli
from dpm.cli import EXIT_DATA, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, main
from dpm.errors import DPMError

REPO = Path(__file__).resolve().parents[1]
POSITIONS = "account_id,instrument,quantity\nA,BTC-PERPETUAL,1000\nB,ETH-PERPETUAL,-50\n"


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _run(argv: list[str], capsys, tmp_path: Path) -> tuple[int, str, str]:
    before = _files(tmp_path)
    status = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if status != EXIT_OK:
        assert err.startswith("dpm: error: "), err
        assert err.count("\n") == 1, f"expected one line, got {err!r}"
        assert _files(tmp_path) == before, "a failed run left a file behind"
    return status, out, err


@pytest.fixture()
def positions(tmp_path: Path) -> Path:
    p = tmp_path / "positions.csv"
    p.write_text(POSITIONS, encoding="utf-8")
    return p


USAGE_CASES = [
    (["--workers", "0"], "argument --workers: must be in [1, 1024], got 0"),
    (["--workers", "many"], "argument --workers: expected an integer, got 'many'"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    (["--accounts", "-3"], "argument --accounts: must be >= 0"),
    (["--accounts", "1e3"], "argument --accounts: expected an integer, got '1e3'"),
    (["--top", "-1"], "argument --top"),
    (["--model", "nope"], "argument --model: invalid choice: 'nope'"),
    (["var", "--level", "1.5"], "argument --level: must be a finite number in (0, 1), got '1.5'"),
    (["var", "--level", "nan"], "argument --level"),
    (["var", "--level", "0"], "argument --level"),
    (["var", "--paths", "0"], "argument --paths"),
    (["var", "--horizon", "0"], "argument --horizon"),
    (["var", "--student-t", "2"], "argument --student-t"),
    (["var", "--student-t", "inf"], "argument --student-t"),
    (["var", "--paths", "10", "--level", "0.99"], "--paths 10 leaves no path beyond the 0.99 quantile"),
    (["stress", "--model", "deribit"], "the 'stress' subcommand does not take them"),
    (["var", "--model", "okx"], "the 'var' subcommand does not take them"),
    (["stress", "--paths", "100"], "the 'stress' subcommand does not take them"),
    (["margin", "--level", "0.9"], "the 'margin' subcommand does not take them"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["--accounts-file", "{tmp}/missing.csv"], "missing.csv: no such file"),
    (["stress", "--instruments-file", "{tmp}/missing.json"], "missing.json: no such file"),
    (["var", "--accounts-file", "{tmp}"], "is a directory, not a file"),
    (["--accounts-file", "{tmp}/positions.txt"], "cannot tell the format from the suffix '.txt'"),
    (["--accounts-file", "{tmp}/positions.csv", "--accounts", "5"], "--accounts cannot be combined"),
    (["stress", "--accounts-file", "{tmp}/positions.csv", "--seed", "3"], "--seed cannot be combined"),
    (["--collateral-file", "{tmp}/positions.csv"], "--collateral-file needs --accounts-file"),
    (["--csv", "{tmp}/no/such/dir/out.csv"], "does not exist"),
    (["stress", "--json", "{tmp}"], "is a directory, not a file"),
    (["--csv", "{tmp}/o.csv", "--json", "{tmp}/o.csv"], "is given twice"),
    (["--accounts-file", "{tmp}/positions.csv", "--csv", "{tmp}/positions.csv"], "is also an input file"),
    (["--accounts-file", "bad\x00name.csv"], "bad\\x00name.csv: no such file"),
]


@pytest.mark.parametrize(("argv", "message"), USAGE_CASES, ids=[" ".join(a)[:50] for a, _ in USAGE_CASES])
def test_usage_errors_exit_2_with_one_line(argv, message, positions, tmp_path, capsys) -> None:
    (tmp_path / "positions.txt").write_text(POSITIONS, encoding="utf-8")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    status, out, err = _run(argv, capsys, tmp_path)
    assert status == EXIT_USAGE, err
    assert message in err
    assert out == ""


DATA_CASES = [
    ("p.csv", POSITIONS.replace("ETH-PERPETUAL", "ETH-NOPE").encode(),
     "instrument at row 2 (account 'B') is 'ETH-NOPE', not in the instrument table"),
    ("p.csv", POSITIONS.replace("-50", "lots").encode(), "quantity at row 2 (account 'B', instrument "
                                                         "'ETH-PERPETUAL') is 'lots', not a number"),
    ("p.csv", "account_id,instrument,quantity\nJosé,BTC-PERPETUAL,1\n".encode("latin-1"),
     "not UTF-8 text: byte 0xe9 at offset 34 (line 2)"),
    ("p.csv", "account_id,instrument,quantity,quantity\nA,BTC-PERPETUAL,1,2\n".encode(),
     "column 'quantity' appears twice"),
    ("p.json", b'{"accounts": [', "not valid JSON: Expecting value at line 1, column 15"),
    ("p.json", b'{"accounts": [{"account_id": "A", "positions": [["BTC-PERPETUAL", "3"]]}]}',
     "quantity at accounts[0].positions[0] (account 'A', instrument 'BTC-PERPETUAL') is '3', not a number"),
    ("p.parquet", b"PAR1 this is not parquet PAR1", "not a readable Parquet file"),
    ("p.csv", b"", "empty file (no header)"),
]


@pytest.mark.parametrize("sub", ["margin", "stress", "var"])
@pytest.mark.parametrize(("name", "content", "message"), DATA_CASES, ids=[m[:30] for _, _, m in DATA_CASES])
def test_data_errors_exit_1_naming_file_field_and_row(sub, name, content, message, tmp_path, capsys) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    out_csv = tmp_path / "out.csv"
    status, out, err = _run([sub, "--accounts-file", str(path), "--csv", str(out_csv)], capsys, tmp_path)
    assert status == EXIT_DATA, err
    assert message in err and str(path) in err
    assert out == "" and not out_csv.exists()


def test_bad_instruments_file_is_a_data_error(tmp_path, capsys) -> None:
    inst = tmp_path / "i.csv"
    inst.write_text("name,strike\nBTC-27DEC26-60000-C,sixty\n")
    status, _, err = _run(["stress", "--instruments-file", str(inst)], capsys, tmp_path)
    assert status == EXIT_DATA
    assert "i.csv: strike at row 1 is 'sixty', not a number" in err


def test_excel_utf8_csv_with_bom_works(tmp_path, capsys) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"\xef\xbb\xbf" + POSITIONS.encode())
    status, out, err = _run(["--accounts-file", str(path), "--top", "2"], capsys, tmp_path)
    assert status == EXIT_OK, err
    assert "accounts: " in out and re.search(r"^accounts +2$", out, re.M)


def test_seed_is_allowed_with_a_file_when_it_also_seeds_the_paths(positions, tmp_path, capsys) -> None:
    status, out, _ = _run(["var", "--accounts-file", str(positions), "--seed", "3", "--paths", "200",
                           "--level", "0.95"], capsys, tmp_path)
    assert status == EXIT_OK
    assert out.splitlines()[-2].startswith("A ") and out.splitlines()[-1].startswith("B ")


@pytest.mark.parametrize("sub", ["margin", "stress", "var"])
def test_every_subcommand_handles_an_empty_book(sub, tmp_path, capsys) -> None:
    out_json = tmp_path / "r.json"
    status, out, err = _run([sub, "--accounts", "0", "--json", str(out_json)], capsys, tmp_path)
    assert status == EXIT_OK, err
    data = json.loads(out_json.read_text())
    assert data["account_id"] == []


def _strict_json(text: str):
    def refuse(token: str):
        raise AssertionError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json_with_null_for_an_unbounded_ratio(tmp_path, capsys) -> None:
    from dpm.engines.margin import MarginEngine
    from dpm.market.sample import default_instruments, default_market
    from dpm.models import preset
    from dpm.portfolio.sample import generate_accounts

    out_json = tmp_path / "m.json"
    status, _, err = _run(["--accounts", "600", "--json", str(out_json)], capsys, tmp_path)
    assert status == EXIT_OK, err
    data = _strict_json(out_json.read_text())
    table = default_instruments()
    res = MarginEngine(default_market(), table, preset("default")).margin_many(generate_accounts(600, table))
    unbounded = ~np.isfinite(res.margin_ratio)
    assert unbounded.any(), "the sample must contain an account with equity <= 0 for this test"
    ratio = data["margin_ratio"]
    assert [r is None for r in ratio] == unbounded.tolist()
    assert np.all((res.equity[unbounded] <= 0) & (res.maintenance_margin[unbounded] > 0))
    np.testing.assert_array_equal(np.array(ratio, dtype=object)[~unbounded].astype(float),
                                  res.margin_ratio[~unbounded])


def test_a_non_finite_result_is_an_error_and_writes_nothing(tmp_path, capsys, monkeypatch) -> None:
    from dpm.engines.results import MarginResults

    original = MarginResults.to_columns

    def poisoned(self):
        cols = original(self)
        cols["initial_margin"] = cols["initial_margin"].copy()
        cols["initial_margin"][3] = np.nan
        return cols

    monkeypatch.setattr(MarginResults, "to_columns", poisoned)
    out_csv = tmp_path / "m.csv"
    status, _, err = _run(["--accounts", "20", "--csv", str(out_csv)], capsys, tmp_path)
    assert status == EXIT_DATA
    assert "column 'initial_margin' of account 'acc-000003' is nan" in err
    assert not out_csv.exists()


def test_outputs_appear_together_or_not_at_all(tmp_path, capsys, monkeypatch) -> None:
    out_csv, out_json = tmp_path / "m.csv", tmp_path / "m.json"
    out_csv.write_text("previous contents\n")

    def fail(columns):
        raise DPMError("disk quota exceeded (simulated)")

    monkeypatch.setattr(cli, "_json_text", fail)
    before = _files(tmp_path)
    status = main(["stress", "--accounts", "30", "--csv", str(out_csv), "--json", str(out_json)])
    err = capsys.readouterr().err
    assert status == EXIT_DATA
    assert "disk quota exceeded" in err
    assert _files(tmp_path) == before  # no m.json, no temporary file
    assert out_csv.read_text() == "previous contents\n"  # the old file is untouched


def test_internal_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch) -> None:
    def boom(args):
        raise RuntimeError("simulated bug")

    monkeypatch.setitem(cli.COMMANDS, "stress", cli.Command("stress", "x", cli._stress_arguments, boom))
    status, _, err = _run(["stress"], capsys, tmp_path)
    assert status == EXIT_INTERNAL
    assert "internal error: RuntimeError: simulated bug" in err
    assert main(["--debug", "stress"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: simulated bug" in err
    assert err.rstrip().splitlines()[-1].startswith("dpm: error: internal error")


def test_debug_after_the_subcommand_shows_the_traceback_of_a_data_error(tmp_path, capsys) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text("account_id,instrument,quantity\nA,BTC-NO-SUCH,1\n", encoding="utf-8")
    assert main(["margin", "--accounts-file", str(bad), "--debug"]) == EXIT_DATA
    err = capsys.readouterr().err
    assert "Traceback" in err and "BTC-NO-SUCH" in err.splitlines()[-1]


def test_control_characters_in_messages_are_escaped(tmp_path, capsys) -> None:
    status, _, err = _run(["--accounts-file", str(tmp_path / "evil\x1b[31m\nname.csv")], capsys, tmp_path)
    assert status == EXIT_USAGE
    assert "\x1b" not in err and "evil\\x1b[31m\\nname.csv" in err


def test_help_lists_only_the_options_of_the_subcommand(capsys) -> None:
    assert main(["stress", "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "--accounts-file" in out and "--model" not in out and "--paths" not in out
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "margin" in out and "stress" in out and "var" in out


# ----------------------------------------------------------------------------------------------------
# python -m dpm in a subprocess: the real entry point, real pipes
# ----------------------------------------------------------------------------------------------------
def _python_m_dpm(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "dpm", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300, **kw)


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["--workers", "0"], EXIT_USAGE, "argument --workers"),
    (["var", "--level", "1.5"], EXIT_USAGE, "argument --level"),
    (["stress", "--model", "deribit"], EXIT_USAGE, "does not take them"),
    (["--accounts-file", "missing.csv"], EXIT_USAGE, "missing.csv: no such file"),
    (["var", "--accounts-file", "bad.json"], EXIT_DATA, "bad.json: not valid JSON"),
    (["stress", "--accounts-file", "bad.parquet"], EXIT_DATA, "bad.parquet: not a readable Parquet file"),
])
def test_python_m_dpm_errors(argv, status, message, tmp_path) -> None:
    (tmp_path / "bad.json").write_text('{"accounts": [}')
    (tmp_path / "bad.parquet").write_bytes(b"PAR1\x00\x01PAR1")
    proc = _python_m_dpm(argv, tmp_path)
    assert proc.returncode == status
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("dpm: error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr
    assert proc.stdout == ""


def test_python_m_dpm_closed_pipe_is_a_clean_exit(tmp_path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out_csv = tmp_path / "m.csv"
    # the table is far larger than a pipe buffer, so the writer meets the closed pipe
    proc = subprocess.Popen([sys.executable, "-m", "dpm", "--accounts", "3000", "--top", "3000", "--csv",
                             str(out_csv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env=env)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=300) == EXIT_OK
    assert first.startswith(b"dpm portfolio margin")
    assert err == ""
    assert len(out_csv.read_text().splitlines()) == 3001  # the file was complete before printing


def test_a_new_subcommand_with_an_out_option_takes_a_few_lines(tmp_path, capsys, monkeypatch) -> None:
    from dpm.portfolio.io import read_columns

    def arguments(p):
        cli.add_book_options(p)
        p.add_argument("--out", type=cli.output_file, metavar="PATH", help="results (.csv/.json/.parquet)")

    def run(args):
        market, table, book, source = cli.load_book(args)
        written = cli.write_results(args, {"account_id": book.account_id, "positions": np.diff(book.indptr)})
        print(source, *written)
        return EXIT_OK

    monkeypatch.setitem(cli.COMMANDS, "demo", cli.Command("demo", "a demonstration", arguments, run))
    monkeypatch.setitem(cli.OUTPUT_FORMATS, "out", None)
    out = tmp_path / "r.parquet"
    assert main(["demo", "--accounts", "7", "--out", str(out)]) == EXIT_OK
    cols = read_columns(out)
    assert len(cols["account_id"]) == 7 and cols["positions"].dtype.kind == "i"
    capsys.readouterr()
    status, _, err = _run(["demo", "--accounts", "2", "--out", str(tmp_path / "r.txt")], capsys, tmp_path)
    assert status == EXIT_USAGE and "cannot tell the format from the suffix" in err
    status, _, err = _run(["demo", "--model", "okx"], capsys, tmp_path)
    assert status == EXIT_USAGE and "the 'demo' subcommand does not take them" in err
