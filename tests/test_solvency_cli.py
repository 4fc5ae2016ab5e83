"""``python -m dpm solvency``: a run end to end, and bad input failing closed (one line, exit status,
no files left behind), as tests/test_cli_errors.py does for the other subcommands."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpm.cli import EXIT_DATA, EXIT_OK, EXIT_USAGE, _scenario_spec, main

REPO = Path(__file__).resolve().parents[1]


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _run(argv, capsys, tmp_path):
    before = _files(tmp_path)
    status = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if status != EXIT_OK:
        assert err.startswith("dpm: error: "), err
        assert err.count("\n") == 1, f"expected one line, got {err!r}"
        assert _files(tmp_path) == before, "a failed run left a file behind"
    return status, out, err


def test_solvency_runs_and_writes_every_output(tmp_path, capsys):
    md, csv, js = tmp_path / "rep.md", tmp_path / "rep.csv", tmp_path / "rep.json"
    status, out, err = _run(["solvency", "--accounts", "150", "--fund", "2e6", "--policy", "bitmex",
                             "--scenario", "crash:BTC=-30%,ETH=-0.4,BTC.vol=+60%", "--report", str(md),
                             "--csv", str(csv), "--json", str(js), "--workers", "2"], capsys, tmp_path)
    assert status == EXIT_OK, err
    assert "policy 'bitmex'" in out and "crash" in out and "venue reverse stress" in out
    data = json.loads(js.read_text())
    assert data["scenario"][:1] == ["black_thursday_2020"] and "crash" in data["scenario"]
    assert data["scenario"][-1] == "reverse_stress_venue"
    for i in range(len(data["scenario"])):
        lhs = data["losses"][i]
        rhs = sum(data[k][i] for k in ("equity_consumed", "fund_used", "deleveraged", "socialised", "shortfall"))
        assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))
    text = md.read_text()
    assert text.startswith("# Solvency report") and "| scenario |" in text
    assert (tmp_path / "rep_loss_waterfall.png").exists()
    assert csv.read_text().startswith("scenario,")


def test_solvency_html_without_history_or_plots(tmp_path, capsys):
    html = tmp_path / "r.html"
    status, out, err = _run(["solvency", "--accounts", "80", "--no-history", "--no-reverse", "--scenario",
                             "up:BTC=+25%", "--scenario", "down:ETH=-35%", "--report", str(html), "--no-plots"],
                            capsys, tmp_path)
    assert status == EXIT_OK, err
    page = html.read_text()
    assert "<table" in page and "down" in page and "base64" not in page


def test_scenario_spec_parser():
    assert _scenario_spec("c:BTC=-30%,ETH=0.1,BTC.vol=+50%") == ("c", {"BTC": -0.3, "ETH": 0.1}, {"BTC": 0.5})


USAGE = [
    (["solvency", "--fund", "-1"], "argument --fund"),
    (["solvency", "--fund", "nan"], "argument --fund"),
    (["solvency", "--fund", "lots"], "argument --fund: expected a number"),
    (["solvency", "--policy", "ftx"], "argument --policy: invalid choice: 'ftx'"),
    (["solvency", "--metric", "euclid"], "argument --metric: invalid choice"),
    (["solvency", "--impact", "-0.5"], "argument --impact"),
    (["solvency", "--impact-exponent", "0"], "argument --impact-exponent"),
    (["solvency", "--impact-exponent", "1.5"], "argument --impact-exponent"),
    (["solvency", "--half-spread", "2"], "argument --half-spread"),
    (["solvency", "--scenario", "crash"], "expected NAME:UNDERLYING=MOVE"),
    (["solvency", "--scenario", "crash:BTC"], "expected UNDERLYING=MOVE"),
    (["solvency", "--scenario", "crash:BTC=-x%"], "not a number"),
    (["solvency", "--scenario", "crash:BTC=-100%"], "above -100 %"),
    (["solvency", "--scenario", "crash:BTC=inf"], "must be finite"),
    (["solvency", "--scenario", "crash:BTC.skew=0.1"], "use UNDERLYING or UNDERLYING.vol"),
    (["solvency", "--scenario", "crash:BTC=-0.1,BTC=-0.2"], "is given twice"),
    (["solvency", "--scenario", "a:BTC=-0.1", "--scenario", "a:ETH=-0.1"], "the name 'a' is given twice"),
    (["solvency", "--accounts", "5", "--scenario", "a:SOL=-0.1"], "unknown underlying 'SOL'"),
    (["solvency", "--no-history", "--no-reverse"], "leave no scenario"),
    (["solvency", "--report", "{tmp}/r.pdf"], "use .md or .html"),
    (["solvency", "--report", "{tmp}/no/such/r.md"], "does not exist"),
    (["solvency", "--report", "{tmp}/r.md", "--csv", "{tmp}/r.md"], "is also given as another input or output"),
    (["solvency", "--paths", "100"], "the 'solvency' subcommand does not take them"),
    (["solvency", "--level", "0.99"], "the 'solvency' subcommand does not take them"),
    (["stress", "--fund", "1"], "the 'stress' subcommand does not take them"),
    (["solvency", "--model", "nope"], "argument --model: invalid choice"),
    (["solvency", "--accounts-file", "{tmp}/missing.csv"], "missing.csv: no such file"),
]


@pytest.mark.parametrize("argv, message", USAGE)
def test_solvency_usage_errors(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    status, out, err = _run(argv, capsys, tmp_path)
    assert status == EXIT_USAGE, err
    assert message in err, err


def test_solvency_data_error_is_one_line(tmp_path, capsys):
    pos = tmp_path / "p.csv"
    pos.write_text("account_id,instrument,quantity\nA,BTC-NOPE,1\n", encoding="utf-8")
    status, out, err = _run(["solvency", "--accounts-file", str(pos), "--json", str(tmp_path / "o.json")],
                            capsys, tmp_path)
    assert status == EXIT_DATA
    assert "BTC-NOPE" in err


def test_solvency_empty_book(tmp_path, capsys):
    status, out, err = _run(["solvency", "--accounts", "0", "--no-reverse"], capsys, tmp_path)
    assert status == EXIT_OK, err
    assert "black_thursday_2020" in out


def test_python_m_dpm_solvency_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dpm", "solvency", "--fund", "-3"], cwd=tmp_path,
                       capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}, timeout=300)
    assert r.returncode == EXIT_USAGE
    assert r.stderr.startswith("dpm: error: argument --fund") and r.stderr.count("\n") == 1
