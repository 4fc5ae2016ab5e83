"""``python -m dpm --market FILE --accounts-file FILE``: a user's book margined at a loaded market.

Fixtures: the bundled real Deribit chain (2020-05-14) as a marks table, the same chain re-formatted as
Deribit and OKX API payloads (tests/fixtures/venues), and dpm's own saved snapshots.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import dpm.cli as cli
from dpm.engines.margin import MarginEngine
from dpm.market.loaders import load_market, save_market
from dpm.market.loaders.deribit import DERIBIT_SAMPLE_CHAIN, read_deribit_chain
from dpm.models import dpm_default
from dpm.portfolio import io

V = Path(__file__).parent / "fixtures" / "venues"
DERIBIT = [V / "deribit_btc_book_summary_option_2020-05-14.json", V / "deribit_btc_book_summary_future_2020-05-14.json",
           V / "deribit_btc_instruments_option_2020-05-14.json", V / "deribit_index_btc_usd_2020-05-14.json"]
OKX = [V / "okx_btc_opt_summary_2020-05-14.json", V / "okx_btc_mark_price_swap_2020-05-14.json",
       V / "okx_btc_index_tickers_2020-05-14.json"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_market")
    chain = read_deribit_chain()
    io.write_instruments(chain.table, d / "instruments.csv")
    names = list(chain.table.name)
    rows = [("maker", names[10], -2.0), ("maker", names[50], 1.0), ("maker", names[120], 4.0),
            ("hedged", names[200], 3.0), ("hedged", names[201], -3.0), ("short_vol", names[150], -5.0)]
    with open(d / "positions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["account_id", "instrument", "quantity"])
        w.writerows(rows)
    market = load_market(DERIBIT_SAMPLE_CHAIN, max_age_s=None)
    save_market(market, d / "snapshot.json")
    save_market(market, d / "snapshot.parquet")
    return d, market, chain.table


def _run(d, market_args, *extra):
    out = d / "out.csv"
    if out.exists():
        out.unlink()
    rc = cli.main(["--market", *map(str, market_args), "--max-age", "none", "--instruments-file",
                   str(d / "instruments.csv"), "--accounts-file", str(d / "positions.csv"), "--csv", str(out),
                   *extra])
    return rc, out


def _ims(path):
    with open(path, newline="") as fh:
        return {r["account_id"]: float(r["initial_margin"]) for r in csv.DictReader(fh)}


@pytest.mark.parametrize("which", ["snapshot.json", "snapshot.parquet"])
def test_saved_snapshot_markets(files, which):
    d, market, table = files
    rc, out = _run(d, [d / which])
    assert rc == 0
    book = io.read_accounts(d / "positions.csv", table)
    res = MarginEngine(market, table, dpm_default()).margin_many(book)
    expect = dict(zip(book.account_id, res.initial_margin))
    assert _ims(out) == pytest.approx(expect, rel=1e-15, abs=0)


@pytest.mark.slow  # surface fits of a real chain (scipy); skipped by the sanitizer run
def test_deribit_payload_market(files):
    d, _, table = files
    rc, out = _run(d, DERIBIT)
    assert rc == 0
    market = load_market(DERIBIT, max_age_s=None)
    book = io.read_accounts(d / "positions.csv", table)
    res = MarginEngine(market, table, dpm_default()).margin_many(book)
    assert _ims(out) == pytest.approx(dict(zip(book.account_id, res.initial_margin)), rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["okx", "marks_csv"])
def test_okx_payloads_and_marks_table(files, source):
    d, _, _ = files
    rc, out = _run(d, OKX if source == "okx" else [DERIBIT_SAMPLE_CHAIN])
    assert rc == 0 and set(_ims(out)) == {"maker", "hedged", "short_vol"}


def test_stale_inconsistent_and_incomplete_markets(files, tmp_path, capsys):
    d, _, _ = files
    # stale: the default --max-age (300 s) refuses 2020 marks, exit 1, no output file
    out = tmp_path / "o.csv"
    rc = cli.main(["--market", str(d / "snapshot.json"), "--instruments-file", str(d / "instruments.csv"),
                   "--accounts-file", str(d / "positions.csv"), "--csv", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "stale" in err and "Traceback" not in err and not out.exists()
    # inconsistent: an index payload of another instant
    idx = json.loads(DERIBIT[3].read_text())
    idx["usOut"] = idx["usOut"] + 3_600 * 10**6
    bad = tmp_path / "deribit_index_btc_usd_2020-05-14.json"
    bad.write_text(json.dumps(idx))
    rc, _ = _run(d, DERIBIT[:3] + [bad])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    # incomplete: a position on an instrument of another underlying than the market's
    pos = tmp_path / "eth.csv"
    pos.write_text("account_id,instrument,quantity\nx,ETH-PERPETUAL,1\n")
    inst = tmp_path / "inst.csv"
    inst.write_text("name\nETH-PERPETUAL\n")
    rc = cli.main(["--market", str(d / "snapshot.json"), "--max-age", "none", "--instruments-file", str(inst),
                   "--accounts-file", str(pos)])
    err = capsys.readouterr().err
    assert rc == 1 and "ETH-PERPETUAL" in err and "'x'" in err


def test_market_option_errors(files, tmp_path, capsys):
    d, _, _ = files
    for argv, needle in (([str(tmp_path / "missing.json")], "no such file"),
                         ([str(d / "instruments.csv")], ""),
                         ([str(d / "snapshot.json"), "--max-age", "-3"], "max-age")):
        rc = cli.main(["--market", *argv])
        err = capsys.readouterr().err
        assert rc in (1, 2) and "Traceback" not in err and needle in err


def test_partitioned_book_at_a_loaded_market(files, tmp_path):
    """``--partitions DIR --market FILE``: each partition is margined at the user's market, not the bundled one."""
    pytest.importorskip("pyarrow")
    from dpm.portfolio.partitions import write_partitions

    d, market, table = files
    book = io.read_accounts(d / "positions.csv", table)
    write_partitions(book, tmp_path / "parts", 2)
    out = tmp_path / "results"
    rc = cli.main(["--market", str(d / "snapshot.json"), "--max-age", "none", "--instruments-file",
                   str(d / "instruments.csv"), "--partitions", str(tmp_path / "parts"), "--out", str(out)])
    assert rc == 0
    import pyarrow.parquet as pq

    got = {}
    for f in sorted(out.glob("*.parquet")):
        t = pq.read_table(f).to_pydict()
        got.update(zip(t["account_id"], t["initial_margin"]))
    res = MarginEngine(market, table, dpm_default()).margin_many(book)
    assert got == pytest.approx(dict(zip(book.account_id, res.initial_margin)), rel=1e-15, abs=0)
