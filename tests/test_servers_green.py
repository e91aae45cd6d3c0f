"""Never harm the app: gevent, eventlet, uWSGI prefork, PID 1 and an unreadable home (issue 21).

Real processes against the emulator on 127.0.0.1, as in test_processes.py (whose server helpers these reuse).
Each case is one the handler used to freeze, pin or crash: a monkey-patched process whose signals our greenlets
blocked, gunicorn's gevent workers frozen on a real queue, a uWSGI worker (forked with no at-fork hook) whose
inherited worker never ran, a container's PID 1 that lives on after SIGTERM, a user who may not read $HOME.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ces_logging.emulator import Emulator

from .conftest import PROJECT, ROOT, wait_for
from .test_processes import ServerCase, _gunicorn, _has, child_env, hit, json_lines, serving, stored

APPS = Path(__file__).resolve().parent / "apps"


def _blocked_signals(status_line: str) -> int:
    return int(status_line.split()[1], 16)


# --- plain monkey-patched scripts: SIGTERM and SIGINT end them as without the handler, after the drain -----


@pytest.mark.parametrize("lib", ["gevent", "eventlet"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_monkey_patched_script_stops_on_signal_with_every_record(emu: Emulator, lib: str, sig: int) -> None:
    """The worker is a greenlet on the main OS thread: it must not block SIGTERM or SIGINT for the process
    (it did: SigBlk 4002, a script nothing could stop), and the drain, run out of the hub, delivers all."""
    if not _has(lib):
        pytest.skip(f"{lib} not installed")
    p = subprocess.Popen(
        [sys.executable, "-W", "ignore", str(APPS / "green_script.py"), lib, "40"],
        cwd=ROOT,
        env=child_env(emu.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        sigblk = p.stdout.readline()
        assert p.stdout.readline().strip() == "ready", sigblk
        mask = _blocked_signals(sigblk)
        assert not mask & (1 << (signal.SIGTERM - 1) | 1 << (signal.SIGINT - 1)), sigblk
        p.send_signal(sig)
        _, err = p.communicate(timeout=20)  # the grace period is 5 s: a stuck process fails here
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    assert p.returncode in (-sig, 1), (p.returncode, err)  # by the signal, or KeyboardInterrupt's exit status
    assert sum(stored(emu, f"green{i}") for i in range(40)) == 40, err
    assert "not delivered" not in err, err


# --- gunicorn's gevent worker, with and without --preload -------------------------------------------------

GEVENT_SERVERS = [
    ServerCase(
        "gunicorn-gevent-w2",
        ("gunicorn", "flask", "gevent"),
        _gunicorn("-w", "2", "-k", "gevent"),
        "flaskErr",
        2,
        boot_records=2,
    ),
    ServerCase(
        "gunicorn-gevent-preload-w2",
        ("gunicorn", "flask", "gevent"),
        _gunicorn("-w", "2", "-k", "gevent", "--preload"),
        "flaskErr",
        2,
        boot_records=1,
    ),
    # gunicorn 24 dropped its eventlet worker: these run where an older gunicorn is installed (verified by hand
    # with gunicorn 23); eventlet itself is covered by the plain scripts above on every run
    ServerCase(
        "gunicorn-eventlet-w2",
        ("gunicorn.workers.geventlet", "flask", "eventlet"),
        _gunicorn("-w", "2", "-k", "eventlet"),
        "flaskErr",
        2,
        boot_records=2,
    ),
    ServerCase(
        "gunicorn-eventlet-preload-w2",
        ("gunicorn.workers.geventlet", "flask", "eventlet"),
        _gunicorn("-w", "2", "-k", "eventlet", "--preload"),
        "flaskErr",
        2,
        boot_records=1,
    ),
]


def _stop_and_count(case: ServerCase, emu: Emulator, tmp_path: Path, n_per_process: int = 50) -> tuple[str, float]:
    missing = [m for m in case.needs if not _has(m)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    log_path = tmp_path / "server.log"
    with serving(case, emu, log_path) as (proc, base):
        n = n_per_process * case.processes
        assert hit(f"{base}/err", n) == [200] * n  # frozen workers time these out (15 s each)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail("server still running 40 s after SIGTERM:\n" + log_path.read_text())
        took = time.monotonic() - started
    log = log_path.read_text()
    # eventlet prints tracebacks of its own when it patches after Flask was imported (its warning, not ours)
    assert ("/ces_logging/" if "eventlet" in case.needs else "Traceback") not in log, log
    wait_for(lambda: stored(emu, case.event_name) >= n, timeout=5)
    assert stored(emu, case.event_name) == n, log
    if case.boot_records:
        assert stored(emu, "flaskBoot") == case.boot_records, log
    return log, took


@pytest.mark.parametrize("case", GEVENT_SERVERS, ids=[c.id for c in GEVENT_SERVERS])
def test_gunicorn_gevent_serves_and_stops_with_every_record(emu: Emulator, tmp_path: Path, case: ServerCase) -> None:
    """Each worker serves every request (they froze after one or two), and SIGTERM ends the server within the
    drain, not gunicorn's graceful timeout (20 s here): a correctness bound with slack for a loaded machine."""
    _, took = _stop_and_count(case, emu, tmp_path)
    assert took < 15, took


