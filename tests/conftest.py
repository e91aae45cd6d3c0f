from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ces_logging import CESClient
from ces_logging.emulator import Emulator

PROJECT = "proj0123456789"
AK = "TESTAKEXAMPLE0001"
SK = "test-secret-key-DO-NOT-LEAK-0001"


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests see only the credentials they set: no env vars or profile file of the machine."""
    for var in (
        "HUAWEICLOUD_SDK_AK",
        "HUAWEICLOUD_SDK_SK",
        "HUAWEICLOUD_SDK_SECURITY_TOKEN",
        "HUAWEICLOUD_SDK_PROJECT_ID",
        "CES_PROJECT_ID",
        "CES_ENDPOINT",
        "CES_REGION",
        "CES_AUTH_TOKEN",
        "CES_EVENT_SOURCE",
        "CES_METADATA_URL",
        "HUAWEICLOUD_SDK_REGION",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HUAWEICLOUD_SDK_CREDENTIALS_FILE", str(tmp_path_factory.mktemp("home") / "none"))


# --- every test leaves the process as it found it, pass or fail ---------------------------------------------------

_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")
                 if hasattr(signal, n))  # fmt: skip


@dataclass
class _LoggerState:
    handlers: list[logging.Handler]
    filters: list[Any]
    level: int
    propagate: bool
    disabled: bool


def _loggers() -> dict[str, logging.Logger]:
    found = {"": logging.getLogger()}
    found.update((n, lg) for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger))
    return found


def _children() -> set[int]:
    """Pids of this process's children (every thread's), from /proc; empty where there is no /proc."""
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{os.getpid()}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{os.getpid()}/task/{task}/children") as f:
                pids.update(int(p) for p in f.read().split())
    return pids


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    kids = {int(k) for k in f.read().split()} - out
                    out |= kids
                    todo.extend(kids)
    return out


def _multiprocessing_helpers() -> set[int]:
    """multiprocessing's own long-lived helpers (forkserver, resource tracker): started by the first test that
    needs them and reused by later ones, so they are not a test's leftovers."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    pids = {getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
            getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)}  # fmt: skip
    return {p for p in pids if isinstance(p, int)}


def _close_left_handler(h: logging.Handler) -> None:
    from ces_logging import CESHandler

    with contextlib.suppress(Exception):
        if isinstance(h, CESHandler):
            h.close(grace_period=0)  # its emulator is likely gone already: do not wait for it
        else:
            h.close()


@contextlib.contextmanager
def process_state_restored() -> Iterator[None]:
    """Whatever is done to the process inside is undone after it, pass or fail: the logging tree (each
    logger's handlers, filters, level, propagate and disabled flag; ``logging.disable``), the environment, the
    working directory, the handlers of the usual signals and the exception hooks; child processes left running
    are killed with their own children (multiprocessing's shared helpers excepted). Handlers attached inside
    and left there are detached and closed."""
    loggers = {n: _LoggerState(list(lg.handlers), list(lg.filters), lg.level, lg.propagate, lg.disabled)
               for n, lg in _loggers().items()}  # fmt: skip
    disable = logging.root.manager.disable
    environ = dict(os.environ)
    cwd = os.getcwd()
    on_main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in _SIGNALS} if on_main else {}
    hooks = (sys.excepthook, threading.excepthook)
    children = _children()
    try:
        yield
    finally:
        helpers = _multiprocessing_helpers()
        for pid in _children() - children - helpers:
            for p in [pid, *_descendants(pid)]:
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, os.WNOHANG)
        kept = {id(h) for st in loggers.values() for h in st.handlers}
        for name, lg in _loggers().items():
            st = loggers.get(name)
            if st is None:  # made inside: back to a new logger's state (a library's NullHandler kept)
                left = [h for h in lg.handlers if not isinstance(h, logging.NullHandler)]
                lg.handlers[:] = [h for h in lg.handlers if isinstance(h, logging.NullHandler)]
                lg.filters[:] = []
                lg.level, lg.propagate, lg.disabled = logging.NOTSET, True, False
            else:
                left = [h for h in lg.handlers if id(h) not in kept]
                lg.handlers[:] = st.handlers
                lg.filters[:] = st.filters
                lg.level, lg.propagate, lg.disabled = st.level, st.propagate, st.disabled
            for h in left:
                _close_left_handler(h)
        logging.disable(disable)
        logging.root.manager._clear_cache()
        os.environ.clear()
        os.environ.update(environ)
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        for s, h in handlers.items():
            with contextlib.suppress(ValueError, TypeError, OSError):
                signal.signal(s, h if h is not None else signal.SIG_DFL)
        sys.excepthook, threading.excepthook = hooks


