"""Runs one command and prints one JSON line about it: its exit code, stderr, seconds, the peak RSS of the largest
process of its tree (``ru_maxrss`` of the waited descendants, in MB), the most processes its tree held at once
(sampled with psutil when it is installed, else null), and the ``/dev/shm`` entries it left: new ``sem.*``
semaphores that no running process maps, and ``fastfashion-*`` files or folders naming its PID. With ``--term S``
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


def _mapped() -> set[str]:
    """Names under /dev/shm that some running process maps (a live semaphore)."""
    names = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            for line in maps.read_text().splitlines():
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
    try:
        import psutil
        most = 1
        me = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                most = max(most, 1 + len(me.children(recursive=True)))
            except psutil.Error:
                pass
            time.sleep(0.05)
    except ImportError:
        pass
    out = proc.communicate()[0]
    ended = time.monotonic()
    reader.join(5)
    time.sleep(0.5)  # a resource tracker's own cleanup
    new = _shm() - before
    leftovers = sorted(n for n in new - _mapped() if n.startswith("sem.") or
                       (n.startswith("fastfashion-") and f"-{proc.pid}-" in n))
    leftovers += sorted(n for n in _shm() if n.startswith("fastfashion-") and f"-{proc.pid}-" in n
                        and n not in leftovers)
    print(json.dumps({"rc": proc.returncode, "stdout": out, "stderr": "".join(err_lines),
                      "seconds": round(ended - t0, 2),
                      "after_sigterm": round(ended - termed["at"], 2) if "at" in termed else None,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
                      "most_processes": most, "shm_left": leftovers}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
