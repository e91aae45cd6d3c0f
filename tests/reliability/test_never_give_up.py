"""Issue 11: the worker and the spool never give up: odd files, odd clocks, full disks, signals, races.

One test per case of the issue, over real HTTP against the emulator, with real processes where the case is about
processes (a crashed writer, fork, signals). Each test ends with the stats invariant
(``sent + dropped + queued == received``) and ``queued`` back at 0 after a flush with a deadline.

Spool files are planted next to batches a real handler wrote (so the tests follow the spool's naming and
layout, whatever subdirectory or name fields it uses): a writer process logs during an outage and exits
without draining, as a crashed process would.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ces_logging import CESHandler, HandlerStats, IAMPasswordTokenProvider
from ces_logging.emulator import Emulator

from ..conftest import PROJECT, run_python, wait_for

# --- helpers -------------------------------------------------------------------------------------------------


def settle(h: CESHandler, timeout: float = 30.0) -> HandlerStats:
    """Flush with a deadline, then the invariant and nothing left queued."""
    ok = h.flush(timeout=timeout)
    s = h.stats
    assert ok or s.dropped > 0, f"flush({timeout}) gave up: {s}"  # False only for records counted as dropped
    assert s.sent + s.dropped + s.queued == s.received, s
    assert s.queued == 0, s
    return s


def contents(emu: Emulator, name: str) -> list[str]:
    return sorted(e["detail"]["content"] for e in emu.events(PROJECT, name))


def spool_files(root: Path) -> list[Path]:
    """Every batch file under ``root`` (in any subdirectory the spool keeps), leased ones included."""
    return sorted(p for p in root.rglob("*") if p.is_file() and ".batch" in p.name)


def unleased(root: Path) -> list[Path]:
    return [p for p in spool_files(root) if p.name.endswith(".batch")]


WRITER = """
    import logging, os, time
    import ces_logging
    env = os.environ
    h = ces_logging.CESHandler(project_id=env["T_PROJECT"], endpoint=env["T_URL"], event_name=env["T_NAME"],
                               spool_dir=env["T_SPOOL"], batch_size=int(env["T_BATCH"]), flush_interval=0.05,
                               timeout=2)
    log = logging.getLogger("writer")
    log.propagate = False
    log.addHandler(h)
    n = int(env["T_N"])
    for i in range(n):
        log.error("%s %d", env["T_NAME"], i)
    deadline = time.monotonic() + 30
    while h.stats.spooled < n and time.monotonic() < deadline:
        time.sleep(0.02)
    print("SPOOLED", h.stats.spooled, flush=True)
    os._exit(0)  # a crash: no drain at exit, the batches stay on disk for the next process
