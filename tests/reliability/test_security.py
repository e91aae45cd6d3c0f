"""Secrets and hostile endpoints, client side: credential values are checked before they can reach a header,
no error text carries one, the IAM password never travels in clear text to another host, and a server that
trickles its answer cannot make a call outlive its timeout (issue 15, and item 10 of issue 11).

Every test here runs over real HTTP on 127.0.0.1: the emulator, or a tiny server that answers one byte at a
time. The secrets used are in ``conftest.TEST_SECRETS``, so any that reached captured output fails the run.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ces_logging import CESClient, CESHandler, ConfigError, IAMPasswordTokenProvider
from ces_logging._service.auth import AKSKAuth, MetadataCredentialsProvider, TokenAuth
from ces_logging.emulator import Emulator
from ces_logging.errors import CESAuthError, CESError, CESTransportError, transport_error_text

from ..conftest import AK, PROJECT, SK, item, wait_for

TOKEN = "token-value-secret"
SEC_TOKEN = "SECRET-SECTOKEN-abcdef"


def assert_accounted(h: CESHandler) -> None:
    s = h.stats
    assert s.sent + s.dropped + s.queued == s.received
    assert wait_for(lambda: h.stats.queued == 0, timeout=10)


# --- credential values: stripped when safe, else a ConfigError that never quotes them ------------------------


def test_token_read_from_a_file_with_its_newline_works(tmp_path: object, isolated_logger: logging.Logger) -> None:
    """``token=open(path).read()`` keeps the newline: the handler strips it and every record lands (before:
    ``ValueError: Invalid header value b'...\\n'`` printed with the token, and every record dropped)."""
    with Emulator(token=TOKEN) as emu:
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, token=TOKEN + "\n", event_name="fromFile",
                       flush_interval=0.05)  # fmt: skip
        isolated_logger.addHandler(h)
        for i in range(5):
            isolated_logger.error("record %d", i)
        assert h.flush(timeout=10)
        assert h.stats.sent == 5 and h.stats.dropped == 0
        assert len(emu.events(PROJECT, "fromFile")) == 5
        assert_accounted(h)


def test_keys_and_security_token_with_surrounding_white_space_work() -> None:
    with Emulator(ak=AK, sk=SK, security_token=SEC_TOKEN) as emu:
        c = CESClient(PROJECT, endpoint=emu.url, ak=f" {AK}\n", sk=f"{SK}\r\n", security_token=f"{SEC_TOKEN}\n")
        c.report_events([item()])
        assert emu.count(PROJECT) == 1


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("token", "token-value\nsecret"),
        ("token", "token-value secret"),
        ("token", "token-value-secr\u00e9t"),
        ("sk", "SECRET-SK-0123\x00456789"),
        ("security_token", "SECRET-SECTOKEN\nabcdef"),
        ("ak", "AK\r\nX-Injected: 1"),
    ],
)
def test_a_credential_a_header_cannot_carry_is_a_config_error_that_never_quotes_it(field: str, bad: str) -> None:
    kwargs: dict[str, str] = {"token": bad} if field == "token" else {"ak": AK, "sk": SK, field: bad}
    with pytest.raises(ConfigError) as e:
        CESClient(PROJECT, endpoint="http://127.0.0.1:1", **kwargs)
    text = str(e.value)
    assert field in text and bad not in text
    for part in bad.split():
        assert len(part) < 4 or part not in text  # no piece of the value either


def test_a_token_provider_giving_a_bad_token_fails_without_quoting_it(
    isolated_logger: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    """A provider's value is checked per request: a CESAuthError naming no value, and the handler's error
    line on stderr holds no part of it either."""

    class BadProvider:
        def token(self) -> str:
            return TOKEN + "\n"

        def invalidate(self) -> None:
            pass

    with Emulator(token=TOKEN) as emu:
        c = CESClient(PROJECT, endpoint=emu.url, token_provider=BadProvider())
        with pytest.raises(CESAuthError) as e:
            c.report_events([item()])
        assert TOKEN not in str(e.value)
        h = CESHandler(project_id=PROJECT, endpoint=emu.url, token_provider=BadProvider(), flush_interval=0.05,
                       grace_period=0.5)  # fmt: skip
        isolated_logger.addHandler(h)
        isolated_logger.error("will not be sent")
        assert h.flush(timeout=5) is False  # accounted for (dropped), in time
        isolated_logger.removeHandler(h)
        h.close()
        assert_accounted(h)
        assert h.stats.sent == 0 and emu.count() == 0
    captured = capfd.readouterr()
    assert TOKEN not in captured.out + captured.err
    # the drop is said on stderr, as every drop is: one line naming the refused credentials
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("ces_logging:")]
    assert any("credentials refused" in ln and "1 event(s) dropped" in ln for ln in lines), captured.err


def test_a_header_value_refused_by_the_http_stack_never_reaches_the_error_text() -> None:
    """An auth object of the caller's own that puts a newline in a header: http.client raises a ValueError
    quoting the value; the client answers a CESTransportError that names only the exception's type."""

    class LeakyAuth(requests.auth.AuthBase):
        def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
            r.headers["X-Auth-Token"] = TOKEN + "\nX-Evil: 1"
            return r

    with Emulator() as emu:
        c = CESClient(PROJECT, endpoint=emu.url, auth=LeakyAuth())
        with pytest.raises(CESTransportError) as e:
            c.report_events([item()])
        assert emu.count() == 0
    assert TOKEN not in str(e.value) and "X-Evil" not in str(e.value)


