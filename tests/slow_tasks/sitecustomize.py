"""Slows down shard writing in every Python process started with this folder first on ``PYTHONPATH`` (see
``tests/helpers.slow_tasks_env``): the workers of a local pool and Ray's workers included, which no monkeypatch in
the test process reaches.

While the file named by ``FASTFASHION_TEST_SLOW`` exists, each image written into a tar waits
``FASTFASHION_TEST_SLOW_S`` seconds (default 0.1), and the process records its PID as a file in the folder
``$FASTFASHION_TEST_SLOW.pids`` (so that a test can kill a worker in the middle of a task).
"""
import os

_flag = os.environ.get("FASTFASHION_TEST_SLOW")
if _flag:
    import time

    import fastfashion.format.writer as _writer

    _real = _writer._add

    def _slow(tar, name, data):
        if name.endswith(".jpg") and os.path.exists(_flag):
            pids = _flag + ".pids"
            os.makedirs(pids, exist_ok=True)
            open(os.path.join(pids, str(os.getpid())), "w").close()
            time.sleep(float(os.environ.get("FASTFASHION_TEST_SLOW_S", "0.1")))
        return _real(tar, name, data)

    _writer._add = _slow