"""


def spool_in_a_crashed_process(emu: Emulator, spool: Path, name: str, n: int, batch_size: int) -> list[Path]:
    """A real process logs ``n`` records (contents ``f"{name} {i}"``) during an outage and dies without
    draining; the service is back afterwards. Returns the batch files it left."""
    emu.add_fault(seconds=600.0, status=503)
    try:
        r = run_python(WRITER, timeout=60, T_PROJECT=PROJECT, T_URL=emu.url, T_NAME=name, T_SPOOL=str(spool),
                       T_BATCH=str(batch_size), T_N=str(n))  # fmt: skip
    finally:
        emu.clear_faults()
    assert r.returncode == 0 and r.stdout.split() == ["SPOOLED", str(n)], r.stdout + r.stderr
    files = spool_files(spool)
    assert files, "the writer left no batch file"
    return files


def sibling_name(template: Path, first_field: str | None = None) -> str:
    """A batch file name of the spool's own shape (the lease part, if any, cut off); with ``first_field`` the
    leading digits (the time, which orders files) replaced, so the file sorts first."""
    name = template.name.split(".lease-", 1)[0]
    if first_field is not None:
        name = re.sub(r"^\d+", first_field, name, count=1)
    return name


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)
    return p.pid


# --- 1. an unreadable or invalid spool file ------------------------------------------------------------------

BAD_FILES = {
    "item_without_time": b'[{"event_name": "x"}]',
    "list_of_int": b"[1]",
    "empty_list": b"[]",
    "garbage": b"\x00\xff\xfegarbage{[",
    "json_not_a_list": b'{"event_name": "x", "time": 1}',
}


@pytest.mark.parametrize("bad", list(BAD_FILES), ids=list(BAD_FILES))
def test_1_invalid_spool_file_is_dropped_and_the_rest_delivered(
    emu: Emulator, tmp_path: Path, capfd: pytest.CaptureFixture[str], bad: str
) -> None:
    """A bad batch file (sorted first, so it is met first) left by a crashed process: the next process drops it
    as ``error`` (counted once, said once), deletes it, delivers the good files behind it, and its worker lives
    on to deliver its own records."""
    spool = tmp_path / "spool"
    good = spool_in_a_crashed_process(emu, spool, "good", n=10, batch_size=5)
    bad_path = good[0].parent / sibling_name(good[0], first_field="0" * 12 + "1")
    bad_path.write_bytes(BAD_FILES[bad])
    assert spool_files(spool)[0] == bad_path  # the oldest: the first one any sender takes
    capfd.readouterr()

    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="own", spool_dir=str(spool), flush_interval=0.05)
    try:
        assert wait_for(lambda: h.stats.recovered_sent == 10, timeout=20), h.stats
        assert contents(emu, "good") == sorted(f"good {i}" for i in range(10))
        assert h.stats.recovered_dropped.get("error", 0) >= 1, h.stats
        assert wait_for(lambda: not spool_files(spool), timeout=10), spool_files(spool)  # the bad one too
        log = logging.getLogger(f"never-give-up-1-{bad}")
        log.propagate = False
        log.addHandler(h)
        log.error("after the bad file")
        s = settle(h)
        assert s.sent == 1 and contents(emu, "own") == ["after the bad file"]
        log.removeHandler(h)
    finally:
        h.close()
    said = [line for line in capfd.readouterr().err.splitlines() if "ces_logging" in line]
    assert len(said) == 1, said  # the drop is said, once


class WorkerBug(BaseException):
    """Stands for a bug that escapes every ``except Exception`` on the worker thread."""


class BuggyOnceTokens:
    """A token provider whose first call fails with a bug; later calls give the emulator's token."""

    def __init__(self, token: str) -> None:
        self.calls = 0
        self._token = token

    def token(self) -> str:
        self.calls += 1
        if self.calls == 1:
            raise WorkerBug("a bug on the worker thread")
        return self._token

    def invalidate(self) -> None:
        """Nothing cached."""


def test_1_a_worker_that_dies_of_a_bug_is_replaced(isolated_logger: logging.Logger) -> None:
    """The worker thread dies of a bug while sending (here a token provider that raises a BaseException once):
    the batch it held is counted as ``error``, and a new worker delivers every later record."""
    with Emulator(token="token-value-secret") as emu:
        prov = BuggyOnceTokens("token-value-secret")
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, token_provider=prov, event_name="replaced",
                       flush_interval=0.05)  # fmt: skip
        isolated_logger.addHandler(h)
        isolated_logger.error("meets the bug")
        assert wait_for(lambda: h.stats.dropped_by_reason.get("error", 0) == 1, timeout=10), h.stats
        for i in range(5):
            isolated_logger.error("after the bug %d", i)
        s = settle(h, timeout=20)
        assert s.sent == 5 and s.dropped_by_reason == {"error": 1}, s
        assert contents(emu, "replaced") == sorted(f"after the bug {i}" for i in range(5))
        assert emu.count(PROJECT) == s.sent


# --- 2. odd clocks -------------------------------------------------------------------------------------------