# --- uWSGI prefork: workers forked from C, no at-fork hook ------------------------------------------------


def _uwsgi(*opts: str):  # type: ignore[no-untyped-def]
    return lambda port: [
        "tests.apps.run_uwsgi",
        "--http-socket",
        f"127.0.0.1:{port}",
        "--master",
        "--processes",
        "2",
        "--die-on-term",
        "--wsgi-file",
        "tests/apps/uwsgi_app.py",
        "--callable",
        "app",
        "--need-app",
        *opts,
    ]


UWSGI_SERVERS = [
    ServerCase("uwsgi-prefork", ("uwsgi", "flask"), _uwsgi(), "flaskErr", 2, boot_records=1),
    ServerCase("uwsgi-prefork-threads", ("uwsgi", "flask"), _uwsgi("--enable-threads"), "flaskErr", 2, boot_records=1),
    ServerCase("uwsgi-lazy-apps", ("uwsgi", "flask"), _uwsgi("--lazy-apps"), "flaskErr", 2, boot_records=2),
]


@pytest.mark.parametrize("case", UWSGI_SERVERS, ids=[c.id for c in UWSGI_SERVERS])
def test_uwsgi_prefork_workers_deliver_every_record(emu: Emulator, tmp_path: Path, case: ServerCase) -> None:
    """The app (and its handler, which logged at import) is loaded in the master and forked without any
    at-fork hook: each worker notices its new pid on its first record and starts afresh, and its worker
    delivers as it serves (none of 230 arrived: the inherited worker object said it was alive, and no thread
    ran). Every error is stored while the server runs; then SIGTERM stops it, and no worker blames the service.
    (What a uWSGI worker leaves to its exit is not counted on here: uWSGI runs Python's atexit in a worker only
    when it sees it idle.)"""
    if not (shutil.which("uwsgi") or Path(sys.executable).with_name("uwsgi").exists()):
        pytest.skip("uwsgi not installed")
    if not _has("flask"):
        pytest.skip("flask not installed")
    log_path = tmp_path / "server.log"
    with serving(case, emu, log_path) as (proc, base):
        n = case.per_process * case.processes
        assert hit(f"{base}/err", n) == [200] * n
        delivered = wait_for(lambda: stored(emu, case.event_name) >= n, timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)
    log = log_path.read_text()
    assert delivered and stored(emu, case.event_name) == n, log
    if case.boot_records:
        assert wait_for(lambda: stored(emu, "flaskBoot") >= case.boot_records, timeout=5), log
    assert "Traceback" not in log and "did not take them" not in log, log


