"""Issue 22: every answer a gateway can give to the worker's POST, over a real socket.

A small raw-socket server (``Gateway``) reads each request (head and Content-Length body) and answers with bytes
the test scripts: a compressed 201, a 204, a redirect, a 9 MiB body, an HTML error page. Certificates that do
not verify are served by the emulator over TLS. Every handler test ends with the stats invariant.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ces_logging import CESClient, CESEndpointError, CESError, CESHandler, HandlerStats
from ces_logging._service.transport import requote_path
from ces_logging.emulator import Emulator

from .conftest import PROJECT, item

Answer = Callable[[bytes, bytes], bytes]  # (request head, body) -> the raw answer


def ids_for(body: bytes) -> bytes:
    return json.dumps(
        [{"event_id": f"ev{i}", "event_name": e["event_name"]} for i, e in enumerate(json.loads(body))]
    ).encode()


def http(status: str, body: bytes = b"", headers: dict[str, str] | None = None, length: bool = True) -> bytes:
    head = [f"HTTP/1.1 {status}"]
    for k, v in (headers or {}).items():
        head.append(f"{k}: {v}")
    if length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Gateway:
    """A raw HTTP/1.1 server on 127.0.0.1: each request is answered by ``answer(head, body)``; what arrived is
    kept in ``requests``. Keeps connections alive unless the answer closes them."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, bytes]] = []
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        buf = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        n = int(v)
                while len(buf) < n:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:n], buf[n:]
                with self.lock:
                    self.requests.append((head, body))
                out = self.answer(head, body)
                conn.sendall(out)
                if b"connection: close" in out.lower().split(b"\r\n\r\n")[0]:
                    return
        except OSError:
            return
        finally:
            conn.close()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def gateway() -> Iterator[Callable[[Answer], Gateway]]:
    made: list[Gateway] = []

    def make(answer: Answer) -> Gateway:
        g = Gateway(answer)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def settle(h: CESHandler, timeout: float = 20.0) -> HandlerStats:
    h.flush(timeout=timeout)
    s = h.stats
    assert s.sent + s.dropped + s.queued + s.folded == s.received, s
    assert s.queued == 0, s
    return s


def handler(url: str, name: str, **kw: object) -> CESHandler:
    return CESHandler(project_id=PROJECT, endpoint=url, event_name=name, flush_interval=0.05, timeout=3,
                      grace_period=1, **kw)  # type: ignore[arg-type]  # fmt: skip


# --- compressed answers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "deflate-raw"])
def test_a_compressed_201_is_read(
    gateway: Callable[[Answer], Gateway], isolated_logger: logging.Logger, coding: str
) -> None:
    """A gateway that compresses whatever Accept-Encoding says: the 201 is decoded, the events count as sent
    once (no retry), flush returns True."""

    def answer(head: bytes, body: bytes) -> bytes:
        ids = ids_for(body)
        if coding == "gzip":
            data, name = gzip.compress(ids), "gzip"
        elif coding == "deflate":
            data, name = zlib.compress(ids), "deflate"
        else:
            c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            data, name = c.compress(ids) + c.flush(), "deflate"
        return http("201 Created", data, {"Content-Encoding": name, "Content-Type": "application/json"})

    g = gateway(answer)
    h = handler(g.url, "gz")
    isolated_logger.addHandler(h)
    for i in range(30):
        isolated_logger.error("compressed %d", i)
    assert h.flush(timeout=20)
    s = settle(h)
    assert s.sent == 30 and s.retries == 0 and g.count == s.batches, (s, g.count)
    client = CESClient(PROJECT, endpoint=g.url, timeout=3)
    assert [r.event_id for r in client.report_events([item(), item("b")])] == ["ev0", "ev1"]
    h.close()


def test_a_gzip_bomb_is_cut(gateway: Callable[[Answer], Gateway]) -> None:
    """A small gzip answer that unpacks to gigabytes is read no further than the body limit."""
    bomb = gzip.compress(b"[" + b" " * (64 << 20) + b"]")
    g = gateway(lambda head, body: http("201 Created", bomb, {"Content-Encoding": "gzip"}))
    client = CESClient(PROJECT, endpoint=g.url, timeout=10)
    status, content = client.send_events_body(json.dumps([item()]).encode())
    assert status == 201 and len(content) <= 8 << 20


# --- the request line ---------------------------------------------------------------------------------------------


