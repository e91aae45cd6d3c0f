"""A SIGTERM whose Python handler CPython did not run, in a multiprocessing child, is sent again (sigwatch.py).

The miss itself cannot be caused on demand (it is a race inside CPython's lock wait; a Pool's exit under load
shows it, see test_processes.py::test_multiprocessing_workers_deliver). What can be: the state it leaves, a
SIGTERM's number in the wakeup fd and no handler run, with the main thread asleep in a lock's C wait.
"""

from __future__ import annotations

import sys

import pytest

from ces_logging.emulator import Emulator

from .conftest import PROJECT
from .test_processes import APPS, START_METHODS, child_env, json_lines, run


@pytest.mark.parametrize("method", START_METHODS)
def test_a_missed_sigterm_still_ends_the_child_and_delivers(emu: Emulator, method: str) -> None:
    r = run([sys.executable, str(APPS / "sigwatch_script.py"), method, "missed"], child_env(emu.url))
    (d,) = json_lines(r.stdout)
    assert d["watching"] is True, (d, r.stderr)
    # ended by SIGTERM (as the default action would have), not left waiting for the lock for ever
    assert d["exitcode"] == -15, (d, r.stderr)
    assert sorted(e["detail"]["resource_id"] for e in emu.events(PROJECT, "sigwatch")) == [f"r{i}" for i in range(5)]
    # the top-level process is no multiprocessing child: its wakeup fd is left alone
    assert d["parent_wakeup_fd"] == -1, d


def test_an_apps_wakeup_fd_is_left_to_the_app(emu: Emulator) -> None:
    r = run([sys.executable, str(APPS / "sigwatch_script.py"), "spawn", "app_fd"], child_env(emu.url))
    (d,) = json_lines(r.stdout)
    assert d["wakeup_fd_is_apps"] is True and d["exitcode"] == 0, (d, r.stderr)



def test_the_at_fork_hook_of_a_process_that_never_watched_imports_nothing() -> None:
    """In a child, a module whose import another thread of the parent had begun stays locked for ever (its
    lock's owner is not in the child), so an import in an at-fork hook can hang every fork made while, say,
    ``asyncio`` loads. ``import ces_logging`` leaves ``signal`` unloaded, so the hook of a process that never
    watched must not import it."""
    import subprocess

    from .conftest import ROOT

    code = (
        "import sys\n"
        "from ces_logging import sigwatch\n"
        "sigwatch._after_fork_in_child()\n"
        "print('signal' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
