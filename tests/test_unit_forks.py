"""Each module renews its own state in a new process, through ``forks.py``, and the handlers start afresh
after every module's renewal (forks.py's order rule). End to end, the servers and start methods are
tests/test_processes.py's and tests/test_servers_green.py's (uWSGI: a fork that runs no at-fork hook)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any

import pytest

from ces_logging import CESHandler, forks, identity, lifecycle, mapping, notice, spool, throttle, worker
from ces_logging.emulator import Emulator

from .conftest import PROJECT, wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")


def state() -> dict[str, Any]:
    """What each module keeps for its process: the ids of its locks, its tokens, its tables."""
    return {
        "identity_lock": id(identity._lock),
        "notice_lock": id(notice._lock),
        "throttle_lock": id(throttle._registry_lock),
        "throttles": sorted(id(t) for t in throttle._registry.values()),
        "spool_token": spool._process_token,
        "times_lock": id(mapping.TIMES.lock),
        "times_plain_lock": id(mapping.TIMES_PLAIN.lock),
        "worker_threads": len(worker.WORKER_THREADS),
        "lifecycle_lock": id(lifecycle._registry_lock),
    }


def in_child(fn: Any) -> Any:
    """``fn()``'s JSON result, computed in a child made by ``os.fork`` (which runs the at-fork hooks)."""
    r, w = os.pipe()
    with warnings.catch_warnings():  # the parent has threads on purpose: the child must renew what they held
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "multi-threaded, use of fork()"
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.write(w, json.dumps(fn()).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return json.loads(out)


def test_every_module_renews_its_own_state_in_a_forked_child(emu: Emulator) -> None:
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, handle_sigterm=False)
    log = logging.getLogger("unit.forks")
    log.propagate = False
    log.addHandler(h)
    try:
        log.warning("one")  # a worker thread, a throttle: state for the child to renew
        assert h.flush(timeout=10)
        before = state()
        assert before["worker_threads"] >= 1 and before["throttles"]
        after = in_child(state)
    finally:
        log.removeHandler(h)
        h.close()
    renewed = {k for k in before if after[k] != before[k]}
    assert renewed == set(before), f"not renewed in the child: {sorted(set(before) - renewed)}"
    assert after["worker_threads"] == 0  # the child has none of the parent's threads


def fails() -> None:
    raise RuntimeError("a hook that fails")


def test_handlers_start_afresh_on_the_modules_new_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """The order rule: an ``after_modules`` hook runs after every module's, whenever it was registered."""
    monkeypatch.setattr(forks, "_module_hooks", [])
    monkeypatch.setattr(forks, "_object_hooks", [])
    ran: list[str] = []
    forks.on_new_process(lambda: ran.append("handlers"), after_modules=True)
    forks.on_new_process(lambda: ran.append("spool"))
    forks.on_new_process(fails)  # a failing hook never keeps the others from running
    forks.on_new_process(lambda: ran.append("identity"))
    monkeypatch.setattr(forks, "pid", -1)  # a pid the hooks never ran for: as uWSGI's fork looks
    assert forks.changed()
    assert ran == ["spool", "identity", "handlers"]
    assert forks.pid == os.getpid() and not forks.changed()


def test_a_forked_handler_starts_afresh_with_the_childs_identity(emu: Emulator) -> None:
    """The handler, renewed after the modules: fresh counters and a worker of its own in the child, whose
    event carries the child's identity (``host@pid.token``) in ``resource_name``."""
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, handle_sigterm=False, event_name="forkUnit")
    log = logging.getLogger("unit.forks.child")
    log.propagate = False
    log.addHandler(h)
    try:
        log.warning("parent")
        assert h.flush(timeout=10)

        def child() -> dict[str, Any]:
            log.warning("child")
            ok = h.flush(timeout=10)
            s = h.stats
            return {"ok": ok, "sent": s.sent, "received": s.received, "pid": os.getpid()}

        got = in_child(child)
        assert wait_for(lambda: len(emu.events(PROJECT, "forkUnit")) == 2)
        s = h.stats
        assert s.sent == s.received == 1 and s.queued == 0  # the parent's counters are the parent's
        assert s.sent + s.dropped + s.queued + s.folded == s.received
    finally:
        log.removeHandler(h)
        h.close()
    assert got["ok"] and got["sent"] == got["received"] == 1  # fresh counters in the child
    owners = {e["detail"]["content"]: e["detail"]["resource_name"] for e in emu.events(PROJECT, "forkUnit")}
    assert f"@{got['pid']}." in owners["child"] and f"@{os.getpid()}." in owners["parent"]
