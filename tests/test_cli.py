"""The command line contract: every verb listed, every verb has --help, errors exit non-zero with one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fastfashion import cli

VERBS = ["synth", "shard", "inspect", "train", "evaluate", "predict", "bench", "demo"]  # ARCHITECTURE.md


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert f"    {verb} " in out, verb


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])
    assert e.value.code == 0
    assert "usage: fastfashion " + verb in capsys.readouterr().out


def test_no_verb_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "VERB" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "fastfashion", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "synth" in r.stdout


def test_library_error_is_one_line_and_exit_1(tmp_path, capsys):
    # synth into a path whose parent is a file: an OSError from the library becomes one clear line.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli.main(["synth", str(blocker / "out"), "--train", "1", "--val", "1", "--test", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("fastfashion synth: error:")


def test_quiet_disables_progress_bars(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "TQDM_DISABLE"}
    r = subprocess.run([sys.executable, "-m", "fastfashion", "-q", "synth", str(tmp_path / "d"), "--train", "2",
                        "--val", "1", "--test", "1", "--workers", "1"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "synth:" not in r.stderr and "img/s" not in r.stderr  # no tqdm bar
    r = subprocess.run([sys.executable, "-m", "fastfashion", "synth", str(tmp_path / "e"), "--train", "2",
                        "--val", "1", "--test", "1", "--workers", "1"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "synth:" in r.stderr  # the bar is there without -q