def test_transport_error_text_blanks_credential_headers_and_url_passwords() -> None:
    headers = {"X-Auth-Token": TOKEN, "Authorization": "SDK-HMAC-SHA256 Access=AK, Signature=abcdef0123456789"}
    e = requests.ConnectionError(f"proxy http://u:pa55word-secret@proxy:3128 refused; {TOKEN}; abcdef0123456789")
    text = transport_error_text(e, headers)
    assert text.startswith("ConnectionError: ")
    for secret in (TOKEN, "pa55word-secret", "abcdef0123456789"):
        assert secret not in text
    assert transport_error_text(ValueError(f"Invalid header value b'{TOKEN}\\n'"), headers) == "ValueError"
    assert transport_error_text(requests.exceptions.InvalidHeader(TOKEN)) == "InvalidHeader"


# --- IAM: the password never travels in clear text to another host ----------------------------------------


def test_iam_password_provider_refuses_plain_http_to_another_host() -> None:
    with pytest.raises(ConfigError, match="plain http") as e:
        IAMPasswordTokenProvider("alice", "SECRET-PASSWORD-xyz", "dom", region="r", iam_endpoint="http://iam.example.com")
    assert "SECRET-PASSWORD-xyz" not in str(e.value)
    # The same escape hatch as the CES endpoint; loopback and https are fine as they are.
    IAMPasswordTokenProvider("a", "p", "d", region="r", iam_endpoint="http://iam.example.com", allow_insecure=True)
    IAMPasswordTokenProvider("a", "p", "d", region="r", iam_endpoint="http://127.0.0.1:1")
    IAMPasswordTokenProvider("a", "p", "d", region="r", iam_endpoint="https://iam.example.com")
    assert IAMPasswordTokenProvider("a", "p", "d", region="cn-north-4").iam_endpoint.startswith("https://")


# --- total deadlines: a trickling server cannot stretch a call --------------------------------------------


