"""Partitioned books: margin, VaR/ES and stress partition by partition equal the single-process run, bit
for bit; on a local Dask cluster (2 worker processes on 127.0.0.1) too; fail-closed partitioning."""
from __future__ import annotations

import contextlib
import signal
import time

import numpy as np
import pytest

from dpm.cli import EXIT_OK, EXIT_USAGE, main
from dpm.engines import distributed as dist
from dpm.engines.margin import MarginEngine
from dpm.engines.risk import ScenarioRiskEngine
from dpm.errors import DPMError, InvalidInputError
from dpm.market.sample import default_instruments, default_market
from dpm.models.generators.stress import historical_stress_scenarios
from dpm.models.presets import preset
from dpm.portfolio.io import read_accounts, read_columns, write_accounts
from dpm.portfolio.partitions import partition_files, write_generated_partitions, write_partitions
from dpm.portfolio.sample import generate_accounts

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    table, market = default_instruments(), default_market()
    book = generate_accounts(2_400, table, seed=11)
    d = tmp_path_factory.mktemp("book")
    write_partitions(book, d, 700)  # 4 partitions, the last one short
    return table, market, book, d


def _concat(run) -> dict[str, np.ndarray]:
    cols = [read_columns(p) for p in run.outputs]
    return {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}


def _assert_bitwise(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for k, v in want.items():
        v = np.asarray(v)
        if v.dtype.kind == "f":
            # the same bits (NaN, -0.0 and all)
            assert np.array_equal(got[k].astype(np.float64).view(np.int64), v.view(np.int64)), k
        else:  # text: the readers take an empty cell as missing
            assert ["" if x is None else x for x in got[k].tolist()] == v.tolist(), k


def test_partition_files_and_writers(setup, tmp_path) -> None:
    table, _, book, d = setup
    files = partition_files(d)
    assert [p.name for p in files] == [f"part-0000{j}.parquet" for j in range(4)]
    assert all((d / f"part-0000{j}.collateral.parquet").exists() for j in range(4))
    with pytest.raises(InvalidInputError, match="no partition files"):
        partition_files(tmp_path)
    with pytest.raises(InvalidInputError, match="not a directory"):
        partition_files(tmp_path / "nope")
    paths = write_generated_partitions(tmp_path / "gen", 250, 100, table, seed=4)
    assert len(paths) == 3
    ids = [a for p in paths for a in read_accounts(p, table).account_id.tolist()]
    assert len(set(ids)) == 250 and ids[0] == "p00000-acc-000000" and ids[-1] == "p00002-acc-000049"


def test_margin_partitions_equal_one_process(setup, tmp_path) -> None:
    table, market, book, d = setup
    model = preset("deribit")
    want = MarginEngine(market, table, model).margin_many(book)
    run = dist.margin_partitions(d, market, table, model, out=tmp_path / "out", top=5)
    _assert_bitwise(_concat(run), want.to_columns())
    assert run.accounts == len(book) and run.positions == book.n_positions
    assert [p.accounts for p in run.partitions] == [700, 700, 700, 300]
    s = want.summary()
    assert run.totals["total_initial_margin"] == pytest.approx(s["total_initial_margin"], rel=1e-12)
    assert run.counts == {"below_initial": s["below_initial"], "below_maintenance": s["below_maintenance"]}
    order = np.argsort(-want.initial_margin, kind="stable")[:5]
    assert run.top(5)["account_id"] == want.account_id[order].tolist()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"part-0000{j}.parquet" for j in range(4)]


def test_var_es_and_stress_partitions_equal_one_process(setup, tmp_path) -> None:
    from dpm.models.generators.montecarlo import mc_scenarios

    table, market, book, d = setup
    cov = np.array([[4e-4, 3e-4], [3e-4, 6e-4]])
    scen = mc_scenarios(cov, n_paths=800, seed=5, underlyings=["BTC", "ETH"])
    engine = ScenarioRiskEngine(market, table)
    want = engine.var_es(book, scen, (0.99, 0.975))
    run = dist.var_es_partitions(d, market, table, scen, (0.99, 0.975), out=tmp_path / "var")
    got = _concat(run)
    assert got["account_id"].tolist() == want.account_id.tolist()
    for r, lv in enumerate((0.99, 0.975)):
        assert np.array_equal(got[f"var_{lv:g}"], want.var[r]) and np.array_equal(got[f"es_{lv:g}"], want.es[r])
    stress = historical_stress_scenarios(underlyings=("BTC", "ETH"))
    want_s = engine.stress(book, stress)
    got_s = _concat(dist.stress_partitions(d, market, table, stress, out=tmp_path / "stress"))
    assert np.array_equal(got_s["worst_loss"], want_s.worst_loss)
    for j, n in enumerate(want_s.scenario_names):
        assert np.array_equal(got_s[f"loss:{n}"], want_s.loss[:, j])


