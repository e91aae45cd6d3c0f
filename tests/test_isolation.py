"""The suite's own isolation (conftest.py's ``process_state_restored``, autouse for every test): what a test
does to the process is undone after it, pass or fail, so that the suite passes in any order and in parallel."""

from __future__ import annotations

import logging
import logging.config
import os
import signal
import subprocess
import time

import pytest

from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT, process_state_restored, wait_for


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead, only not reaped yet
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="finds children through /proc")
def test_everything_a_failing_test_changed_is_restored() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.getLogger("urllib3").disabled, os.environ.get("CES_X"),
              signal.getsignal(signal.SIGTERM))  # fmt: skip
    name = f"iso{time.monotonic_ns()}"
    with Emulator() as emu, pytest.raises(RuntimeError, match="the test failed"), process_state_restored():
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, flush_interval=0.05)
        root.addHandler(h)
        root.setLevel(logging.DEBUG)
        logging.getLogger(name).addHandler(logging.StreamHandler())
        logging.getLogger(name).propagate = False
        # dictConfig's default disables every logger it does not name: urllib3's among them
        logging.config.dictConfig({"version": 1, "loggers": {"other": {"level": "INFO"}}})
        os.environ["CES_X"] = "1"
        signal.signal(signal.SIGTERM, lambda *a: None)
        child = subprocess.Popen(["sleep", "600"])
        raise RuntimeError("the test failed")
    assert (list(root.handlers), root.level, logging.getLogger("urllib3").disabled, os.environ.get("CES_X"),
            signal.getsignal(signal.SIGTERM)) == before  # fmt: skip
    assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate
    assert h._closed  # the handler left attached was closed (its worker ends)
    assert wait_for(lambda: not _alive(child.pid), timeout=10), "the child left running was not killed"
    child.wait(10)