def test_fork_without_at_fork_hooks_starts_afresh(emu: Emulator) -> None:
    """libc's fork() runs none of Python's at-fork hooks (uWSGI's case, in one process): the child's first
    record finds the pid changed, the child delivers its own records (and only those), and a child that never
    got its worker running says so in its own words, never blaming the service."""
    code = """
        import ctypes, dataclasses, json, logging, os, time
        import ces_logging
        h = ces_logging.configure("INFO", flush_interval=60, grace_period=3)
        log = logging.getLogger("fork")
        for i in range(3):
            log.warning("parent %d", i, extra={"ces_event_name": "parentRec"})
        time.sleep(0.1)  # the parent's worker runs (it holds locks the child copies)
        pid = ctypes.CDLL(None).fork()
        if pid == 0:
            for i in range(5):
                log.warning("child %d", i, extra={"ces_event_name": f"childRec{i}"})
            ok = h.flush(timeout=10)
            print(json.dumps({"ok": ok, "stats": dataclasses.asdict(h.stats)}), flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        print(json.dumps({"parent": dataclasses.asdict(h.stats)}), flush=True)
    """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=child_env(emu.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    child, parent = json_lines(r.stdout)
    assert child["ok"] is True, r.stderr
    s = child["stats"]
    assert (s["received"], s["sent"], s["queued"]) == (5, 5, 0), s
    assert sum(stored(emu, f"childRec{i}") for i in range(5)) == 5
    assert wait_for(lambda: stored(emu, "parentRec") >= 1, timeout=10)  # the parent's, sent at its exit
    p = parent["parent"]
    assert p["received"] == 3, p


def test_report_names_a_worker_that_never_ran() -> None:
    """What is left at exit is blamed on the service only when the worker ran: a handler whose worker never
    ran in this process (a thread that never got the CPU) says that instead."""
    code = """
        import logging
        import ces_logging
        from ces_logging.worker import Worker
        h = ces_logging.configure("INFO", flush_interval=60, grace_period=0.5)
        Worker.start = lambda self: None  # a worker that never runs in this process
        logging.getLogger("x").warning("never sent")
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CES_ENDPOINT": "http://127.0.0.1:9", "CES_PROJECT_ID": PROJECT}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "1 event(s) not delivered at exit: the delivery thread never ran in this process" in r.stderr, r.stderr
    assert "did not take them" not in r.stderr, r.stderr


# --- PID 1: the re-raised SIGTERM does not end it, so delivery goes on ------------------------------------


def test_pid1_keeps_delivering_after_sigterm(emu: Emulator) -> None:
    """A container's init process ignores the SIGTERM the handler hands on (the kernel's rule for PID 1): the
    drain delivers what was logged, the process goes on, and what it logs afterwards arrives as usual (it was
    given up as ``shutdown`` before: the exit's deadline had started although nothing was ending)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (CI runs as root)")
    code = """
        import dataclasses, json, logging, os, signal, time
        import ces_logging
        h = ces_logging.configure("INFO", flush_interval=60, grace_period=1)
        log = logging.getLogger("pid1")
        assert os.getpid() == 1
        log.warning("before", extra={"ces_event_name": "beforeTerm"})
        os.kill(1, signal.SIGTERM)  # handled at once, in the main thread
        time.sleep(1.5)  # past the grace period
        for i in range(5):
            log.warning("after %d", i, extra={"ces_event_name": f"afterTerm{i}"})
        ok = h.flush(timeout=10)
        print(json.dumps({"ok": ok, "stats": dataclasses.asdict(h.stats)}), flush=True)
    """
    r = subprocess.run(
        ["unshare", "--fork", "--pid", "--mount-proc", sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=child_env(emu.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode != 0 and "unshare failed" in r.stderr:
        pytest.skip(f"no pid namespace here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    (d,) = json_lines(r.stdout)
    s = d["stats"]
    assert d["ok"] is True and s["dropped_by_reason"] == {} and s["queued"] == 0, s
    assert s["sent"] == s["received"] == 6, s
    assert stored(emu, "beforeTerm") == 1
    assert sum(stored(emu, f"afterTerm{i}") for i in range(5)) == 5
    assert "not delivered" not in r.stderr, r.stderr


# --- the environment: an unreadable home, a failed construction -------------------------------------------


def test_unreadable_home_does_not_stop_the_app(emu: Emulator, tmp_path: Path) -> None:
    """A user who may not enter $HOME (a service account, a container run with another uid): the
    credentials-file probe raised PermissionError out of configure(). Now the file counts as not there (one
    line says so) and the handler works with what the environment gives. The user is root without the
    capabilities that bypass file permissions (setpriv), so that the interpreter under /root stays readable."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv (CI runs as root)")
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0)
    code = """
        import dataclasses, json, logging
        import ces_logging
        h = ces_logging.configure("INFO", flush_interval=60)
        logging.getLogger("home").warning("hello", extra={"ces_event_name": "homeRec"})
        print(json.dumps({"ok": h.flush(timeout=10), "stats": dataclasses.asdict(h.stats)}), flush=True)
    """
    env = {**child_env(emu.url), "HOME": str(home)}
    env.pop("HUAWEICLOUD_SDK_CREDENTIALS_FILE", None)  # the default, under $HOME
    try:
        r = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", textwrap.dedent(code)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        home.chmod(0o700)
    assert r.returncode == 0, r.stderr
    (d,) = json_lines(r.stdout)
    assert d["ok"] is True and d["stats"]["sent"] == 1, d
    assert stored(emu, "homeRec") == 1
    assert "cannot be read" in r.stderr and "skipped" in r.stderr, r.stderr


def test_failed_construction_leaves_nothing_for_logging_shutdown() -> None:
    """A handler whose __init__ raised (a bad option) is already in logging's list of handlers: at exit
    logging.shutdown flushed and closed it and hit AttributeError '_buffer'. Now nothing is printed."""
    code = """
        import ces_logging
        from ces_logging import ConfigError
        kept = []  # an exception kept (as an uncaught one is, until exit) keeps the half-built handler alive
        for bad in ({"batch_size": 0}, {"ak": "only-ak"}):
            try:
                ces_logging.CESHandler(project_id="p", endpoint="http://127.0.0.1:9", **bad)
            except ConfigError as e:
                kept.append(e)
        print("done")
    """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr
    assert r.stderr == "", r.stderr


CELERY_APP = """
import logging
import os

import ces_logging
from celery import Celery
from celery.signals import worker_ready

ces_logging.configure("INFO", flush_interval=60)
app = Celery("green_tasks", broker="memory://")
app.conf.worker_hijack_root_logger = False


@worker_ready.connect
def ready(**_):
    for i in range(10):
        logging.getLogger("task").warning("ready %d", i, extra={"ces_event_name": f"celeryGreen{i}"})
    with open(os.environ["READY_FILE"], "w") as f:  # not print: Celery sends stdout to a logger
        f.write("READY")
"""


def test_celery_gevent_pool_stops_on_sigterm_with_every_record(emu: Emulator, tmp_path: Path) -> None:
    """Celery ``-P gevent``: records logged in the worker, then SIGTERM (which our greenlets used to block for
    the whole process): the worker stops, and every record is stored."""
    if not (_has("celery") and _has("gevent")):
        pytest.skip("celery or gevent not installed")
    (tmp_path / "green_tasks.py").write_text(CELERY_APP)
    ready = tmp_path / "ready"
    env = {**child_env(emu.url), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "READY_FILE": str(ready)}
    out_path = tmp_path / "celery.log"
    with out_path.open("wb") as out:
        p = subprocess.Popen(
            [sys.executable, "-W", "ignore", "-m", "celery", "-A", "green_tasks", "worker", "-P", "gevent", "-c", "4",
             "--loglevel=WARNING", "--without-mingle", "--without-gossip", "--without-heartbeat"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        assert wait_for(lambda: ready.exists() or p.poll() is not None, timeout=60), out_path.read_text()
        assert p.poll() is None, out_path.read_text()
        p.send_signal(signal.SIGTERM)
        p.wait(30)  # a worker that blocks SIGTERM fails here
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    log = out_path.read_text()
    wait_for(lambda: sum(stored(emu, f"celeryGreen{i}") for i in range(10)) >= 10, timeout=5)
    assert sum(stored(emu, f"celeryGreen{i}") for i in range(10)) == 10, log
    assert "Traceback" not in log, log
