from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _LEAKS:
        for nodeid, secret in _LEAKS:
            print(f"\nSECRET LEAKED in the captured output of {nodeid}: {secret[:6]}...")
        session.exitstatus = 1
