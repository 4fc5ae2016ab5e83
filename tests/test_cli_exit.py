"""``python -m dpm`` ends a batch run with ``os._exit`` once its output is flushed (the interpreter's
shutdown only frees memory): everything the run printed and wrote must still be there, and the
commands that leave work to exit handlers (a service, a Dask cluster) must not take that exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dpm import cli


def _dpm(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dpm", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_a_batch_run_delivers_all_of_its_output_through_a_pipe(tmp_path):
    # a long stdout (every account's row) through a pipe and two files: nothing may be lost at exit
    proc = _dpm("--accounts", "3000", "--top", "3000", "--out", "res.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("acc-")]
    assert len(rows) == 3000
    assert len((tmp_path / "res.csv").read_text().splitlines()) == 3001
    proc = _dpm("--accounts", "3000", "--out", "res.json", cwd=tmp_path)
    assert proc.returncode == 0 and len(json.loads((tmp_path / "res.json").read_text())["account_id"]) == 3000


def test_an_error_still_reaches_stderr_with_its_status(tmp_path):
    (tmp_path / "bad.csv").write_text("account_id,instrument,quantity\na,NOT-AN-INSTRUMENT,1\n")
    proc = _dpm("--accounts-file", "bad.csv", cwd=tmp_path)
    assert proc.returncode == cli.EXIT_DATA
    assert proc.stderr.startswith("dpm: error:") and "NOT-AN-INSTRUMENT" in proc.stderr


@pytest.mark.parametrize(("argv", "early"), [
    (["--accounts", "20", "--top", "1"], True),
    (["margin", "--accounts", "20", "--top", "1"], True),
    (["margin", "--accounts", "20", "--top", "1", "--scheduler", "local", "--cluster-workers", "1"], False),
])
def test_which_runs_may_end_early(argv, early, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if "--scheduler" in argv:
        pytest.importorskip("distributed")
        # the decision only, no cluster
        monkeypatch.setitem(cli.COMMANDS, "margin", cli.COMMANDS["margin"].__class__(
            "margin", "", cli.COMMANDS["margin"].arguments, lambda args: 0))
    cli._EXIT_EARLY = False
    assert cli.main(argv) == 0
    assert cli._EXIT_EARLY is early


def test_the_service_is_not_a_batch_command():
    assert "serve" in cli.COMMANDS and "serve" not in cli._BATCH_COMMANDS
    assert cli._BATCH_COMMANDS <= set(cli.COMMANDS)


@pytest.mark.parametrize("argv", [
    ["stress", "--accounts", "1500", "--out", "{tag}.csv"],
    ["var", "--accounts", "1500", "--paths", "500", "--out", "{tag}.csv"],
    ["solvency", "--accounts", "1500", "--policy", "bitmex", "--fund", "5e6", "--report", "{tag}.md"],
])
def test_every_batch_command_leaves_the_same_files_as_an_in_process_run(argv, tmp_path, monkeypatch):
    """The early exit must not cut a command's files short: each batch command's files (the solvency
    report with its plots included) equal those of the same command run through main() in process."""
    proc = _dpm(*[a.format(tag="sub") for a in argv], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.chdir(tmp_path)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([a.format(tag="inproc") for a in argv]) == 0
    sub = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("sub"))
    assert sub and sub == sorted(p.name.replace("inproc", "sub") for p in tmp_path.iterdir()
                                 if p.name.startswith("inproc"))
    for name in sub:
        a = (tmp_path / name).read_bytes()
        b = (tmp_path / name.replace("sub", "inproc")).read_bytes()
        if name.endswith(".md"):  # the report names its plot files after itself
            b = b.replace(b"inproc", b"sub")
        assert a == b, name