class ShiftCreated(logging.Filter):
    """Moves ``record.created`` by ``seconds``, as a clock that is off (or stepped) would have stamped it."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def filter(self, record: logging.LogRecord) -> bool:
        record.created += self.seconds
        return True


def test_2_a_record_from_tomorrow_does_not_block_its_key(emu: Emulator, isolated_logger: logging.Logger) -> None:
    """One record stamped a day ahead, then 20 ordinary errors of the same logger and level (the same key
    fields): all 21 are delivered. The future one is dealt with alone: stamped with the time it was built
    (the service would refuse its own) and counted as sanitised; it never pushes its key's times ahead."""
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="fromtomorrow", flush_interval=0.05)
    isolated_logger.addHandler(h)
    ahead = ShiftCreated(24 * 3600)
    h.addFilter(ahead)
    isolated_logger.error("stamped a day ahead")
    h.removeFilter(ahead)
    for i in range(20):
        isolated_logger.error("ordinary %d", i)
    s = settle(h)
    assert contents(emu, "fromtomorrow") == sorted([*(f"ordinary {i}" for i in range(20)), "stamped a day ahead"])
    assert (s.sent, s.dropped, s.sanitised) == (21, 0, 1), s
    assert emu.count(PROJECT) == 21
    times = [e["time"] for e in emu.events(PROJECT, "fromtomorrow")]
    assert max(times) - min(times) < 600_000  # nobody was pushed ahead by the outlier


def test_2_a_clock_stepping_back_does_not_block_its_key(emu: Emulator, isolated_logger: logging.Logger) -> None:
    """Five records, then the host clock steps back 10 minutes (NTP correcting it; the service's clock is
    right): records stamped 10 minutes earlier than the ones before, with the same key fields, are still
    delivered, all 20. (A filter stamps them: freezegun would also move ``time.monotonic`` under the worker,
    which a real clock step does not.)"""
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="clockback", flush_interval=0.05)
    isolated_logger.addHandler(h)
    for i in range(5):
        isolated_logger.error("before the step %d", i)
    assert h.flush(timeout=10)
    h.addFilter(ShiftCreated(-600))
    for i in range(20):
        isolated_logger.error("after the step %d", i)
    s = settle(h)
    assert s.sent == 25 and s.dropped == 0, s
    assert contents(emu, "clockback") == sorted(
        [f"before the step {i}" for i in range(5)] + [f"after the step {i}" for i in range(20)]
    )


# --- 3. no silent merges after the time table is cleared ------------------------------------------------------


def test_3_many_distinct_keys_then_the_first_again_nothing_merged(isolated_logger: logging.Logger) -> None:
    """20,000 records of one key (their times run ahead of the clock, one ms apart), 50,000 with distinct
    resource ids (enough to fill the table of remembered keys), then 2,000 of the first key again: the
    emulator, which applies the same-event rule, stores all 72,000."""
    with Emulator() as emu:
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="nomerge", flush_interval=0.05,
                       queue_size=100_000)  # fmt: skip
        isolated_logger.addHandler(h)
        for i in range(20_000):
            isolated_logger.error("first key %d", i)
        for i in range(50_000):
            isolated_logger.error("distinct %d", i, extra={"ces": {"resource_id": f"res-{i}"}})
        for i in range(2_000):
            isolated_logger.error("first key again %d", i)
        s = settle(h, timeout=180)
        assert (s.received, s.sent, s.dropped) == (72_000, 72_000, 0), s
        assert emu.count(PROJECT) == 72_000
        h.close()


# --- 4. a full disk ------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and CAP_SYS_ADMIN)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a 64 KiB tmpfs (needs root and CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


