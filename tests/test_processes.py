"""Every record arrives, however the app runs and however it stops: real processes, real servers.

Each test runs the app in its own process(es) against the emulator on 127.0.0.1 and counts what the emulator
stored. The apps and scripts are in tests/apps/; they set ``flush_interval=60``, so nothing leaves a process
before it stops, and what is stored was delivered by the way the process ended. Counts are by event name; the
emulator applies Cloud Eye's same-event rule, so records that the service would merge are counted once.

Exit-time bounds below are correctness bounds (exit must not wait for the 30 s request timeout), with
seconds of slack for a loaded machine; speed is measured in benchmarks/, not here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import multiprocessing
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import requests

from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import AK, PROJECT, ROOT, wait_for

APPS = Path(__file__).resolve().parent / "apps"
# What an exit or a SIGTERM's drain may take beyond its grace period and still pass: the child's interpreter
# tearing down (atexit, threads, modules) on a loaded machine (2 cores, other runs beside this one). What a
# wrong exit would wait for is far beyond grace + this: the 30 s request timeout, the 60 s hang, or for ever.
EXIT_SLACK_S = 4.0
START_METHODS = [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


# --- helpers --------------------------------------------------------------------------------------------------


def child_env(emu_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "CES_ENDPOINT": emu_url, "CES_PROJECT_ID": PROJECT, **extra}


def run(args: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` in a session of its own; one still running at ``timeout`` fails the test with where
    every one of its processes was (faulthandler's dump on SIGABRT, sent to the whole group), not a bare
    TimeoutExpired: a hang must say where it hung."""
    p = subprocess.Popen(args, cwd=ROOT, env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(p.pid, signal.SIGABRT)
        try:
            out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        pytest.fail(f"{args[1:]} still running after {timeout} s; its processes' threads:\n{err[-8000:]}")
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def run_code(code: str, emu_url: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", textwrap.dedent(code)], child_env(emu_url, **extra), timeout)


def stored(emu: Emulator, name: str) -> int:
    return len(emu.events(PROJECT, name))


def check_stats(s: dict[str, Any]) -> None:
    """The invariant, checked on the stats a child printed as JSON."""
    assert s["sent"] + s["dropped"] + s["queued"] == s["received"], s
    assert s["queued"] == 0, s


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Child:
    """A script in its own process group, its output readable line by line with deadlines."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, bufsize=0
        )  # unbuffered: ``line`` reads byte by byte, so ``communicate`` later misses nothing

    def line(self, deadline_s: float) -> str:
        """The next line of stdout, or "" when none comes within the deadline (or the process ended)."""
        out = self.proc.stdout
        assert out is not None
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            ready, _, _ = select.select([out], [], [], 0.1)
            if ready:
                return out.readline().decode(errors="replace").strip()
            if self.proc.poll() is not None:
                break
        return ""

    def wait(self, timeout: float) -> tuple[int | None, str, str]:
        """(exit status or None when still running after ``timeout``, the rest of stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate(timeout=10)
            return None, out.decode(errors="replace"), err.decode(errors="replace")
        return self.proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextmanager
def child(args: list[str], env: dict[str, str]) -> Iterator[Child]:
    c = Child(args, env)
    try:
        yield c
    finally:
        c.kill()
        c.proc.wait(10)
        for f in (c.proc.stdout, c.proc.stderr):
            if f is not None:
                f.close()


# --- 1. per-process identity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", START_METHODS)
def test_identical_records_from_several_processes_all_stored(emu: Emulator, method: str) -> None:
    """A parent and 3 children (fork: the children inherit a handler the parent already used) each log 40
    records whose every event field, the millisecond time included, is the same in each process: without
    something per process in the key, Cloud Eye merges them (40 or 80 stored of 160). All 160 must be stored,
    each process's events under a resource_name of its own."""
    k, m = 3, 40
    r = run(
        [sys.executable, str(APPS / "same_key.py"), method, str(k), str(m)],
        child_env(emu.url, SAME_KEY_T=repr(time.time())),
    )
    assert r.returncode == 0, r.stderr
    lines = json_lines(r.stdout)
    assert len(lines) == k + 1 and len({d["pid"] for d in lines}) == k + 1, r.stdout
    for d in lines:
        assert d["flushed"] is True and d["stats"]["sent"] == m, d
        check_stats(d["stats"])
    events = emu.events(PROJECT, "sameKey")
    assert len(events) == (k + 1) * m
    names = {e["detail"].get("resource_name") for e in events}
    assert len(names) == k + 1 and None not in names


def test_own_resource_name_keeps_the_process_identity(emu: Emulator) -> None:
    """``resource_name`` set by the user: it stays (first in the field) and each process is still told apart."""
    k, m = 2, 30
    r = run(
        [sys.executable, str(APPS / "same_key.py"), "fork" if "fork" in START_METHODS else "spawn", str(k), str(m)],
        child_env(emu.url, SAME_KEY_T=repr(time.time()), SAME_KEY_OPTIONS='{"resource_name": "web-1"}'),
    )
    assert r.returncode == 0, r.stderr
    events = emu.events(PROJECT, "sameKey")
    assert len(events) == (k + 1) * m
    names = {e["detail"]["resource_name"] for e in events}
    assert len(names) == k + 1 and all(n.startswith("web-1") for n in names), names


def test_process_identity_can_be_turned_off(emu: Emulator) -> None:
    """``process_identity=False``: resource_name is exactly what the user set, nothing appended (so identical
    records from several processes are merged by the service, as documented)."""
    k, m = 2, 30
    r = run(
        [sys.executable, str(APPS / "same_key.py"), "spawn", str(k), str(m)],
        child_env(
            emu.url,
            SAME_KEY_T=repr(time.time()),
            SAME_KEY_OPTIONS='{"resource_name": "web-1", "process_identity": false}',
        ),
    )
    assert r.returncode == 0, r.stderr
    events = emu.events(PROJECT, "sameKey")
    assert {e["detail"]["resource_name"] for e in events} == {"web-1"}
    assert len(events) == m  # spawn: every process has the same times T..T+m-1, so each record merged


# --- 2. SIGTERM -----------------------------------------------------------------------------------------------


def _sigterm_child(emu: Emulator, mode: str, n: int, **options: Any) -> AbstractContextManager[Child]:
    return child(
        [sys.executable, str(APPS / "sigterm_script.py"), mode, str(n), json.dumps(options)], child_env(emu.url)
    )


def test_sigterm_drains_the_queue_then_dies_by_sigterm(emu: Emulator) -> None:
    """A script with no signal handler of its own, 50 records queued, is sent SIGTERM: all 50 are delivered and
    the process still dies by SIGTERM (exit status -15, what supervisors expect)."""
    with _sigterm_child(emu, "plain", 50) as c:
        assert c.line(30) == "READY"
        c.proc.send_signal(signal.SIGTERM)
        rc, _, err = c.wait(5 + EXIT_SLACK_S)  # grace_period (default 5 s); 50 records need far less
    assert rc == -signal.SIGTERM, err
    assert stored(emu, "sigterm") == 50, err


def test_sigterm_chains_to_the_apps_own_handler(emu: Emulator) -> None:
    """The app installed a SIGTERM handler before the CESHandler was made: it still runs (the app shuts down
    its own way, exit status 0), and every record, the one logged after the signal too, is delivered."""
    with _sigterm_child(emu, "app_handler", 50) as c:
        assert c.line(30) == "READY"
        c.proc.send_signal(signal.SIGTERM)
        rc, out, err = c.wait(30)
    assert rc == 0, err
    assert "APP HANDLER RAN" in out
    (d,) = json_lines(out)
    assert d["flushed"] is True
    check_stats(d["stats"])
    assert d["stats"]["sent"] == 51
    assert stored(emu, "sigterm") == 51


def test_sigterm_handling_can_be_turned_off(emu: Emulator) -> None:
    """``handle_sigterm=False``: the default disposition is left alone, so the process dies at once by SIGTERM
    and the 50 queued records (flush_interval 60 s, below a batch) are never sent."""
    with _sigterm_child(emu, "plain", 50, handle_sigterm=False) as c:
        assert c.line(30) == "READY"
        c.proc.send_signal(signal.SIGTERM)
        rc, _, err = c.wait(EXIT_SLACK_S)  # dies at once: no grace period at all
    assert rc == -signal.SIGTERM, err
    assert stored(emu, "sigterm") == 0


def test_sigterm_with_a_hung_service_is_bounded_by_the_grace_period(emu: Emulator) -> None:
    """SIGTERM while the service hangs (timeout=30, grace_period=2): the process dies by SIGTERM within the
    grace period plus slack, not after the 30 s request timeout, and says on stderr what it lost."""
    emu.add_fault(seconds=120.0, delay=60.0, status=503)
    with _sigterm_child(emu, "plain", 50, timeout=30, grace_period=2) as c:
        assert c.line(30) == "READY"
        c.proc.send_signal(signal.SIGTERM)
        rc, _, err = c.wait(2 + EXIT_SLACK_S)
    assert rc == -signal.SIGTERM, f"still running {2 + EXIT_SLACK_S} s after SIGTERM with grace_period=2: {err}"
    assert "ces_logging" in err and re.search(r"\b50\b", err), err


def test_handler_made_off_the_main_thread_works(emu: Emulator) -> None:
    """Signal handlers can only be installed from the main thread: a handler made on another thread must still
    work (no error, nothing on stderr) and deliver."""
    r = run_code(
        """
        import logging, threading, ces_logging
        made = []
        t = threading.Thread(target=lambda: made.append(ces_logging.configure(event_name="offMain")))
        t.start(); t.join()
        logging.getLogger("x").error("from a handler made on a thread")
        assert made[0].flush(timeout=10)
        """,
        emu.url,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert stored(emu, "offMain") == 1


# --- 3. multiprocessing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["with", "close_join", "process"])
@pytest.mark.parametrize(
    ("method", "late"), [*((m, False) for m in START_METHODS), *(("fork", True),) * ("fork" in START_METHODS)]
)
def test_multiprocessing_workers_deliver(emu: Emulator, method: str, late: bool, mode: str) -> None:
    """4 workers, 200 tasks, each logging one warning with a resource id of its own: all 200 are stored,
    whether the pool is left by ``with`` (terminate: SIGTERM to the workers), ``close(); join()`` (workers end
    by ``os._exit`` under fork, no atexit), or plain ``Process``es that return. ``late``: the app imports
    multiprocessing only after the handler is built (building one does not load it), and forks its workers."""
    n = 200
    argv = [sys.executable, str(APPS / "pool_script.py"), method, mode, str(n), *(["late"] if late else [])]
    r = run(argv, child_env(emu.url))
    assert r.returncode == 0, r.stderr
    (d,) = json_lines(r.stdout)
    assert d["mp_at_configure"] is not late, d
    assert d["workers"] == 4, d  # the tasks did spread over the four workers
    if mode == "process":
        assert d["exitcodes"] == [0, 0, 0, 0]
    events = emu.events(PROJECT, "poolTask")
    ids = sorted(e["detail"]["resource_id"] for e in events)
    assert len(ids) == n and ids == sorted(f"task-{i}" for i in range(n))
    assert "Traceback" not in r.stderr, r.stderr


# --- 4. exit is bounded; retries go on within the grace period ------------------------------------------------

LATE_STATS = """
    import atexit, dataclasses, json
    handlers = []
    # registered before logging and ces_logging are imported, so it runs last (atexit is LIFO): after
    # ces_logging's exit drain and logging.shutdown(), the stats are the final ones
    atexit.register(lambda: print(json.dumps(dataclasses.asdict(handlers[0].stats)), flush=True))
    import logging, ces_logging
"""


def _hung_exit(emu_url: str) -> AbstractContextManager[Child]:
    code = (
        LATE_STATS
        + """
    handlers.append(ces_logging.configure(event_name="hung", timeout=30, grace_period=2))
    for i in range(1000):
        logging.getLogger("s").error("record %d", i)
    print("LOGGED", flush=True)
    """
    )
    return child([sys.executable, "-c", textwrap.dedent(code)], child_env(emu_url))


def _bounded_exit(ctx: AbstractContextManager[Child]) -> tuple[int | None, str, str]:
    with ctx as c:
        assert c.line(30) == "LOGGED"
        return c.wait(2 + EXIT_SLACK_S)  # grace_period 2 s; the request timeout is 30 s


def test_exit_with_a_hanging_service_is_bounded(emu: Emulator) -> None:
    """The service accepts requests and never answers (timeout=30, grace_period=2), 1,000 records queued: the
    script ends within the grace period plus slack, counts every record and says the loss on stderr."""
    emu.add_fault(seconds=120.0, delay=60.0, status=503)
    try:
        rc, out, err = _bounded_exit(_hung_exit(emu.url))
    finally:
        emu.clear_faults()
    assert rc == 0, f"exit not bounded by grace_period (status {rc}): {err}"
    (s,) = json_lines(out)
    check_stats(s)
    assert s["received"] == 1000 and s["sent"] == 0
    assert "ces_logging" in err and re.search(r"\b1000\b", err), err


def test_exit_with_a_socket_that_never_answers_is_bounded(emu: Emulator) -> None:
    """The same with a bare TCP listener that accepts connections and never reads or answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        rc, out, err = _bounded_exit(_hung_exit(url))
    assert rc == 0, f"exit not bounded by grace_period (status {rc}): {err}"
    (s,) = json_lines(out)
    check_stats(s)
    assert s["received"] == 1000 and s["sent"] == 0
    assert "ces_logging" in err and re.search(r"\b1000\b", err), err


def test_logging_shutdown_returns_when_connections_are_refused() -> None:
    """Nothing listens on the endpoint's port (every connection refused at once, retries back off):
    ``logging.shutdown()`` returns within the grace period plus slack, with every record accounted for."""
    url = f"http://127.0.0.1:{free_port()}"
    code = """
        import dataclasses, json, logging, ces_logging
        h = ces_logging.configure(event_name="refused", timeout=30, grace_period=2)
        for i in range(20):
            logging.getLogger("s").error("record %d", i)
        print("LOGGED", flush=True)
        logging.shutdown()
        print(json.dumps(dataclasses.asdict(h.stats)), flush=True)
    """
    with child([sys.executable, "-c", textwrap.dedent(code)], child_env(url)) as c:
        assert c.line(30) == "LOGGED"
        rc, out, err = c.wait(2 + EXIT_SLACK_S)
    assert rc == 0, f"logging.shutdown() did not return within the grace period (status {rc}): {err}"
    (s,) = json_lines(out)
    check_stats(s)
    assert s["received"] == 20 and s["sent"] == 0
    assert "ces_logging" in err and re.search(r"\b20\b", err), err


def test_a_burst_of_503_at_exit_is_retried_within_the_grace_period(emu: Emulator) -> None:
    """The service answers 503 for 2 s from the moment the script ends; the default grace period (5 s) is used
    for retries, and nothing is lost."""
    code = (
        LATE_STATS
        + f"""
    handlers.append(ces_logging.configure(event_name="blip"))
    for i in range(30):
        logging.getLogger("s").error("record %d", i)
    import urllib.request
    req = urllib.request.Request("{emu.url}/_emulator/faults", method="POST",
                                 data=json.dumps({{"seconds": 2.0, "status": 503}}).encode())
    urllib.request.urlopen(req, timeout=5).read()
    """
    )
    r = run_code(code, emu.url)
    assert r.returncode == 0, r.stderr
    (s,) = json_lines(r.stdout)
    check_stats(s)
    assert (s["received"], s["sent"], s["dropped"]) == (30, 30, 0), s
    assert emu.stats()["faults_served"] >= 1  # the burst did meet the exit drain
    assert stored(emu, "blip") == 30 and r.stderr == "", r.stderr


def test_record_logged_after_the_exit_drain_is_delivered(emu: Emulator) -> None:
    """An atexit hook that runs after ces_logging's drain (registered before the import) logs one more record:
    with the service healthy there is time, so it is delivered, not dropped as ``closed`` in silence."""
    code = """
        import atexit, logging
        atexit.register(lambda: logging.getLogger("late").error("logged after the drain"))
        import ces_logging
        ces_logging.configure(event_name="late")
        for i in range(3):
            logging.getLogger("s").error("record %d", i)
    """
    r = run_code(code, emu.url)
    assert r.returncode == 0, r.stderr
    contents = sorted(e["detail"]["content"] for e in emu.events(PROJECT, "late"))
    assert contents == ["logged after the drain", "record 0", "record 1", "record 2"], r.stderr


def test_record_logged_after_the_exit_drain_is_counted_when_it_cannot_go(emu: Emulator) -> None:
    """The same late record with the service hanging: it cannot be delivered, so it is counted and stderr
    says so, and the exit stays bounded."""
    emu.add_fault(seconds=120.0, delay=60.0, status=503)
    code = """
        import atexit, logging
        atexit.register(lambda: logging.getLogger("late").error("logged after the drain"))
        import ces_logging
        ces_logging.configure(event_name="lateLost", timeout=30, grace_period=1)
        print("LOGGED", flush=True)
    """
    try:
        with child([sys.executable, "-c", textwrap.dedent(code)], child_env(emu.url)) as c:
            assert c.line(30) == "LOGGED"
            rc, _, err = c.wait(1 + EXIT_SLACK_S)
    finally:
        emu.clear_faults()
    assert rc == 0, f"exit not bounded (status {rc}): {err}"
    assert "ces_logging" in err and re.search(r"\b1 event", err), err


# --- 5. nothing dropped without a person seeing it ------------------------------------------------------------


def test_refused_credentials_reach_stderr_when_the_handler_is_roots_only_handler(emu_aksk: Emulator) -> None:
    """A wrong SK, the CESHandler the root logger's only handler: every record is refused; ``flush()`` says
    False and the handler's warning is on stderr (without the secret)."""
    code = f"""
        import dataclasses, json, logging, ces_logging
        h = ces_logging.configure(event_name="badKey", ak="{AK}", sk="wrong-secret-xyz", flush_interval=0.05)
        assert logging.getLogger().handlers == [h]
        logging.getLogger("s").error("refused")
        ok = h.flush(timeout=20)
        print(json.dumps({{"flushed": ok, "stats": dataclasses.asdict(h.stats)}}), flush=True)
    """
    r = run_code(code, emu_aksk.url)
    assert r.returncode == 0, r.stderr
    (d,) = json_lines(r.stdout)
    assert d["flushed"] is False
    s = d["stats"]
    check_stats(s)
    assert s["dropped_by_reason"].get("auth") == 1
    assert "ces_logging" in r.stderr and "credentials" in r.stderr, r.stderr
    assert "wrong-secret-xyz" not in r.stdout + r.stderr


def test_flush_is_false_when_records_were_dropped(emu: Emulator, isolated_logger: logging.Logger) -> None:
    """``flush()`` is True only when every record logged before it was delivered: with a queue of 5 and 20
    records logged at once, some are dropped (queue_full) and flush says False. At most 15: the queue holds 5;
    exactly 15 only if the loop ends before the worker, which may take records off the queue whenever it gets
    the GIL, takes any (so a bound; at least one, or the queue was not bounded)."""
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="qfull", queue_size=5, flush_interval=60)
    isolated_logger.addHandler(h)
    for i in range(20):
        isolated_logger.error("record %d", i)
    assert h.flush(timeout=10) is False
    s = h.stats
    full = s.dropped_by_reason.get("queue_full", 0)
    assert 1 <= full <= 15 and s.dropped_by_reason == {"queue_full": full}, s
    assert (s.received, s.sent, s.dropped, s.queued) == (20, 20 - full, full, 0)
    assert stored(emu, "qfull") == 20 - full


# --- 6. servers -----------------------------------------------------------------------------------------------


def _uvicorn_worker_class() -> str | None:
    for mod, cls in (
        ("uvicorn_worker", "uvicorn_worker.UvicornWorker"),
        ("uvicorn.workers", "uvicorn.workers.UvicornWorker"),
    ):
        try:
            if importlib.util.find_spec(mod) is not None:
                return cls
        except ImportError:
            continue
    return None


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


@dataclasses.dataclass(frozen=True)
class ServerCase:
    id: str
    needs: tuple[str, ...]
    argv: Callable[[int], list[str]]  # port -> argv after ``python -m``
    event_name: str
    processes: int  # that serve requests: the test waits until each has answered
    # Requests: 50 a process, so that (spread evenly) each process's records stay below a batch (100) and still
    # wait in its queue when SIGTERM comes: the way the process stops decides whether they are delivered.
    per_process: int = 50
    boot_records: int = 0  # flaskBoot records the app logs at import: one per process that imports it


def _gunicorn_own_options() -> list[str]:
    """No control socket (gunicorn 24+ makes one in $HOME, shared by every gunicorn a machine runs)."""
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return []
    return ["--no-control-socket"] if any("--no-control-socket" in (s.cli or []) for s in KNOWN_SETTINGS) else []


def _gunicorn(*opts: str, app: str = "tests.apps.flask_app:app") -> Callable[[int], list[str]]:
    own = _gunicorn_own_options()
    return lambda port: ["gunicorn", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "20", *own, *opts, app]


SERVERS = [
    ServerCase("gunicorn-sync-w4-flask", ("gunicorn", "flask"), _gunicorn("-w", "4"), "flaskErr", 4, boot_records=4),
    ServerCase(
        "gunicorn-preload-w4-flask",
        ("gunicorn", "flask"),
        _gunicorn("-w", "4", "--preload"),
        "flaskErr",
        4,
        boot_records=1,
    ),
    ServerCase(
        "gunicorn-gthread-w4-t4-flask",
        ("gunicorn", "flask"),
        _gunicorn("-w", "4", "-k", "gthread", "--threads", "4"),
        "flaskErr",
        4,
        boot_records=4,
    ),
    ServerCase(
        "gunicorn-sync-w4-django",
        ("gunicorn", "django"),
        _gunicorn("-w", "4", app="tests.apps.django_app:application"),
        "djangoErr",
        4,
    ),
    ServerCase(
        "gunicorn-uvicornworker-w2-asgi",
        ("gunicorn", "uvicorn"),
        _gunicorn("-w", "2", "-k", _uvicorn_worker_class() or "missing", app="tests.apps.asgi_app:app"),
        "asgiErr",
        2,
    ),
    ServerCase(
        "uvicorn-workers2-asgi",
        ("uvicorn",),
        lambda port: [
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "tests.apps.asgi_app:app",
        ],
        "asgiErr",
        2,
    ),
    ServerCase(
        "uvicorn-single-asgi",
        ("uvicorn",),
        lambda port: ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "tests.apps.asgi_app:app"],
        "asgiErr",
        1,
    ),
]


@contextmanager
def serving(case: ServerCase, emu: Emulator, log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The server started in its own process group, answering /health (60 s deadline); killed with its whole
    group afterwards whatever happened."""
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", *case.argv(port)],
            cwd=ROOT,
            env=child_env(emu.url),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return get(f"{base}/health").status_code == 200
            except requests.RequestException:
                return False

        assert wait_for(up, timeout=60, interval=0.2), "server did not start:\n" + log_path.read_text()
        assert proc.poll() is None, "server exited at start:\n" + log_path.read_text()
        pids: set[str] = set()

        def all_workers_up() -> bool:
            pids.add(get(f"{base}/health").text)
            return len(pids) >= case.processes

        assert wait_for(all_workers_up, timeout=60, interval=0.05), (
            f"workers answering: {pids}\n" + log_path.read_text()
        )
        yield proc, base
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def get(url: str) -> requests.Response:
    """A GET on a new connection (no keep-alive): the kernel hands each connection to whichever worker
    accepts first, so requests spread over the workers, as many clients' would."""
    return requests.get(url, timeout=15, headers={"Connection": "close"})


def hit(url: str, n: int, concurrency: int = 8) -> list[int]:
    """``n`` GETs from ``concurrency`` threads."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: get(url).status_code, range(n)))


@pytest.mark.parametrize("case", SERVERS, ids=[c.id for c in SERVERS])
def test_server_stopped_by_sigterm_stores_every_error(emu: Emulator, tmp_path: Path, case: ServerCase) -> None:
    """Requests (8 at a time; about 50 a process) to a view that logs the same error, spread over the server's
    processes and threads; then SIGTERM to the server, as a deploy or ``docker stop`` does. The server exits,
    and every error is stored: none merged with another process's, none lost with a worker's queue. The Flask
    app also logs one record at import: stored once per importing process (with --preload, the master's once,
    not once more per forked worker)."""
    missing = [m for m in case.needs if not _has(m)]
    if missing or "missing" in " ".join(case.argv(0)):
        pytest.skip(f"not installed: {', '.join(missing) or 'a UvicornWorker'}")
    log_path = tmp_path / "server.log"
    with serving(case, emu, log_path) as (proc, base):
        n = case.per_process * case.processes
        codes = hit(f"{base}/err", n)
        assert codes == [200] * n
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail("server still running 40 s after SIGTERM:\n" + log_path.read_text())
    log = log_path.read_text()
    assert rc in (0, -signal.SIGTERM), log
    assert "Traceback" not in log, log
    wait_for(lambda: stored(emu, case.event_name) >= n, timeout=5)  # a worker the master did not wait for
    assert stored(emu, case.event_name) == n, log
    if case.boot_records:  # each importing process's one record, once: not lost, merged or copied by a fork
        assert stored(emu, "flaskBoot") == case.boot_records, log


ASGI_SERVERS = [c for c in SERVERS if c.event_name == "asgiErr"]


@pytest.mark.parametrize("case", ASGI_SERVERS, ids=[c.id for c in ASGI_SERVERS])
def test_record_logged_in_the_graceful_shutdown_after_sigterm_is_stored(
    emu: Emulator, tmp_path: Path, case: ServerCase
) -> None:
    """uvicorn's graceful shutdown runs after SIGTERM (the app's lifespan shutdown logs one warning in each
    worker), then uvicorn puts back the default disposition and raises SIGTERM again, so no atexit runs: the
    warning logged in between is stored all the same, once per worker."""
    missing = [m for m in case.needs if not _has(m)]
    if missing or "missing" in " ".join(case.argv(0)):
        pytest.skip(f"not installed: {', '.join(missing) or 'a UvicornWorker'}")
    log_path = tmp_path / "server.log"
    with serving(case, emu, log_path) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail("server still running 40 s after SIGTERM:\n" + log_path.read_text())
    log = log_path.read_text()
    assert rc in (0, -signal.SIGTERM), log
    assert "Traceback" not in log and log.count("Application shutdown complete") == case.processes, log
    wait_for(lambda: stored(emu, "asgiStop") >= case.processes, timeout=5)
    assert stored(emu, "asgiStop") == case.processes, log
