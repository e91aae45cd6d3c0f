"""The worker's lean hot path (issue 12): the batch builder's events and JSON text against the one-item
builder's, and ``transport.FastPost`` against what ``requests`` gave it: TLS verification, proxies from the
environment (a CONNECT tunnel, with proxy credentials), kept-alive connections that the server closed, the
error model. Real HTTP against the emulator on 127.0.0.1; the proxy is a small tunnel in this process."""

from __future__ import annotations

import base64
import gc
import json
import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ces_logging import CESClient, CESHandler, identity, mapping
from ces_logging.emulator import Emulator
from ces_logging.errors import CESTransportError, CESValidationError
from ces_logging.events import event_key, now_ms
from ces_logging.mapping import DEFAULT_LEVEL_MAP, DEFAULT_STATE_MAP, Event, EventBuilder, TimeAssigner, encode_batch
from ces_logging.prepare import Preparer

from .conftest import PROJECT, item, wait_for

COMPACT = {"ensure_ascii": False, "separators": (",", ":")}


def builder(**kw: Any) -> EventBuilder:
    args: dict[str, Any] = {
        "event_source": "app.orders",
        "event_name": None,
        "resource_id": None,
        "resource_name": None,
        "group_id": None,
        "event_user": None,
        "dimensions": {},
        "level_map": DEFAULT_LEVEL_MAP,
        "state_map": DEFAULT_STATE_MAP,
    }
    args.update(kw)
    return EventBuilder(**args)


PREPARE = Preparer(json_content=False)


def record(msg: str, level: int = logging.WARNING, name: str = "app.orders", **extra: Any) -> logging.LogRecord:
    r = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    r.__dict__.update(extra)
    return r


SETTINGS = [
    {},
    {"resource_name": "web-1", "resource_id": "i-123", "event_user": "ops", "group_id": "rg-1"},
    {"dimensions": {"env": "prod", "zone": "az1"}, "event_name": "fixedName"},
    {"process_identity": False, "resource_name": "web-2"},
]


@pytest.mark.parametrize("kw", SETTINGS)
def test_batch_path_equals_one_item_path(kw: dict[str, Any]) -> None:
    """Every event of ``build_batch`` is what ``__call__`` gives for its item, and its own JSON text is exactly
    the compact JSON of the event: plain items (the fast path), overrides, bad values and odd text mixed."""
    records = [
        record("user 1 failed"),
        record("café ünïcode 🚀 \"quoted\" back\\slash \x01 control\nnew line"),
        record("lone \udcff surrogate"),
        record("error", logging.ERROR),
        record("info", logging.INFO, name="app.other"),
        record("override", ces={"event_level": "Critical", "resource_name": "custom", "dimensions": {"a": "b"}}),
        record("bad override", ces={"event_level": "Loud"}),
        record("flat", ces_event_name="flatName"),
        record("user 1 failed"),
    ]
    fast, one = builder(**kw), builder(**kw)
    items = [PREPARE.prepare(r, None) for r in records]
    now = now_ms()
    # The time table is one per process: each path gets a fresh one, so that both start from the same state.
    fresh = {"TIMES": TimeAssigner(on_full=identity.renew), "TIMES_PLAIN": TimeAssigner()}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in fresh.items():
            mp.setattr(mapping, k, v)
        events, reasons = fast.build_batch(items, now)
        for k in fresh:
            mp.setattr(mapping, k, TimeAssigner(on_full=identity.renew))
        built = [one(i, now) for i in items]
    expected = [e.as_dict() for e in built if isinstance(e, Event)]
    assert reasons == {}
    assert [e.as_dict() for e in events] == expected
    for e, want in zip(events, expected, strict=True):
        assert e.raw == json.dumps(want, **COMPACT)  # the very text json.dumps gives for the event
        assert e.time == want["time"]
    assert json.loads(encode_batch(events)) == expected
    assert fast.sanitised == one.sanitised == 1  # the unknown level


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_encodes_as_json_does(text: str) -> None:
    b = builder(dimensions={"k": "v"})
    events, _ = b.build_batch([PREPARE.prepare(record(text.replace("%", "%%")), None)], now_ms())
    (e,) = events
    assert e.raw == json.dumps(e.as_dict(), **COMPACT)
    json.loads(e.raw.encode("utf-8"))  # valid UTF-8 JSON: no lone surrogate got through