@pytest.mark.slow
def test_4_a_full_disk_strands_nothing(
    emu: Emulator, isolated_logger: logging.Logger, tiny_disk: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The spool on a 64 KiB disk, an outage, 3,000 records (about 750 KB of batches): the disk fills up.
    After recovery every record is delivered or counted and nothing is left on disk (flush(60) True). The
    spool is not given up for good: once space is free, the batches of a new outage go to disk again."""
    spool = tiny_disk / "spool"
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="fulldisk", spool_dir=str(spool),
                   flush_interval=0.05, timeout=2)  # fmt: skip
    try:
        isolated_logger.addHandler(h)
        emu.add_fault(seconds=600.0, status=503)
        for i in range(3_000):
            isolated_logger.error("record %04d %s", i, "x" * 100)
        assert wait_for(lambda: h.stats.spooled >= 100, timeout=20), h.stats
        # the worker meets the full disk (ENOSPC) while the service is still down: its line on stderr says so
        err = ""

        def said_disk_full() -> bool:
            nonlocal err
            err += capfd.readouterr().err
            return "No space left on device" in err and "trying the disk again" in err

        assert wait_for(said_disk_full, timeout=30), err
        emu.clear_faults()
        s = settle(h, timeout=60)
        assert s.received == 3_000 and emu.count(PROJECT) == s.sent, s
        assert s.sent > 0, s  # what was on disk and in memory went once the service was back
        # nothing stranded on disk (a file goes just after its items are counted: a moment's wait)
        assert wait_for(lambda: not spool_files(tiny_disk), timeout=10), spool_files(tiny_disk)
        # a new outage, with free space: its batches go to disk again
        emu.add_fault(seconds=600.0, status=503)
        for i in range(50):
            isolated_logger.error("second outage %d", i)
        assert wait_for(lambda: bool(spool_files(tiny_disk)), timeout=30), "the spool was given up for good"
        emu.clear_faults()
        s = settle(h, timeout=60)
        assert s.received == 3_050 and emu.count(PROJECT) == s.sent, s
        assert wait_for(lambda: not spool_files(tiny_disk), timeout=10), spool_files(tiny_disk)
    finally:
        emu.clear_faults()
        h.close(grace_period=0)


# --- 5. stale leases -----------------------------------------------------------------------------------------


def test_5_stale_lease_of_this_pid_and_of_a_dead_pid_are_reclaimed(emu: Emulator, tmp_path: Path) -> None:
    """Two batches leased by processes that are gone: one lease names this very pid (a container restarted
    with the same pid) with another owner token and is 20 minutes old; one names a dead pid. The handler
    takes both back and delivers them."""
    spool = tmp_path / "spool"
    files = spool_in_a_crashed_process(emu, spool, "leased", n=10, batch_size=5)
    assert len(files) >= 2, files
    same_pid, other = files[0], files[-1]
    a = same_pid.with_name(f"{sibling_name(same_pid)}.lease-{os.getpid()}-0badc0de")
    os.replace(same_pid, a)
    old = time.time() - 20 * 60
    os.utime(a, (old, old))
    b = other.with_name(f"{sibling_name(other)}.lease-{dead_pid()}-0badc0de")
    os.replace(other, b)

    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="own", spool_dir=str(spool), flush_interval=0.05)
    try:
        assert wait_for(lambda: h.stats.recovered_sent == 10, timeout=30), (h.stats, spool_files(spool))
        assert contents(emu, "leased") == sorted(f"leased {i}" for i in range(10))
        assert wait_for(lambda: not spool_files(spool), timeout=10), spool_files(spool)
        s = settle(h)
        assert s.received == 0 and not s.recovered_dropped, s
    finally:
        h.close()


# --- 6. shared spool accounting --------------------------------------------------------------------------------


def test_6_spooled_records_another_handler_delivered_are_not_queued(
    emu: Emulator, isolated_logger: logging.Logger, tmp_path: Path
) -> None:
    """Handler A's service is down, so its records wait in the spool; handler B, with the same spool_dir and a
    service that is up, delivers them. A's ``queued`` goes to 0 and A's flush(40) says True."""
    spool = tmp_path / "spool"
    with Emulator() as down:
        down.add_fault(seconds=600.0, status=503)
        a = CESHandler(project_id=PROJECT, endpoint=down.url, event_name="shared", spool_dir=str(spool),
                       batch_size=5, flush_interval=0.05, timeout=2)  # fmt: skip
        b: CESHandler | None = None
        try:
            isolated_logger.addHandler(a)
            for i in range(20):
                isolated_logger.error("shared %d", i)
            assert wait_for(lambda: a.stats.spooled == 20, timeout=20), a.stats
            b = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="other", spool_dir=str(spool),
                           flush_interval=0.05)  # fmt: skip
            assert wait_for(lambda: b is not None and b.stats.recovered_sent == 20, timeout=30), b.stats
            assert contents(emu, "shared") == sorted(f"shared {i}" for i in range(20))
            assert wait_for(lambda: not unleased(spool), timeout=10), unleased(spool)
            s = settle(a, timeout=40)
            assert s.received == 20 and s.spooled == 0, s
            assert down.count(PROJECT) == 0
            settle(b)
        finally:
            a.close(grace_period=0)
            if b is not None:
                b.close()


# --- 7. signals that fire inside emit --------------------------------------------------------------------------

SIGNALS = """
    import json, logging, signal, sys, time
    from ces_logging import CESHandler
    from ces_logging.emulator import Emulator

    kind = sys.argv[1] if len(sys.argv) > 1 else "{kind}"

    class AlarmTimeout(Exception):
        pass

    with Emulator() as emu:
        h = CESHandler(project_id="{project}", endpoint=emu.url, event_name="signals", flush_interval=0.05,
                       queue_size=1_000_000)
        log = logging.getLogger("signals")
        log.propagate = False
        log.addHandler(h)
        fired = caught = 0
        armed = False

        def on_alarm(signum, frame):
            global fired, armed
            if kind == "logs":
                fired += 1
                log.error("from the signal handler %d", fired)
            elif armed:  # one-shot, and only while the loop is inside a logging call: the loop catches it
                armed = False
                fired += 1
                raise AlarmTimeout()

        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
        deadline = time.monotonic() + 5
        i = 0
        while i < 30_000 and time.monotonic() < deadline:
            try:
                armed = True
                log.error("main loop %d", i)
                armed = False
            except AlarmTimeout:
                caught += 1
            i += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        ok = h.flush(timeout=30)
        s = h.stats
        out = dict(kind=kind, loops=i, fired=fired, caught=caught, flushed=ok, received=s.received, sent=s.sent,
                   dropped=s.dropped, queued=s.queued, reasons=s.dropped_by_reason, stored=emu.count("{project}"))
        print("RESULT", json.dumps(out), flush=True)
        h.close()
"""


@pytest.mark.parametrize("kind", ["logs", "raises"])
def test_7_a_signal_handler_firing_inside_emit(kind: str) -> None:
    """A SIGALRM every 0.3 ms while the main thread logs in a loop, in a process of its own (a deadlock there
    must fail the test, not hang it). ``logs``: the signal handler logs a record itself, so emit runs inside
    emit. ``raises``: it raises a timeout exception (the ``signal.alarm`` pattern) that the loop catches.
    Afterwards flush says True, ``queued`` is 0, the invariant holds and the emulator stored what ``sent``
    says. Where a signal lands depends on where the interpreter checks for them (on CPython 3.11, inside emit,
    only after a call returns); the test below puts the same effect before every bytecode, one at a time."""
    try:
        r = run_python(SIGNALS.format(kind=kind, project=PROJECT), timeout=90)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the process hung (a deadlock inside emit?): {e.stderr!r:.2000}")
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout + r.stderr[-3000:]
    res: dict[str, Any] = json.loads(lines[0].split(" ", 1)[1])
    text = json.dumps(res)
    assert res["fired"] > 0, text  # the signals did come, the test did test something
    assert res["flushed"], text
    assert res["queued"] == 0, text
    assert res["sent"] + res["dropped"] + res["queued"] == res["received"], text
    assert res["stored"] == res["sent"], text
    if kind == "logs":
        assert res["received"] == res["loops"] + res["fired"], text


INJECT = """
    import json, linecache, logging, os, sys
    import ces_logging
    from ces_logging import CESHandler
    from ces_logging.emulator import Emulator

    kind = "{kind}"
    log_now = None  # the logger of the call under way (what the injected record is logged to)
    PKG = os.path.dirname(ces_logging.__file__)

    class Injected(Exception):
        pass

    def inject(state, k, where):
        # before the k-th bytecode: a signal handler's effect, an exception or a record logged from inside
        state["n"] += 1
        if state["n"] == k:
            state["where"] = where()
            if kind == "raises":
                raise Injected()
            log_now.error("logged from inside, at bytecode %d", k)

    if sys.version_info < (3, 12):

        def one_call(log, k):
            # One log call, with a trace function's opcode events in every frame of the package.
            global log_now
            log_now, state = log, dict(n=0, where=None)

            def local(frame, event, arg):
                if event == "opcode" and state["where"] is None:
                    where = lambda: f"{{os.path.relpath(frame.f_code.co_filename, PKG)}}:{{frame.f_lineno}}"
                    inject(state, k, where)
                return local

            def calls(frame, event, arg):
                if not frame.f_code.co_filename.startswith(PKG):
                    return None
                frame.f_trace_lines = False
                frame.f_trace_opcodes = True
                return local

            sys.settrace(calls)
            try:
                log.error("call %d", k)
            except Injected:
                pass
            finally:
                sys.settrace(None)
            return state

    else:
        # From 3.12 a trace function's opcode events do not reach every frame of the package; sys.monitoring's
        # INSTRUCTION event, set on each of the package's code objects, comes before every bytecode of them.
        # It is process-wide (settrace was per thread): the callback acts on the app's thread only.
        import threading, types

        M = sys.monitoring
        TOOL = next(i for i in range(6) if M.get_tool(i) is None)
        M.use_tool_id(TOOL, "inject")
        codes_of = {{}}

        def package_codes():
            mods = sorted(n for n in sys.modules if n == "ces_logging" or n.startswith("ces_logging."))
            key = tuple(mods)
            if key not in codes_of:
                found, seen = set(), set()

                def walk(obj):
                    if id(obj) in seen:
                        return
                    seen.add(id(obj))
                    if isinstance(obj, types.CodeType):
                        if obj.co_filename.startswith(PKG):
                            found.add(obj)
                            for c in obj.co_consts:
                                walk(c)
                    elif isinstance(obj, (staticmethod, classmethod)):
                        walk(obj.__func__)
                    elif isinstance(obj, property):
                        for f in (obj.fget, obj.fset, obj.fdel):
                            walk(f)
                    elif isinstance(obj, types.FunctionType):
                        walk(obj.__code__)
                    elif isinstance(obj, type) and obj.__module__.startswith("ces_logging"):
                        for v in vars(obj).values():
                            walk(v)

                for n in mods:
                    for v in vars(sys.modules[n]).values():
                        walk(v)
                codes_of[key] = found
            return codes_of[key]

        def one_call(log, k):
            global log_now
            log_now, state = log, dict(n=0, where=None)
            app = threading.get_ident()

            def on_instruction(code, offset):
                if state["where"] is None and threading.get_ident() == app:
                    def where():
                        line = next((ln for a, b, ln in code.co_lines() if a <= offset < b), None)
                        return f"{{os.path.relpath(code.co_filename, PKG)}}:{{line}}"

                    inject(state, k, where)

            codes = package_codes()
            M.register_callback(TOOL, M.events.INSTRUCTION, on_instruction)
            for c in codes:
                M.set_local_events(TOOL, c, M.events.INSTRUCTION)
            try:
                log.error("call %d", k)
            except Injected:
                pass
            finally:
                for c in codes:
                    M.set_local_events(TOOL, c, 0)
                M.register_callback(TOOL, M.events.INSTRUCTION, None)
            return state

    def problem(h, state):
        # None when, after the injection, everything is delivered or counted; else where it went wrong
        if state["where"] is None or (h.flush(timeout=3) and h.stats.queued == 0):
            return None
        path, _, no = state["where"].partition(":")
        code = linecache.getline(os.path.join(PKG, path), int(no)).strip()
        return f"{{state['where']}} {{code}} -> {{h.stats}}"

    def new_handler(emu, name):
        h = CESHandler(project_id="{project}", endpoint=emu.url, event_name="inject", flush_interval=0.05)
        log = logging.getLogger(name)
        log.propagate = False
        log.addHandler(h)
        return h, log

    # One handler per bytecode, each keeping its connections: more than the emulator's default cap.
    with Emulator(max_connections=4096) as emu:
        bad = []
        # the first record of a handler (the worker starts), each bytecode in turn, a fresh handler each time
        first = []
        h, log = new_handler(emu, "inject.first")
        first_points = one_call(log, 0)["n"]
        first.append(h)
        for k in range(1, first_points + 6):
            h, log = new_handler(emu, f"inject.first.{{k}}")
            first.append(h)
            if len(bad) < 3 and (why := problem(h, one_call(log, k))):
                bad.append("first record: " + why)
        # a handler whose worker runs, each bytecode in turn, twice
        h, log = new_handler(emu, "inject")
        log.error("warm-up: the worker runs")
        assert h.flush(timeout=10)
        points = one_call(log, 0)["n"]
        for k in [*range(1, points + 6)] * 2:
            if len(bad) < 3 and (why := problem(h, one_call(log, k))):
                bad.append(why)
        ok = h.flush(timeout=10)
        s = h.stats
        others = []
        for h2 in first:
            ok = h2.flush(timeout=5) and ok
            others.append(h2.stats)
            h2.close()
        ok = all(x.sent + x.dropped + x.queued == x.received and x.queued == 0 for x in others) and ok
        out = dict(points=points, first_points=first_points, bad=bad, flushed=ok, received=s.received, sent=s.sent,
                   dropped=s.dropped, queued=s.queued, reasons=s.dropped_by_reason,
                   others_sent=sum(x.sent for x in others), stored=emu.count("{project}"))
        print("RESULT", json.dumps(out), flush=True)
        h.close()
"""


@pytest.mark.parametrize("kind", ["logs", "raises"])
def test_7_a_signal_at_any_bytecode_of_emit(kind: str) -> None:
    """The deterministic form of the test above. A signal handler runs between two bytecodes of the app's
    thread; at which ones depends on the Python version (3.11: after calls, at loops, at function entry). Here
    its effect is injected (with a trace function's opcode events up to 3.11, sys.monitoring's INSTRUCTION
    events from 3.12) before each bytecode the app's thread runs inside the
    package during one log call, one at a time: an exception the app catches (``raises``) or a record logged
    from inside (``logs``); in a handler's first record (the worker starts: a fresh handler each time) and in
    later ones. After each, a flush says True with ``queued`` 0; at the end the invariant holds and the
    emulator stored what ``sent`` says. (Every bytecode is more than any one version's set of check points,
    and so covers them all: a design that commits a record with one operation, the append, holds here.)"""
    try:
        r = run_python(INJECT.format(kind=kind, project=PROJECT), timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the process hung (a deadlock inside emit?): {e.stderr!r:.2000}")
    found = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and found, r.stdout + r.stderr[-3000:]
    res: dict[str, Any] = json.loads(found[0].split(" ", 1)[1])
    text = json.dumps(res)
    assert res["points"] >= 10 and res["first_points"] >= 10, text  # the injection did reach the package's code
    assert not res["bad"], res["bad"]  # after an injection at these places, records were left queued
    assert res["flushed"] and res["queued"] == 0, text
    assert res["sent"] + res["dropped"] + res["queued"] == res["received"], text
    assert res["stored"] == res["sent"] + res["others_sent"], text


# --- 8. close() racing the first emit -------------------------------------------------------------------------


def test_8_close_racing_the_first_emit(emu: Emulator) -> None:
    """300 fresh handlers, each with its first record emitted on one thread while another closes it: never an
    exception (in either thread, or through ``handleError``), and every record delivered or counted."""
    errors: list[BaseException | None] = []
    sent = 0
    for run in range(300):
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="race", flush_interval=0.01,
                       grace_period=2)  # fmt: skip

        def handle_error(record: logging.LogRecord) -> None:
            errors.append(sys.exc_info()[1])

        h.handleError = handle_error  # type: ignore[method-assign]
        record = logging.makeLogRecord(
            {"name": "race", "levelno": logging.ERROR, "levelname": "ERROR", "msg": f"run {run}"}
        )
        barrier = threading.Barrier(2)

        def emit(h: CESHandler = h, record: logging.LogRecord = record, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(10)
                h.handle(record)
            except BaseException as e:
                errors.append(e)

        def close(h: CESHandler = h, barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(10)
                h.close()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=emit), threading.Thread(target=close)]
        if run % 2:
            threads.reverse()
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert not any(t.is_alive() for t in threads), f"run {run}: a thread hung"
        assert not errors, f"run {run}: {errors!r}"
        s = settle(h, timeout=10)
        assert s.received == 1, s
        sent += s.sent
    assert emu.count(PROJECT) == sent


# --- 9. fork while the worker waits on a slow token fetch ---------------------------------------------------------

TOKEN = "token-value-secret"


class SlowIAM(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _SlowIAMHandler)
        self.delay = delay
        self.arrived = threading.Event()
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _SlowIAMHandler(BaseHTTPRequestHandler):
    """IAM's ``POST /v3/auth/tokens`` that takes ``delay`` seconds to answer with a token the emulator takes."""

    protocol_version = "HTTP/1.1"
    server: SlowIAM

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests += 1
        self.server.arrived.set()
        time.sleep(self.server.delay)
        expires = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = json.dumps({"token": {"expires_at": expires}}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Subject-Token", TOKEN)
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_9_fork_while_the_worker_waits_on_a_slow_token_fetch(isolated_logger: logging.Logger) -> None:
    """The parent's worker is inside a token fetch that takes 2 s (holding the provider's lock) when the
    process forks: the child's own record is delivered (flush(8) True in the child), and the parent's too."""
    iam = SlowIAM(delay=2.0)
    iam_thread = threading.Thread(target=iam.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    iam_thread.start()
    try:
        with Emulator(token=TOKEN) as emu:
            prov = IAMPasswordTokenProvider("u", "pa55word-secret", "d", region="x", iam_endpoint=iam.url)
            h = CESHandler(project_id=PROJECT, endpoint=emu.url, token_provider=prov, event_name="forkiam",
                           flush_interval=0.05)  # fmt: skip
            isolated_logger.addHandler(h)
            isolated_logger.error("parent")
            assert iam.arrived.wait(10), "the worker never asked for a token"
            time.sleep(0.2)  # well inside the 2 s fetch
            pid = os.fork()
            if pid == 0:  # the child: log, flush, leave at once whatever happens
                code = 1
                try:
                    isolated_logger.error("child")
                    ok = h.flush(timeout=8)
                    s = h.stats
                    code = 0 if ok and (s.received, s.sent, s.queued) == (1, 1, 0) else 3
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 30
            status = None
            while time.monotonic() < deadline:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                    break
                time.sleep(0.05)
            if status is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the child hung for 30 s")
            assert os.waitstatus_to_exitcode(status) == 0, "in the child, flush(8) did not deliver its record"
            s = settle(h, timeout=15)
            assert s.sent == 1, s
            assert contents(emu, "forkiam") == ["child", "parent"]
            h.close()
    finally:
        iam.shutdown()
        iam.server_close()


# --- 11. an existing spool_dir keeps its mode -------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o755, 0o777], ids=["0755", "0777"])
def test_11_existing_spool_dir_keeps_its_mode(
    emu: Emulator, isolated_logger: logging.Logger, tmp_path: Path, mode: int
) -> None:
    """A directory that exists (shared, say /var/spool/app) given as spool_dir: its mode is never changed.
    The handler keeps its batches private (files 0600, in directories 0700 of its own), and never directly
    in a directory others can write to: one that is group- or world-writable gets a private 0700 subdirectory,
    as the README promises (a ConfigError there would refuse a set-up the README says works)."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, mode)
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="mode", spool_dir=str(d),
                   flush_interval=0.05, timeout=2)  # fmt: skip
    try:
        assert d.stat().st_mode & 0o777 == mode, oct(d.stat().st_mode)
        isolated_logger.addHandler(h)
        emu.add_fault(seconds=600.0, status=503)
        for i in range(10):
            isolated_logger.error("mode %d", i)
        assert wait_for(lambda: h.stats.spooled == 10, timeout=20), h.stats
        files = spool_files(d)
        assert files
        for f in files:
            assert f.stat().st_mode & 0o777 == 0o600, (f, oct(f.stat().st_mode))
            parent = f.parent
            while parent != d:
                assert parent.stat().st_mode & 0o777 == 0o700, (parent, oct(parent.stat().st_mode))
                parent = parent.parent
            if mode & 0o022:
                assert f.parent != d, "batches directly in a directory others can write to"
        assert d.stat().st_mode & 0o777 == mode, oct(d.stat().st_mode)
        emu.clear_faults()
        s = settle(h)
        assert s.sent == 10 and emu.count(PROJECT) == 10, s
        assert d.stat().st_mode & 0o777 == mode, oct(d.stat().st_mode)
    finally:
        emu.clear_faults()
        h.close()