@pytest.fixture(autouse=True)
def _leave_nothing_behind() -> Iterator[None]:
    """Every test leaves the process as it found it (``process_state_restored``), so that tests pass in any
    order and next to any other (pytest-randomly, pytest-xdist). Fixtures of a wider scope are set up before
    this one and torn down after it, so their state is part of what is kept."""
    with process_state_restored():
        yield


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        yield e


@pytest.fixture
def emu_aksk() -> Iterator[Emulator]:
    with Emulator(ak=AK, sk=SK) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[CESClient]:
    with CESClient(PROJECT, endpoint=emu.url) as c:
        yield c


def now_ms() -> int:
    return int(time.time() * 1000)


def item(name: str = "testEvent", t: int | None = None, **detail: object) -> dict[str, object]:
    d: dict[str, object] = {"event_type": "EVENT.CUSTOM", "event_level": "Info", "content": "hello"}
    d.update(detail)
    return {"event_name": name, "event_source": "app.test", "time": now_ms() if t is None else t, "detail": d}


ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) in a fresh interpreter in the project's folder, with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


@contextlib.contextmanager
def frozen_wall_clock(at: Any) -> Iterator[Any]:
    """``freezegun.freeze_time(at)`` for the wall clock only (``time.time``, ``datetime.now``: record times,
    token expiry), while the monotonic clocks every deadline is measured on keep running. freeze_time freezes
    ``time.monotonic`` too, so ``flush(timeout=...)``, ``wait_for`` and the worker's own waits could never time
    out under it: a stall would hang to pytest-timeout instead of failing at its deadline."""
    import freezegun.api
    from freezegun import freeze_time

    names = ("monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns")
    real = {n: getattr(freezegun.api, f"real_{n}") for n in names if hasattr(freezegun.api, f"real_{n}")}
    with freeze_time(at) as clock:
        fake = {n: getattr(time, n) for n in real}
        for n, f in real.items():
            setattr(time, n, f)
        try:
            yield clock
        finally:
            for n, f in fake.items():
                setattr(time, n, f)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """(key, certificate) of a self-signed certificate for 127.0.0.1; skips where openssl cannot make one."""
    import shutil

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate with")
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                           str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                          capture_output=True, timeout=60)  # fmt: skip
    if made.returncode != 0:
        pytest.skip("openssl could not make a certificate")
    return key, cert


@pytest.fixture
def isolated_logger() -> Iterator[logging.Logger]:
    """A logger of its own per test, not propagating to root, cleaned afterwards."""
    name = f"t{time.monotonic_ns()}"
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


# --- secrets never reach any output: checked over everything the suite captured -----------------------------

TEST_SECRETS = (
    SK,
    "sec-token-value",
    "token-value-secret",
    "pa55word-secret",
    "pw-alice-secret",
    "wrong-secret-xyz",
    "SECRET-SK-0123456789",
    "SECRET-SECTOKEN-abcdef",
    "SECRET-PASSWORD-xyz",
)
_LEAKS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every test's captured stdout and stderr (the handler's own diagnostics go there through logging's last
    resort handler) is searched for the secrets the tests use."""
    text = "".join(content for _, content in report.sections)
    _LEAKS.extend((report.nodeid, s) for s in TEST_SECRETS if s in text)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The random order's seed, even under -q (which hides pytest-randomly's header): a failure that depends on
    the order is run again with ``-p randomly --randomly-seed=N``."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"random order: --randomly-seed={seed}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _LEAKS:
        for nodeid, secret in _LEAKS:
            print(f"\nSECRET LEAKED in the captured output of {nodeid}: {secret[:6]}...")
        session.exitstatus = 1
