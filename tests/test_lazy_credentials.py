"""Issue 21, item 4: credentials that would come from the ECS metadata service never keep the app from starting.

The rule (credentials.py): a source that is there but wrong is a ``ConfigError`` at construction; the metadata
service, the chain's last source, is asked at the first request, never at construction. While it gives nothing,
each batch is dropped as ``no_credentials`` with a line naming what to set, and it is asked again at most every
``NO_CREDENTIALS_RETRY_S``. ``CES_METADATA_URL=off`` keeps the old ``ConfigError``. Real HTTP throughout: a small
server on 127.0.0.1 plays the metadata service (answering 404 as an ECS without an agency does, or relaying the
emulator's temporary keys once it is "up"); a port where nothing listens plays an unreachable one.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from ces_logging import CESHandler, ConfigError
from ces_logging._service import credentials
from ces_logging._service.auth import METADATA_PATH
from ces_logging.emulator import Emulator
from ces_logging.errors import CESNoCredentialsError

from .conftest import PROJECT, ROOT, wait_for


class MetadataStandIn:
    """The ECS metadata service on 127.0.0.1: 404 (no agency) while ``up`` is False; once True, the
    emulator's temporary keys, relayed from its own metadata route. ``hits`` counts the requests."""

    def __init__(self, emu: Emulator | None = None) -> None:
        self.up = False
        self.hits = 0
        self.delay = 0.0  # seconds before each answer
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.hits += 1
                time.sleep(stand_in.delay)
                if stand_in.up and emu is not None and self.path == METADATA_PATH:
                    r = requests.get(emu.url + METADATA_PATH, timeout=5)
                    status, body = r.status_code, r.content
                else:
                    status, body = 404, b'{"error": "no agency"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def metadata_emu() -> Iterator[Emulator]:
    with Emulator(metadata=True) as e:
        yield e


@pytest.fixture
def stand_in(metadata_emu: Emulator) -> Iterator[MetadataStandIn]:
    s = MetadataStandIn(metadata_emu)
    yield s
    s.close()


def refused_url() -> str:
    """A port on 127.0.0.1 where nothing listens (bound, then closed: the kernel refuses connections to it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def invariant(h: CESHandler) -> None:
    s = h.stats
    assert s.sent + s.dropped + s.queued + s.folded == s.received, s
    assert wait_for(lambda: h.stats.queued == 0, timeout=10), h.stats


def test_off_keeps_the_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CES_METADATA_URL=off``: no metadata service here, so nothing found is a mistake, said at once (a
    remote endpoint: against a loopback one, nothing found is the emulator's open mode). Nothing is sent."""
    monkeypatch.setenv("CES_METADATA_URL", "off")
    with pytest.raises(ConfigError, match=r"no credentials found: .*CES_METADATA_URL=off"):
        CESHandler(project_id=PROJECT, endpoint="https://ces.cn-north-4.myhuaweicloud.com")


def test_bad_explicit_credentials_stay_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is there but wrong is still refused at construction, metadata service or not."""
    monkeypatch.setenv("CES_METADATA_URL", refused_url())
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AKONLY")
    with pytest.raises(ConfigError, match="HUAWEICLOUD_SDK_SK"):
        CESHandler(project_id=PROJECT, endpoint="http://127.0.0.1:1")
    monkeypatch.delenv("HUAWEICLOUD_SDK_AK")
    with pytest.raises(ConfigError, match="white space"):
        CESHandler(project_id=PROJECT, endpoint="http://127.0.0.1:1", ak="AK", sk="S K")


def test_no_agency_drops_with_a_named_reason_and_asks_again_later(
    metadata_emu: Emulator, stand_in: MetadataStandIn, monkeypatch: pytest.MonkeyPatch,
    isolated_logger: logging.Logger, capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The metadata service answers 404 (an ECS without an agency): the handler is built without asking it,
    each record is dropped as ``no_credentials`` with one line naming what to set, the service is not asked
    again for every batch; once it hands out keys (after the retry period), records are delivered."""
    monkeypatch.setattr(credentials, "NO_CREDENTIALS_RETRY_S", 2.0)
    monkeypatch.setenv("CES_METADATA_URL", stand_in.url)
    h = CESHandler(project_id=PROJECT, endpoint=metadata_emu.url, event_name="lazyCreds", flush_interval=0.05)
    assert stand_in.hits == 0  # construction did not ask
    isolated_logger.addHandler(h)
    for i in range(5):  # five batches, each flushed (tens of ms each): asked once per 2 s, not once per batch
        isolated_logger.error("before %d", i)
        assert h.flush(timeout=10) is False
    assert h.stats.dropped_by_reason == {"no_credentials": 5}, h.stats
    assert 1 <= stand_in.hits < 5, stand_in.hits  # a bound: a loaded machine may take over 2 s for the five
    err = capfd.readouterr().err
    assert err.count("no credentials found") == 1, err  # one line a minute, not one a batch
    assert "1 event(s) dropped: no credentials found: pass ak/sk or token, set HUAWEICLOUD_SDK_AK" in err, err
    assert f"the metadata service at {stand_in.url}: HTTP 404" in err, err
    stand_in.up = True
    delivered = False
    for i in range(100):  # bounded: 100 records 0.1 s apart outlast the 2 s retry period many times over
        isolated_logger.error("after %d", i)
        if h.flush(timeout=10):
            delivered = True
            break
        threading.Event().wait(0.1)
    assert delivered, h.stats
    assert metadata_emu.stats()["metadata_keys_issued"] == 1
    assert len(metadata_emu.events(PROJECT, "lazyCreds")) == 1
    invariant(h)
    assert h.stats.sent == 1


def test_threads_waiting_for_a_failed_fetch_do_not_ask_again(stand_in: MetadataStandIn) -> None:
    """Senders that ask at the same moment: one request to a slow metadata service that has nothing; the
    others, waiting for it, fail with it instead of each spending the 2 s deadline in turn."""
    stand_in.delay = 0.3
    provider = credentials.resolve_auth(project_id=PROJECT, env={"CES_METADATA_URL": stand_in.url}).auth.provider  # type: ignore[union-attr]
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            provider.credentials()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 4 and all(isinstance(e, CESNoCredentialsError) for e in errors), errors
    assert stand_in.hits == 1


def test_an_app_with_an_unreachable_metadata_service_runs_and_says_why(tmp_path: object) -> None:
    """A real process, credentials from nowhere but a metadata service that refuses connections: the app
    starts, logs, ends with status 0, and stderr says once what was dropped and what to set."""
    code = textwrap.dedent(
        """
        import logging, ces_logging
        h = ces_logging.configure(event_name="noCreds", flush_interval=0.05)
        for i in range(5):
            logging.getLogger("app").error("record %d", i)
        h.flush(timeout=10)
        s = h.stats
        assert s.dropped_by_reason == {"no_credentials": 5} and s.queued == 0, s
        print("APP RAN", flush=True)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CES_ENDPOINT": "http://127.0.0.1:1",
        "CES_PROJECT_ID": PROJECT,
        "CES_METADATA_URL": refused_url(),
        "HUAWEICLOUD_SDK_CREDENTIALS_FILE": "/nonexistent/credentials",
    }
    for var in ("HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "CES_AUTH_TOKEN"):
        env.pop(var, None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "APP RAN\n", (r.stdout, r.stderr)
    assert r.stderr.count("no credentials found") == 1, r.stderr
    assert "event(s) dropped: no credentials found" in r.stderr and "HUAWEICLOUD_SDK_AK" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
