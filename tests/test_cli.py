"""The command line contract: every verb listed, every verb has --help, errors exit non-zero with one line."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from fastfashion import cli

VERBS = ["synth", "shard", "inspect", "train", "evaluate", "predict", "bench", "demo"]  # README "Using it"


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit, match="^0$") as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert f"    {verb} " in out, verb


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit, match="^0$") as e:
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


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}


def _synth_args(out) -> list[str]:
    return ["synth", str(out), "--train", "2", "--val", "1", "--test", "1", "--workers", "1"]


def _run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``python -m fastfashion ARGS`` with stderr on a pseudo-terminal; returns (exit code, what it showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns for the bar
    proc = subprocess.Popen([sys.executable, "-m", "fastfashion", *args], stdout=subprocess.DEVNULL, stderr=slave,
                            env=_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_before_or_after_the_verb(tmp_path, where):
    args = _synth_args(tmp_path / "d")
    args = ["-q", *args] if where == "before" else [*args, "-q"]
    rc, shown = _run_on_a_terminal(args)
    assert rc == 0, shown
    assert "%|" not in shown and "INFO" not in shown  # no tqdm bar ("synth:  50%|###  |"), no info log


def test_progress_bars_only_on_a_terminal(tmp_path):
    rc, shown = _run_on_a_terminal(_synth_args(tmp_path / "d"))
    assert rc == 0 and "synth: 100%|" in shown and "\r" in shown  # a tqdm bar redraws its line
    r = subprocess.run([sys.executable, "-m", "fastfashion", *_synth_args(tmp_path / "e")], capture_output=True,
                       text=True, env=_env())
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "%|" not in r.stderr  # a log file gets no bar frames ...
    assert "INFO fastfashion.data.synth: wrote 4 images" in r.stderr  # ... but the summary line


def test_version(capsys):
    from fastfashion import __version__
    with pytest.raises(SystemExit, match="^0$") as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fastfashion {__version__}"


def test_errors_advise_the_flag_that_fixes_them(tiny_dataset, tmp_path, capsys):
    assert cli.main(["train", "--shards", str(tmp_path), "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.strip() == (f"fastfashion train: error: {tmp_path}: not a shard set (no "
                                               "manifest.json); create one with 'fastfashion shard SRC_DIR SHARD_DIR'")
    out = tmp_path / "shards"
    assert cli.main(["-q", "shard", str(tiny_dataset), str(out), "--workers", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["-q", "shard", str(tiny_dataset), str(out), "--workers", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"fastfashion shard: error: {out} already holds a shard set; refusing to replace it without "
                   "overwrite=True; pass --overwrite to replace it")


def test_outputs_are_checked_before_the_work(tmp_path, capsys):
    """An output that cannot be written fails at once, not after minutes of work."""
    assert cli.main(["bench", "--shards", str(tmp_path), "--json", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"fastfashion bench: error: cannot write {tmp_path}: it is a folder; choose "
                                       "another --json/--png\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["train", "--shards", str(tmp_path), "--out", str(blocker)]) == 1
    assert capsys.readouterr().err == (f"fastfashion train: error: {blocker} exists and is not a folder (the run "
                                       "folder for checkpoints); choose another --out\n")
