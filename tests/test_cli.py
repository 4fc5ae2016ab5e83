"""The command line runs the main job and writes its files."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np

from dpm.cli import main


def test_cli_default_run_prints_summary(capsys) -> None:
    assert main(["--accounts", "300", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "total initial margin" in out
    assert "largest 3 initial margins" in out


def test_cli_writes_csv_and_json_matching_engine(tmp_path) -> None:
    from dpm.engines.margin import MarginEngine
    from dpm.market.sample import default_instruments, default_market
    from dpm.models import preset
    from dpm.portfolio.sample import generate_accounts

    out_csv, out_json = tmp_path / "m.csv", tmp_path / "m.json"
    assert main(["--accounts", "200", "--model", "deribit", "--csv", str(out_csv), "--json", str(out_json)]) == 0
    table = default_instruments()
    res = MarginEngine(default_market(), table, preset("deribit")).margin_many(generate_accounts(200, table, seed=0))
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["account_id"] for r in rows] == list(res.account_id)
    np.testing.assert_allclose([float(r["initial_margin"]) for r in rows], res.initial_margin, rtol=1e-12)
    data = json.loads(out_json.read_text())
    np.testing.assert_allclose(data["maintenance_margin"], res.maintenance_margin, rtol=1e-12)


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "dpm", "--accounts", "50", "--top", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "dpm portfolio margin" in proc.stdout


def test_cli_rejects_unknown_model(capsys) -> None:
    assert main(["--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpm: error: argument --model: invalid choice: 'nope'")
    assert err.count("\n") == 1


def test_cli_stress_matches_engine(tmp_path, capsys) -> None:
    from dpm.engines.risk import ScenarioRiskEngine
    from dpm.market.sample import default_instruments, default_market
    from dpm.models.generators.stress import historical_stress_scenarios
    from dpm.portfolio.sample import generate_accounts

    out_csv = tmp_path / "s.csv"
    assert main(["stress", "--accounts", "150", "--csv", str(out_csv)]) == 0
    assert "black_thursday_2020" in capsys.readouterr().out
    table = default_instruments()
    book = generate_accounts(150, table, seed=0)
    res = ScenarioRiskEngine(default_market(), table).stress(book, historical_stress_scenarios(underlyings=("BTC", "ETH")))
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    np.testing.assert_allclose([float(r["worst_loss"]) for r in rows], res.worst_loss, rtol=1e-12)
    assert [r["worst_scenario"] for r in rows] == [res.scenario_names[k] for k in res.worst_scenario]


def test_cli_var_reports_es_at_least_var(tmp_path, capsys) -> None:
    out_json = tmp_path / "v.json"
    assert main(["var", "--accounts", "120", "--paths", "2000", "--level", "0.975", "--json", str(out_json)]) == 0
    assert "level 97.50%" in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert len(data["es"]) == 120
    assert np.all(np.asarray(data["es"]) >= np.asarray(data["var"]))