def test_identity_renewed_in_the_middle_of_a_batch_never_repeats_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The time table fills up (more keys than it keeps) while one batch is built: the identity is renewed,
    and every later event carries the new one. No two events share key fields and time."""
    monkeypatch.setattr(mapping, "TIMES", TimeAssigner(on_full=identity.renew))  # a table of its own
    b = builder()
    gen = identity.generation
    n = TimeAssigner.MAX_KEYS * 12 // 10  # nine in ten of them distinct: more keys than the table keeps
    created = time.time()
    # Distinct loggers make distinct keys; every tenth record repeats one logger in the same millisecond.
    records = []
    for i in range(n):
        name = f"app.k{i}" if i % 10 else "app.hot"
        r = record("x", name=name)
        r.created = created
        records.append(r)
    events, reasons = b.build_batch([PREPARE.prepare(r, None) for r in records], now_ms())
    assert reasons == {} and len(events) == n
    assert identity.generation > gen  # the table was full: a new token
    dicts = [e.as_dict() for e in events]
    pairs = {(event_key(e), e["time"]) for e in dicts}
    assert len(pairs) == n
    assert len({e["detail"]["resource_name"] for e in dicts}) >= 2


# --- the transport -------------------------------------------------------------------------------------------


class TunnelProxy:
    """An HTTP proxy that serves CONNECT only (what an https endpoint needs), checks Proxy-Authorization when
    given credentials, and counts the tunnels it opened."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.expected = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user is not None else None
        )
        self.tunnels = 0
        self.refused = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c:
            c.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = c.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            if method != "CONNECT" or (self.expected and headers.get("proxy-authorization") != self.expected):
                self.refused += 1
                c.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as up:
                self.tunnels += 1
                c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pipe([c, up])

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def pipe(socks: list[socket.socket], limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        ready, _, _ = select.select(socks, [], [], 0.5)
        for s in ready:
            data = s.recv(65536)
            if not data:
                return
            (socks[1] if s is socks[0] else socks[0]).sendall(data)


@pytest.fixture
def tls_emu(tls_files: tuple[Path, Path]) -> Iterator[tuple[Emulator, Path]]:
    key, cert = tls_files
    with Emulator(tls_cert=str(cert), tls_key=str(key)) as emu:
        yield emu, cert


def test_tls_is_verified_on_the_hot_path(tls_emu: tuple[Emulator, Path]) -> None:
    emu, cert = tls_emu
    untrusting = CESClient(PROJECT, endpoint=emu.url, timeout=5)
    assert untrusting._fast is not None  # the hot path is the lean transport here
    with pytest.raises(CESTransportError, match="SSLError"):
        untrusting.report_events([item()])
    assert emu.count() == 0
    trusting = CESClient(PROJECT, endpoint=emu.url, verify=str(cert), timeout=5)
    assert len(trusting.report_events([item(), item("other")])) == 2
    assert emu.count() == 2


@pytest.mark.parametrize("credentials", [False, True])
def test_https_through_a_proxy_from_the_environment(
    tls_emu: tuple[Emulator, Path], monkeypatch: pytest.MonkeyPatch, credentials: bool
) -> None:
    """HTTPS_PROXY (with user:password when the proxy wants them) carries the hot POST through a CONNECT
    tunnel, the certificate still checked against the endpoint's name; a handler delivers through it."""
    emu, cert = tls_emu
    proxy = TunnelProxy("u$er", "pa:ss") if credentials else TunnelProxy()
    auth = "u%24er:pa%3Ass@" if credentials else ""
    monkeypatch.setenv("HTTPS_PROXY", f"http://{auth}127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        c = CESClient(PROJECT, endpoint=emu.url, verify=str(cert), timeout=5)
        assert c._fast is not None
        c.report_events([item()])
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, verify=str(cert), event_name="proxied")
        log = logging.getLogger(f"proxied{time.monotonic_ns()}")
        log.propagate = False
        log.addHandler(h)
        for i in range(150):
            log.error("through the proxy %d", i)
        assert h.flush(timeout=20)
        h.close()
        s = h.stats
        assert (s.sent, s.dropped, s.queued) == (150, 0, 0) and s.sent + s.dropped + s.queued == s.received
        assert emu.count() == 151 and proxy.tunnels >= 2 and proxy.refused == 0
    finally:
        proxy.close()


def test_a_proxy_that_refuses_is_a_transport_error_without_its_password(
    tls_emu: tuple[Emulator, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, cert = tls_emu
    proxy = TunnelProxy("user", "right-password")
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:wrong-password-xyz@127.0.0.1:{proxy.port}")
    try:
        c = CESClient(PROJECT, endpoint=emu.url, verify=str(cert), timeout=5)
        with pytest.raises(CESTransportError) as e:
            c.report_events([item()])
        assert "wrong-password-xyz" not in str(e.value) and proxy.refused == 1 and emu.count() == 0
    finally:
        proxy.close()


def test_a_socks_proxy_or_a_session_of_the_callers_goes_over_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the lean transport's to carry: the client keeps ``requests`` for them."""
    import requests

    endpoint = "https://ces.cn-north-4.myhuaweicloud.com"
    assert CESClient(PROJECT, endpoint=endpoint, ak="AK", sk="SK")._fast is not None
    assert CESClient(PROJECT, endpoint=endpoint, ak="AK", sk="SK", session=requests.Session())._fast is None
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    assert CESClient(PROJECT, endpoint=endpoint, ak="AK", sk="SK")._fast is None


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_a_retry(isolated_logger: logging.Logger) -> None:
    """The emulator closes idle keep-alive connections after 0.3 s; the next POST notices before sending and
    opens a new one: nothing fails, nothing is counted as a retry."""
    with Emulator(idle_timeout=0.3) as emu:
        c = CESClient(PROJECT, endpoint=emu.url, timeout=5)
        c.report_events([item()])
        assert wait_for(lambda: emu.active_connections == 0, timeout=10)  # the server closed the idle one
        c.report_events([item("second")])
        assert emu.count() == 2
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="idle", flush_interval=0.05)
        isolated_logger.addHandler(h)
        for round_ in range(3):
            for i in range(20):
                isolated_logger.error("round %d record %d", round_, i)
            assert h.flush(timeout=10)
            # past the server's idle timeout: the pooled connection is closed under us
            assert wait_for(lambda: emu.active_connections == 0, timeout=10)
        isolated_logger.removeHandler(h)
        h.close()
        s = h.stats
        assert (s.sent, s.dropped, s.queued, s.retries) == (60, 0, 0, 0)
        assert s.sent + s.dropped + s.queued == s.received
        assert emu.count() == 62


def test_errors_keep_their_model_on_the_hot_path(emu: Emulator) -> None:
    c = CESClient(PROJECT, endpoint=emu.url, timeout=2)
    assert c._fast is not None
    with pytest.raises(CESValidationError) as e:
        c.report_events([item(t=1)])  # outside the service's window: 400, named by the service's code
    assert e.value.status == 400 and e.value.code
    emu.add_fault(status=429, retry_after="7")
    from ces_logging.errors import CESThrottledError

    with pytest.raises(CESThrottledError) as t:
        c.report_events([item()])
    assert t.value.retry_after == 7.0
    dead = CESClient(PROJECT, endpoint="http://127.0.0.1:9", timeout=1)
    with pytest.raises(CESTransportError, match="ConnectionError"):
        dead.report_events([item()])


def test_a_malformed_proxy_url_is_a_transport_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unencoded '/' in the proxy's password makes the URL's port unreadable: the client and the handler are
    still made (requests carries the POST and reports the URL as invalid), and nothing quotes the password."""
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pa/SECRET-PROXY-PW@127.0.0.1:3128")
    c = CESClient(PROJECT, endpoint="https://127.0.0.1:9", ak="AK", sk="SK", timeout=2)
    assert c._fast is None
    with pytest.raises(CESTransportError) as e:
        c.report_events([item()])
    assert "SECRET-PROXY-PW" not in str(e.value) and "pa/" not in str(e.value)
    CESHandler(project_id=PROJECT, endpoint="https://127.0.0.1:9", ak="AK", sk="SK").close()


def test_keep_alive_holds_in_a_process_with_many_descriptors(emu: Emulator) -> None:
    """Over 1,024 open descriptors (a busy server's process): the pooled connection is still checked and
    reused (``select`` cannot take such a descriptor; the check must not take that for a dropped connection)."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        if hard != resource.RLIM_INFINITY and hard < 1400:
            pytest.skip("the descriptor limit is below 1,400 here")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1400, hard))
    gc.collect()  # a socket of an earlier test closed later would free a low descriptor for ours
    pipes = [os.pipe()]
    while pipes[-1][1] < 1100 and len(pipes) < 1000:  # every free descriptor below 1,100 taken
        pipes.append(os.pipe())
    try:
        c = CESClient(PROJECT, endpoint=emu.url, timeout=5)
        c.report_events([item()])
        assert c._fast is not None and len(c._fast._idle) == 1
        sock = c._fast._idle[0]
        assert sock.fileno() > 1024
        for i in range(4):
            c.report_events([item(f"n{i}")])
            assert c._fast._idle == [sock]  # the same connection every time
        assert emu.count() == 5
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class OddServer:
    """Answers each request on a connection with the next of ``answers`` (raw bytes, written in ``pieces``
    of that size with a short pause between them), then keeps the connection open unless told to close."""

    def __init__(self, answers: list[bytes], pieces: int = 0, close_after: bool = False) -> None:
        self.answers = list(answers)
        self.pieces = pieces
        self.close_after = close_after
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c:
            c.settimeout(5)
            buf = b""
            while self.answers and not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lengths = [ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")]
                n = int(lengths[0])
                while len(buf) < n:
                    buf += c.recv(65536)
                buf = buf[n:]
                answer = self.answers.pop(0)
                step = self.pieces or len(answer)
                for i in range(0, len(answer), step):
                    c.sendall(answer[i : i + step])
                    if self.pieces:
                        time.sleep(0.001)
                if self.close_after:
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


IDS = b'[{"event_id":"ev1","event_name":"testEvent"}]'


def chunked(body: bytes) -> bytes:
    return b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(body), body)


ODD = {
    "chunked, extensions, trailers, in 3-byte writes": (
        [b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(IDS)] * 2, 3, False, 1
    ),
    "100 Continue before the answer": (
        [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(IDS), IDS)] * 2,
        0, False, 1,
    ),
    "HTTP/1.0, the body to the end": ([b"HTTP/1.0 201 Created\r\n\r\n" + IDS] * 2, 0, True, 2),
    "bare LF line ends": ([b"HTTP/1.1 201 Created\nContent-Length: %d\n\n%s" % (len(IDS), IDS)] * 2, 0, False, 1),
}