def test_an_endpoint_path_with_a_space_is_percent_encoded(
    gateway: Callable[[Answer], Gateway], isolated_logger: logging.Logger
) -> None:
    """An endpoint with a path prefix holding a space (and a ready escape): the request line carries the path
    as requests would send it, on both the hot path and requests' path."""
    g = gateway(lambda head, body: http("201 Created", ids_for(body)))
    h = handler(f"{g.url}/my gateway/a%41%2F", "space")
    isolated_logger.addHandler(h)
    isolated_logger.error("through a prefix")
    assert h.flush(timeout=10)
    settle(h)
    want = f"POST /my%20gateway/aA%2F/V1.0/{PROJECT}/events HTTP/1.1".encode()
    assert g.requests[0][0].split(b"\r\n")[0] == want, g.requests[0][0]
    h.close()
    import requests.utils

    for path in ["/a b/c", "/a%41%2f%zz", "/ü/x?", "/%7e~/%20"]:
        assert requote_path(path) == requests.utils.requote_uri(path), path


# --- 2xx without a body, 3xx, huge bodies -------------------------------------------------------------------------


@pytest.mark.parametrize("answer_kind", ["204", "201-empty", "201-chunked-empty"])
def test_a_2xx_without_a_body_is_delivered(
    gateway: Callable[[Answer], Gateway], isolated_logger: logging.Logger, answer_kind: str
) -> None:
    raw = {
        "204": http("204 No Content", length=False),
        "201-empty": http("201 Created"),
        "201-chunked-empty": http("201 Created", b"0\r\n\r\n", {"Transfer-Encoding": "chunked"}, length=False),
    }[answer_kind]
    g = gateway(lambda head, body: raw)
    h = handler(g.url, "nobody")
    isolated_logger.addHandler(h)
    for i in range(5):
        isolated_logger.error("no body %d", i)
    assert h.flush(timeout=10)
    s = settle(h)
    assert s.sent == 5 and s.retries == 0, s
    h.close()


@pytest.mark.parametrize("status", ["301 Moved Permanently", "307 Temporary Redirect", "302 Found"])
def test_a_redirect_is_a_configuration_error_naming_its_location(
    gateway: Callable[[Answer], Gateway],
    isolated_logger: logging.Logger,
    capfd: pytest.CaptureFixture[str],
    status: str,
) -> None:
    """A 3xx is not followed and not retried as an outage: the batch is dropped as ``config`` at once, with
    one line naming the Location; direct callers get CESEndpointError."""
    where = "https://ces.other-region.example.com/V1.0/x/events"
    g = gateway(lambda head, body: http(status, b"<html>moved</html>", {"Location": where}))
    h = handler(g.url, "redirect")
    isolated_logger.addHandler(h)
    for i in range(5):
        isolated_logger.error("redirected %d", i)
    assert not h.flush(timeout=10)
    s = settle(h)
    assert s.dropped_by_reason == {"config": 5} and s.retries == 0, s
    assert 1 <= g.count <= 5, g.count  # one request a batch, none sent again
    err = capfd.readouterr().err
    assert where in err and "redirect" in err and "201" not in err, err
    client = CESClient(PROJECT, endpoint=g.url, timeout=3)
    with pytest.raises(CESEndpointError, match=r"redirect to https://ces\.other-region") as e:
        client.report_events([item()])
    assert e.value.status == int(status[:3]) and not e.value.retryable
    with pytest.raises(CESEndpointError, match="redirect"):
        client.event_detail("x")  # requests' path too
    h.close()