class Trickler:
    """A server on 127.0.0.1 that reads a request's head, then sends a valid answer one byte every
    ``interval`` seconds (a metadata service, IAM or CES gone wrong, or hostile)."""

    def __init__(
        self, status: str, body: bytes, headers: str = "", interval: float = 0.25, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.answer = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
        ).encode() + body
        self.interval = interval
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.tls: ssl.SSLContext | None = None
        if tls is not None:  # (key, certificate): the handshake is quick, the answer trickles
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(str(tls[1]), str(tls[0]))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.threads: list[threading.Thread] = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def seconds_to_answer(self) -> float:
        return len(self.answer) * self.interval

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                for b in self.answer:
                    if self.stop.wait(self.interval):
                        return
                    conn.sendall(bytes([b]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        self.sock.close()


@pytest.fixture
def trickle() -> Iterator[type[Trickler]]:
    made: list[Trickler] = []

    class Made(Trickler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            made.append(self)

    yield Made
    for t in made:
        t.close()


# A trickling server answers after 30+ s; a call under a deadline of 0.5-2 s must end long before that. The
# bound leaves room for a loaded machine (a busy core, four other test runs) and is still a third of the trickle,
# so a missing deadline fails it every time. The lower bounds: the call waits out its deadline (less a tenth:
# the deadline is met by socket timeouts whose rounding is not ours), it is not cut sooner.
WELL_BEFORE_THE_TRICKLE_S = 10.0


def timed(fn: object) -> tuple[float, BaseException | None]:
    t0 = time.monotonic()
    try:
        fn()  # type: ignore[operator]
    except BaseException as e:
        return time.monotonic() - t0, e
    return time.monotonic() - t0, None


METADATA_BODY = (
    b'{"credential": {"access": "TMPAK", "secret": "SECRET-SK-0123456789", '
    b'"securitytoken": "SECRET-SECTOKEN-abcdef", "expires_at": "2099-01-01T00:00:00Z"}}'
)


def test_metadata_provider_has_a_total_deadline(trickle: type[Trickler]) -> None:
    srv = trickle("200 OK", METADATA_BODY)
    assert srv.seconds_to_answer() > 30  # what the old per-read timeout let it take
    took, err = timed(lambda: MetadataCredentialsProvider(srv.url, timeout=1.0).credentials())
    assert isinstance(err, CESTransportError) and "Timeout" in str(err)
    assert 0.9 <= took < WELL_BEFORE_THE_TRICKLE_S, took


def test_handler_with_a_trickling_metadata_service_is_built_without_asking_it(
    trickle: type[Trickler], monkeypatch: pytest.MonkeyPatch, isolated_logger: logging.Logger,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """CESHandler() whose credentials would come from a metadata service that sends a byte every so often:
    built without a connection to it (construction never waits on the network), then the worker's fetch is
    cut at its 2 s, and the record is counted as ``no_credentials`` with a line naming what to set."""
    srv = trickle("200 OK", METADATA_BODY)
    monkeypatch.setenv("CES_METADATA_URL", srv.url)
    h = CESHandler(project_id=PROJECT, endpoint="http://127.0.0.1:1", flush_interval=0.05)
    assert len(srv.threads) == 1, "construction connected to the metadata service"  # the accept thread only
    isolated_logger.addHandler(h)
    isolated_logger.error("one")
    took, _ = timed(lambda: h.flush(timeout=WELL_BEFORE_THE_TRICKLE_S))
    s = h.stats
    assert s.dropped_by_reason == {"no_credentials": 1} and s.sent + s.dropped + s.queued == s.received == 1, s
    assert 1.8 <= took < WELL_BEFORE_THE_TRICKLE_S, took  # the fetch waited out its deadline, no longer
    err = capfd.readouterr().err
    assert "1 event(s) dropped: no credentials found" in err and "HUAWEICLOUD_SDK_AK" in err, err
    assert "SECRET" not in err
    isolated_logger.removeHandler(h)
    h.close()


def test_iam_provider_has_a_total_deadline(trickle: type[Trickler]) -> None:
    srv = trickle("201 Created", b'{"token": {"expires_at": "2099-01-01T00:00:00Z"}}', "X-Subject-Token: MIIabc\r\n")
    prov = IAMPasswordTokenProvider("alice", "SECRET-PASSWORD-xyz", "dom", region="r", iam_endpoint=srv.url,
                                    timeout=1.0)  # fmt: skip
    took, err = timed(prov.token)
    assert isinstance(err, CESTransportError) and 0.9 <= took < WELL_BEFORE_THE_TRICKLE_S, (err, took)
    assert "SECRET-PASSWORD-xyz" not in str(err)


@pytest.mark.parametrize("call", ["post", "get"])
def test_a_new_tls_connection_has_the_total_deadline_too(
    trickle: type[Trickler], tls_files: tuple[Path, Path], call: str
) -> None:
    """Over TLS the socket that is read is the wrapped one, not the raw socket the handshake began on (whose
    descriptor wrapping gives away): both transports (the POST's own, requests' for the GET) put it under the
    deadline, so a server trickling its answer over a fresh TLS connection is cut at the timeout too."""
    body = b'[{"event_id": "ev1", "event_name": "x"}]' if call == "post" else b'{"event_info": [], "meta_data": {}}'
    srv = trickle("201 Created" if call == "post" else "200 OK", body + b" " * 100, tls=tls_files)
    assert srv.seconds_to_answer() > 30
    c = CESClient(PROJECT, endpoint=srv.url, timeout=1.0, verify=str(tls_files[1]))
    fn = (lambda: c.report_events([item()])) if call == "post" else (lambda: c.event_detail("x"))
    took, err = timed(fn)
    assert isinstance(err, CESTransportError) and "total deadline" in str(err)
    assert 0.9 <= took < WELL_BEFORE_THE_TRICKLE_S, took


@pytest.mark.parametrize("call", ["post", "get"])
def test_client_post_and_get_have_a_total_deadline(trickle: type[Trickler], call: str) -> None:
    body = b'[{"event_id": "ev1", "event_name": "x"}]' if call == "post" else b'{"event_info": [], "meta_data": {}}'
    srv = trickle("201 Created" if call == "post" else "200 OK", body + b" " * 100)
    c = CESClient(PROJECT, endpoint=srv.url, timeout=1.0)
    fn = (lambda: c.report_events([item()])) if call == "post" else (lambda: c.event_detail("x"))
    took, err = timed(fn)
    assert isinstance(err, CESTransportError) and "total deadline" in str(err)
    assert 0.9 <= took < WELL_BEFORE_THE_TRICKLE_S, took
    # A well-behaved server answering well within the deadline is not cut, and its connection is reused.
    with Emulator() as emu:
        ok = CESClient(PROJECT, endpoint=emu.url, timeout=1.0)
        for _ in range(3):
            ok.report_events([item()])
            time.sleep(0.01)
        time.sleep(1.2)  # past the earlier requests' deadlines: the watchdog must not cut the pooled socket
        ok.report_events([item()])
        assert emu.count() == 4 and emu.stats().get("status_201") == 4


def test_handler_flush_and_close_are_not_held_by_a_trickling_endpoint(
    trickle: type[Trickler], isolated_logger: logging.Logger
) -> None:
    """Each POST gives up at the 0.5 s timeout, so close() ends within its grace period and the worker
    stops, instead of waiting for the trickle (30+ s); every record is accounted for."""
    srv = trickle("201 Created", b'[{"event_id": "ev1", "event_name": "x"}]' + b" " * 100)
    h = CESHandler(project_id=PROJECT, endpoint=srv.url, timeout=0.5, flush_interval=0.05, grace_period=1.0)
    isolated_logger.addHandler(h)
    isolated_logger.error("one")
    t0 = time.monotonic()
    assert h.flush(timeout=1.5) is False  # not delivered, and flush says so at its deadline
    took_flush = time.monotonic() - t0
    assert 1.4 <= took_flush < WELL_BEFORE_THE_TRICKLE_S, took_flush
    isolated_logger.removeHandler(h)
    t0 = time.monotonic()
    h.close()  # raises nothing
    took_close = time.monotonic() - t0
    assert took_close < WELL_BEFORE_THE_TRICKLE_S, took_close
    assert wait_for(lambda: not h._worker.alive, timeout=5)
    assert_accounted(h)
    assert h.stats.sent == 0 and h.stats.dropped == 1


def test_errors_of_a_refused_credential_are_ces_errors() -> None:
    """What a caller catches: ConfigError at construction, CESError after; never a bare ValueError."""
    with pytest.raises(ConfigError):
        TokenAuth("a b")
    with pytest.raises(ConfigError):
        AKSKAuth(AK, SK, "tok en")
    assert issubclass(CESAuthError, CESError)