@pytest.mark.parametrize("case", list(ODD))
def test_odd_but_legal_answers_are_read(case: str) -> None:
    answers, pieces, close_after, connections = ODD[case]
    srv = OddServer(answers, pieces, close_after)
    try:
        c = CESClient(PROJECT, endpoint=srv.url, timeout=5)
        for _ in range(2):
            assert c.report_events([item()])[0].event_id == "ev1"
        assert srv.connections == connections  # kept alive where the answer allows it, not otherwise
    finally:
        srv.close()


def test_a_folded_retry_after_is_read() -> None:
    """Obsolete line folding (RFC 9112 section 5.2): the continuation is part of the header's value."""
    body = b'{"error_code": "ces.0503", "error_msg": "busy"}'
    srv = OddServer([b"HTTP/1.1 503 Busy\r\nRetry-After:\r\n 7\r\nX-Request-Id: abc\r\n\tdef\r\nContent-Length: %d"
                     b"\r\n\r\n%s" % (len(body), body)])  # fmt: skip
    try:
        c = CESClient(PROJECT, endpoint=srv.url, timeout=5)
        from ces_logging.errors import CESServerError

        with pytest.raises(CESServerError) as e:
            c.report_events([item()])
        assert e.value.retry_after == 7.0 and e.value.request_id == "abc def"
    finally:
        srv.close()