def test_an_account_in_two_partitions_is_refused(setup, tmp_path) -> None:
    table, market, book, _ = setup
    d = tmp_path / "bad"
    d.mkdir()
    write_accounts(book.subset(np.arange(0, 10)), d / "part-00000.parquet")
    write_accounts(book.subset(np.arange(9, 20)), d / "part-00001.parquet")  # account 9 in both
    with pytest.raises(InvalidInputError, match=r"account 'acc-000009' appears in partitions .*part-00000"):
        dist.margin_partitions(d, market, table, out=tmp_path / "o")
    assert not list((tmp_path / "o").iterdir())  # nothing left behind, not even the staging directory
    assert dist.id_hashes(["ab", "ab"])[0] == dist.id_hashes(["ab"])[0] != dist.id_hashes(["ba"])[0]


def test_a_bad_partition_fails_closed_naming_the_file(setup, tmp_path) -> None:
    table, market, book, _ = setup
    d = tmp_path / "bad"
    d.mkdir()
    write_accounts(book.subset(np.arange(0, 10)), d / "part-00000.parquet")
    (d / "part-00001.parquet").write_bytes(b"PAR1 not parquet PAR1")
    with pytest.raises(DPMError, match="part-00001.parquet: not a readable Parquet file"):
        dist.margin_partitions(d, market, table, out=tmp_path / "o")
    assert not list((tmp_path / "o").iterdir())


@contextlib.contextmanager
def _deadline(seconds: int):
    def fire(signum, frame):
        raise TimeoutError(f"the local Dask cluster test ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.slow  # worker processes: in the main CI pass, not the sanitizer pass
def test_local_dask_cluster_equals_one_process(setup, tmp_path) -> None:
    pytest.importorskip("distributed")
    table, market, book, d = setup
    want = MarginEngine(market, table).margin_many(book).to_columns()
    with _deadline(240):
        t0 = time.perf_counter()
        with dist.cluster("local", n_workers=2, threads_per_worker=1) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            assert all(a.startswith("tcp://127.0.0.1:") for a in client.scheduler_info()["workers"])
            run = dist.margin_partitions(d, market, table, out=tmp_path / "out", client=client, threads=1)
            again = dist.margin_partitions(d, market, table, out=tmp_path / "out2", client=client, threads=1)
        assert time.perf_counter() - t0 < 240
    _assert_bitwise(_concat(run), want)
    _assert_bitwise(_concat(again), want)
    # the engine is built once per worker process and reused for its later partitions of the run
    built = {}
    for p in run.partitions:
        built.setdefault(p.worker, []).append(p.seconds["engine"] > 0)
    assert all(flags[0] and not any(flags[1:]) for flags in built.values())
    assert len({p.worker for p in run.partitions}) <= 2


def test_cli_partitions(setup, tmp_path, capsys) -> None:
    _, _, book, d = setup
    out = tmp_path / "res"
    assert main(["--partitions", str(d), "--out", str(out), "--top", "2"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "4 partitions, 2,400 accounts" in text and "largest 2 by initial_margin" in text
    assert len(list(out.iterdir())) == 4
    for argv, message in (
        (["--scheduler", "local"], "--scheduler needs --partitions"),
        (["--partitions", str(d), "--accounts", "5"], "--accounts cannot be combined with --partitions"),
        (["--partitions", str(d), "--csv", str(tmp_path / "x.csv")], "--csv cannot be combined with --partitions"),
        (["--partitions", str(d), "--out", str(d)], "--out is the --partitions directory"),
        (["--partitions", str(tmp_path / "nope")], "not a directory"),
        (["--accounts", "3", "--out", str(tmp_path)], "is a directory, not a file"),
        (["--partitions", str(d), "--scheduler", "not an address"], "expected 'local' or an address"),
    ):
        assert main(argv) == EXIT_USAGE, argv
        assert message in capsys.readouterr().err, argv
    f = tmp_path / "file.parquet"
    f.write_bytes(b"x")
    assert main(["--partitions", str(d), "--out", str(f)]) == EXIT_USAGE
    assert "with --partitions, a directory" in capsys.readouterr().err