def test_a_201_with_a_9_mib_body_is_delivered(
    gateway: Callable[[Answer], Gateway], isolated_logger: logging.Logger
) -> None:
    """An answer longer than anything a POST of events needs: read up to the limit, the connection dropped,
    the events count as sent once."""
    big = b"[" + b'{"event_id":"x","event_name":"y"},' * (9 * 2**20 // 34) + b"{}]"
    g = gateway(lambda head, body: http("201 Created", big))
    h = handler(g.url, "big")
    isolated_logger.addHandler(h)
    for i in range(3):
        isolated_logger.error("big answer %d", i)
    assert h.flush(timeout=20)
    s = settle(h)
    assert s.sent == 3 and s.retries == 0 and g.count == s.batches, (s, g.count)
    h.close()


def test_a_2xx_html_page_is_not_taken_for_delivery(gateway: Callable[[Answer], Gateway]) -> None:
    """A portal's 200 with HTML: an error with the true status and the page's words on one line; a hostile
    error body's terminal escapes are not passed on."""
    page = b"<html>\n<head><title>Login</title></head>\n<body>\n<p>Please sign in</p>\n</body>\n</html>\n"
    g = gateway(lambda head, body: http("200 OK", page, {"Content-Type": "text/html"}))
    client = CESClient(PROJECT, endpoint=g.url, timeout=3)
    with pytest.raises(CESError) as e:
        client.send_events_body(json.dumps([item()]).encode())
    text = str(e.value)
    assert text.startswith("HTTP 200: the service answered 200 without an array of events") and "\n" not in text
    assert "Please sign in" in text
    g.answer = lambda head, body: http("502 Bad Gateway", b"evil \x1b[2J\x1b]0;owned\x07 page\r\nline two")
    with pytest.raises(CESError) as e:
        client.send_events_body(json.dumps([item()]).encode())
    assert str(e.value).endswith("evil ?[2J?]0;owned? page line two"), str(e.value)


# --- error bodies ------------------------------------------------------------------------------------------------


def test_an_html_error_page_is_one_cut_line(
    gateway: Callable[[Answer], Gateway],
    isolated_logger: logging.Logger,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """A gateway's 13-line HTML 502 page: printed on one line, cut (with a spool, the first failure
    is said at once: "events wait in the spool")."""
    page = (
        "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n"
        + "<hr><center>nginx</center>\n" * 6
        + "<p>"
        + "filler " * 200
        + "</p>\n</body>\n</html>\n"
    ).encode()
    assert page.count(b"\n") >= 13
    calls = {"n": 0}

    def answer(head: bytes, body: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] <= 1:
            return http("502 Bad Gateway", page, {"Content-Type": "text/html"})
        return http("201 Created", ids_for(body))

    g = gateway(answer)
    h = handler(g.url, "html", spool_dir=str(tmp_path / "spool"))
    isolated_logger.addHandler(h)
    isolated_logger.error("after a bad gateway")
    assert h.flush(timeout=30)
    s = settle(h)
    assert s.sent == 1 and s.retries == 1, s
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "502" in line]
    assert len(lines) == 1, err
    assert "502 Bad Gateway" in lines[0] and "filler " * 50 not in lines[0] and len(lines[0]) < 600, lines[0]
    h.close()


# --- TLS verification ---------------------------------------------------------------------------------------------


@pytest.fixture
def tls_emu(tls_files: tuple[Path, Path]) -> Iterator[tuple[Emulator, Path]]:
    key, cert = tls_files
    with Emulator(tls_cert=str(cert), tls_key=str(key)) as emu:
        yield emu, cert


@pytest.mark.parametrize("case", ["unknown CA", "wrong host name"])
def test_a_certificate_that_does_not_verify_is_permanent(
    tls_emu: tuple[Emulator, Path],
    isolated_logger: logging.Logger,
    capfd: pytest.CaptureFixture[str],
    case: str,
) -> None:
    """Not an outage: the batch is dropped as ``config`` at once (no retries), with one line that names the
    certificate problem; direct callers get a CESEndpointError (also a CESTransportError with SSLError)."""
    emu, cert = tls_emu
    verify: bool | str
    if case == "unknown CA":
        url, verify, words = emu.url, True, "self-signed certificate"
    else:
        url, verify, words = emu.url.replace("127.0.0.1", "localhost"), str(cert), "Hostname mismatch"
    h = handler(url, "tls", verify=verify)
    isolated_logger.addHandler(h)
    for i in range(4):
        isolated_logger.error("tls %d", i)
    assert not h.flush(timeout=10)
    s = settle(h)
    assert s.dropped_by_reason == {"config": 4} and s.retries == 0, s
    err = capfd.readouterr().err
    assert words in err and "did not verify" in err and err.count("did not verify") == 1, err
    assert emu.count() == 0
    client = CESClient(PROJECT, endpoint=url, verify=verify, timeout=5)
    with pytest.raises(CESEndpointError, match=words) as e:
        client.report_events([item()])
    assert not e.value.retryable
    with pytest.raises(CESEndpointError, match=words):
        client.event_detail("x")  # requests' path names it too
    h.close()


def test_an_expired_certificate_is_named(tmp_path: Path) -> None:
    """An expired certificate (signed by openssl with dates in 2020) is named as expired."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    (tmp_path / "index.txt").touch()
    (tmp_path / "serial").write_text("01\n")
    (tmp_path / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\n"
        "default_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n"
        "[req]\ndistinguished_name = dn\n[dn]\n"
    )
    steps = [
        ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "r.csr",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        ["openssl", "ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "k.pem", "-in", "r.csr",
         "-out", "c.pem", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z"],
    ]  # fmt: skip
    for cmd in steps:
        if subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=60).returncode != 0:
            pytest.skip("openssl could not make an expired certificate")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    with Emulator(tls_cert=str(cert), tls_key=str(key)) as emu:
        client = CESClient(PROJECT, endpoint=emu.url, verify=str(cert), timeout=5)
        with pytest.raises(CESEndpointError, match="certificate has expired"):
            client.report_events([item()])
        assert emu.count() == 0
