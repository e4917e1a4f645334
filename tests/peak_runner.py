"""Runs one command and prints one JSON line about it: its exit code, stderr, seconds, the peak RSS of the largest
process of its tree (``ru_maxrss`` of the waited descendants, in MB), the most processes its tree held at once
(sampled with psutil when it is installed, else null), and the ``/dev/shm`` entries it left: those its tree
mapped while it ran (named semaphores, shared memory; sampled every 50 ms) and the ``fastfashion-*`` files or
folders naming its PID (other users of the machine do not count). With ``--term S``
it sends SIGTERM 0.3 s after the command wrote a line containing ``S`` to stderr (``@N``: N seconds after it started;
``file:PATH``: once PATH exists) and reports how long the command took to end after that.

    python peak_runner.py [--term MARK] -- COMMAND ...
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SHM = Path("/dev/shm")


def _shm() -> set[str]:
    try:
        return {p.name for p in SHM.iterdir()}
    except OSError:
        return set()


def _mapped(pids) -> set[str]:
    """Names under /dev/shm that the processes ``pids`` map (their named semaphores, shared memory)."""
    names = set()
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    names.add(line.split("/dev/shm/", 1)[1].split()[0])
        except OSError:
            pass
    return names


def main() -> int:
    args = sys.argv[1:]
    mark = None
    if args[0] == "--term":
        mark, args = args[1], args[2:]
    assert args[0] == "--"
    cmd = args[1:]
    before = _shm()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    termed = {}

    def term() -> None:
        if proc.poll() is None and "at" not in termed:
            termed["at"] = time.monotonic()
            proc.send_signal(signal.SIGTERM)

    def read_err() -> None:
        for line in proc.stderr:
            err_lines.append(line)
            if mark and not mark.startswith(("@", "file:")) and mark in line:
                threading.Timer(0.3, term).start()  # the command is past its marker line

    reader = threading.Thread(target=read_err, daemon=True)
    reader.start()
    if mark and mark.startswith("@"):
        threading.Timer(float(mark[1:]), term).start()
    if mark and mark.startswith("file:"):
        def watch() -> None:
            while proc.poll() is None and not os.path.exists(mark[5:]):
                time.sleep(0.02)
            term()
        threading.Thread(target=watch, daemon=True).start()
    most = None
    seen: set[str] = set()  # /dev/shm names the command's tree mapped while it ran (not other users' of the machine)
    try:
        import psutil
        most = 1
        me = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [proc.pid, *(c.pid for c in me.children(recursive=True))]
                most = max(most, len(tree))
                seen |= _mapped(tree)
            except psutil.Error:
                pass
            time.sleep(0.05)
    except ImportError:
        while proc.poll() is None:
            seen |= _mapped([proc.pid])
            time.sleep(0.05)
    out = proc.communicate()[0]
    ended = time.monotonic()
    reader.join(5)
    time.sleep(0.5)  # a resource tracker's own cleanup
    now = _shm()
    leftovers = sorted((seen & now) - before | {n for n in now if n.startswith("fastfashion-")
                                                and f"-{proc.pid}-" in n})
    print(json.dumps({"rc": proc.returncode, "stdout": out, "stderr": "".join(err_lines),
                      "seconds": round(ended - t0, 2),
                      "after_sigterm": round(ended - termed["at"], 2) if "at" in termed else None,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                      "most_processes": most, "shm_left": leftovers}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
