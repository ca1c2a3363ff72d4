"""Command lines that the tests of one file start together, each asserted on by its own test.

The suite itself runs on one core (conftest's `one_thread`), so while a test waits for a `python train.py` subprocess
the other core of a 2-core CI machine is idle: starting the file's independent subprocesses at once (as many at a
time as there are cores) gives the same runs, checked by the same assertions, in about half the wall time.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor


def selected(request, test_name: str, param: str | None = None) -> set:
    """The tests named `test_name` in this pytest session (after -k / -m), or their values of `param`: a file's
    fixture starts only the subprocesses of tests that will run."""
    items = [i for i in request.session.items if i.originalname == test_name]
    return {i.callspec.params[param] for i in items} if param else {i.name for i in items}


class Concurrent:
    """`subprocess.run(args, capture_output=True, text=True, **kwargs)` for each started key, `cores` at a time;
    `result(key)` waits for that one (its timeout or failure to start is raised there, in the test that asks)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(os.sched_getaffinity(0))))
        self.futures: dict[object, Future] = {}

    def start(self, key, args: list[str], **kwargs) -> None:
        self.futures[key] = self.pool.submit(subprocess.run, args, capture_output=True, text=True, **kwargs)

    def result(self, key) -> subprocess.CompletedProcess:
        return self.futures[key].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
