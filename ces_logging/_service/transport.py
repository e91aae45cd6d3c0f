"""The worker's one hot request, a signed ``POST`` of a ready JSON body, without ``requests``.

Why a transport of its own: the worker sends at most 100 events a request (the API's limit), so what one
request costs is paid once every 100 events, and through ``requests`` + ``urllib3`` it cost 0.45-0.7 ms of CPU
(header dicts, URL parsing, pool keys, retries objects, the email-based header parser): a third of the worker's
CPU per event (benchmarks/RESULTS.md, the CPU split); ``http.client`` alone still spent half of that parsing
the answer's headers with the email package. So the standard library makes the connection (``socket``, the
TLS wrapping of ``ssl``; ``http.client``'s ``CONNECT`` for a proxy tunnel), and ``exchange`` below writes the
request and reads the answer (status, headers, a body by Content-Length, chunked or to the end: HTTP/1.1 as
RFC 9112 says, nothing more). 0.14 ms a POST. This module keeps what ``requests`` gave the hot path and nothing
else:

- TLS verification as ``requests`` does it: the CA bundle ``requests`` would use (``verify=True``: certifi's,
  or ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` as resolved by the session; a path: that file or directory),
  host name checked; ``verify=False`` only where the caller asked for it.
- Proxies from the environment, resolved once by ``requests`` (``NO_PROXY`` included): an ``http://`` proxy
  carries an ``https`` endpoint through a ``CONNECT`` tunnel (with its ``user:password`` as Basic auth). Any
  other proxy (socks, an ``https://`` proxy, a plain-http endpoint through a proxy) is not handled here:
  ``usable`` says no and the client keeps using ``requests`` for it.
- The total deadline (``watchdog.py``): every socket of the exchange is cut when the deadline passes, so a
  server that trickles bytes cannot hold a sender past ``timeout``.
- The error model: a non-2xx answer is handed back as (status, body, headers) for ``CESError.from_response``;
  a transport failure becomes ``TransportFailure`` with a text that names the failure, never a header value;
  a certificate that does not verify becomes ``CertificateFailure`` (a configuration problem, not an outage).
- What ``requests`` does with an answer and a URL: a gzip or deflate body is decoded (some gateways compress
  whatever ``Accept-Encoding`` says), a body longer than ``MAX_BODY`` is cut there (the connection is then not
  reused: nothing in an answer to a POST of events needs more), and the endpoint's path is percent-encoded as
  ``requests.utils.requote_uri`` does (``requote_path``), so that a prefix with a space still makes a request.

Connections are kept alive, in a small pool (one per sender thread at a time). A pooled connection that the
server has closed meanwhile is noticed before use (it is readable: EOF) and replaced, as ``urllib3`` does. A
failure after the request went out is the caller's to retry (the worker's back-off, counted in ``retries``),
as it was over ``requests``, which does not resend either.

Its imports are the standard library's (``http.client``, which loads the email package, only for a proxy
tunnel): a process's first send over this path must not load ``requests`` or ``urllib3`` (see client.py).
"""

from __future__ import annotations

import base64
import contextlib
import encodings.idna  # noqa: F401 - socket encodes a host name with it at a connect; here, not on our thread
import os
import select
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ..errors import CertificateFailure, TransportFailure
from .watchdog import total_deadline, watch

MAX_IDLE = 8  # pooled idle connections kept (one per sender; the throttle allows a few senders)

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")


def requote_path(path: str) -> str:
    """A URL path percent-encoded as ``requests.utils.requote_uri`` does: escapes of unreserved characters
    decoded, every other escape kept, anything unsafe (a space, non-ASCII) encoded; a ``%`` that starts no
    escape is itself encoded. So the hot POST goes to (and is signed for) the path ``requests`` would use."""
    parts = path.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        h = part[:2]
        if len(h) < 2 or not set(h) <= _HEX:
            return quote(path, safe="!#$&'()*+,/:;=?@[]~")  # a stray %: encoded too, as requests does
        c = chr(int(h, 16))
        out.append(c + part[2:] if c in _UNRESERVED else "%" + part)
    return quote("".join(out), safe="!#$%&'()*+,/:;=?@[]~")


def certificate_problem(exc: BaseException) -> str | None:
    """The words of a certificate verification failure anywhere in ``exc``'s chain (``requests`` wraps it in
    urllib3's errors), e.g. "certificate has expired"; None when it is no such failure."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return str(e.verify_message or e.reason or "verification failed")
        todo.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *e.args])
    return None


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """The context ``requests`` would verify with: ``True`` certifi's bundle, a path that file or directory,
    ``False`` none (the caller's explicit choice)."""
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if verify is True:
        import certifi  # requests' own dependency: its default bundle

        return ssl.create_default_context(cafile=certifi.where())
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)


def _proxy_parts(endpoint_scheme: str, proxies: Mapping[str, str]) -> tuple[bool, tuple[str, int, str] | None]:
    """(usable here, the proxy's (host, port, Proxy-Authorization or "")) for the endpoint's scheme."""
    proxy = proxies.get(endpoint_scheme) or proxies.get("all")
    if not proxy:
        return True, None
    try:
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        port = p.port  # raises on a malformed one ("user:pa/ss@host" reads "pa" as the port)
    except ValueError:
        return False, None  # requests' to handle and to report (it names the error, never the URL)
    if p.scheme != "http" or endpoint_scheme != "https" or not p.hostname:
        return False, None
    auth = ""
    if p.username is not None:
        pair = f"{unquote(p.username)}:{unquote(p.password or '')}".encode("latin-1", "replace")
        auth = "Basic " + base64.b64encode(pair).decode("ascii")
    return True, (p.hostname, port or 80, auth)


class FastPost:
    """POSTs of ready, signed bodies to one endpoint, over kept-alive connections."""

    def __init__(self, endpoint: str, verify: bool | str, proxies: Mapping[str, str]) -> None:
        u = urlsplit(endpoint)
        self.scheme = u.scheme
        self.host = u.hostname or ""
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.usable, self._proxy = _proxy_parts(u.scheme, proxies)
        self._verify = verify
        self._ctx: ssl.SSLContext | None = None  # made at first use: loading a CA bundle costs a few ms
        self.netloc = u.netloc.rpartition("@")[2]
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget the pooled connections (after ``fork``: the parent's sockets are not the child's to use;
        closing our copy of a descriptor does not disturb the parent's connection) and renew the lock."""
        idle, self._idle = self._idle, []
        self._lock = threading.Lock()
        for sock in idle:
            sock.close()

    def _connect(self, timeout: float) -> socket.socket:
        """A new connection, TLS included, each socket under the current deadline (the TCP one before the TLS
        handshake: a stalled handshake is cut too). What ``http.client`` does to connect, without loading it."""
        if self._proxy is not None:
            return self._connect_tunnel(timeout)
        sock = socket.create_connection((self.host, self.port), timeout)
        watch(sock)
        try:
            with contextlib.suppress(OSError):  # not every system has it; a latency matter only
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                sock = self._context().wrap_socket(sock, server_hostname=self.host)
                watch(sock)  # the TLS socket: wrapping detached the raw one watched above (its descriptor is gone)
        except BaseException:
            sock.close()
            raise
        return sock

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = tls_context(self._verify)
        return self._ctx

    def _connect_tunnel(self, timeout: float) -> socket.socket:
        """An https connection through an ``http://`` proxy: ``http.client`` makes it (its ``CONNECT``, its
        TLS wrapping: the standard library's); the exchange is ours, see ``exchange``."""
        import http.client  # here: it loads the email package, which no direct connection needs

        assert self._proxy is not None
        phost, pport, pauth = self._proxy
        conn = http.client.HTTPSConnection(phost, pport, timeout=timeout, context=self._context())
        conn.set_tunnel(self.host, self.port, {"Proxy-Authorization": pauth} if pauth else None)
        create: Callable[..., socket.socket] = conn._create_connection  # type: ignore[attr-defined]

        def connect_watched(*args: Any, **kw: Any) -> socket.socket:
            sock = create(*args, **kw)
            watch(sock)  # before the CONNECT and the TLS handshake: a stalled one is cut by the deadline too
            return sock

        conn._create_connection = connect_watched  # type: ignore[attr-defined]
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        sock: socket.socket = conn.sock
        watch(sock)  # the TLS socket: wrapping detached the raw one watched above (its descriptor is gone)
        return sock

    def _take(self) -> socket.socket | None:
        with self._lock:
            while self._idle:
                sock = self._idle.pop()
                if not _dropped(sock):
                    return sock
                sock.close()
        return None

    def _give_back(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(sock)
                return
        sock.close()

    def post(self, path: str, headers: Mapping[str, str], body: bytes, timeout: float) -> tuple[int, bytes, Any]:
        """(status, body, headers) of the answer; raises ``TransportFailure``. Every socket it uses is cut
        ``timeout`` seconds after the call starts."""
        lines = [f"POST {path} HTTP/1.1"]
        has_host = False
        for k, v in headers.items():
            has_host = has_host or k.lower() == "host"
            lines.append(f"{k}: {v}")
        if not has_host:
            lines.append(f"Host: {self.netloc}")
        if any("\r" in line or "\n" in line for line in lines):
            raise TransportFailure("ValueError")  # a header value with a line break: named, never quoted
        lines.append(f"Accept-Encoding: identity\r\nContent-Length: {len(body)}\r\n\r\n")
        text = "\r\n".join(lines)
        try:
            head = text.encode("latin-1")
        except UnicodeEncodeError:
            raise TransportFailure("UnicodeEncodeError") from None  # a header value HTTP cannot carry
        try:
            with total_deadline(timeout):
                sock = self._take()
                if sock is None:
                    sock = self._connect(timeout)
                else:
                    sock.settimeout(timeout)
                    watch(sock)
                try:
                    status, data, answer, keep = exchange(sock, head + body)
                except BaseException:
                    sock.close()
                    raise
                if keep:
                    self._give_back(sock)
                else:
                    sock.close()
                return status, decode_body(data, answer.get("content-encoding", "")), answer
        except TransportFailure:
            raise
        except ssl.SSLCertVerificationError as e:
            raise CertificateFailure(str(e.verify_message or e.reason or "verification failed")) from None
        except Exception as e:
            raise TransportFailure(describe(e)) from None


class ProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.x as this module reads it, or it stopped in the middle."""


MAX_HEAD = 65_536
MAX_BODY = 8 << 20  # an answer to a POST of events is an array of ids: far smaller; longer ones are cut


def decode_body(data: bytes, encoding: str) -> bytes:
    """A body in its ``Content-Encoding`` undone (gzip, deflate: zlib's or raw, as ``urllib3`` reads it), at
    most ``MAX_BODY`` bytes of it (a small answer can unpack to gigabytes). Any other coding is left as it is
    (the caller finds no JSON in it)."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip() and c.strip().lower() != "identity"]
    for coding in reversed(codings):  # the last one applied is undone first
        if coding in ("gzip", "x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        elif coding == "deflate":
            wbits = zlib.MAX_WBITS if data[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib's wrapper, or raw
        else:
            return data
        try:
            data = zlib.decompressobj(wbits).decompress(data, MAX_BODY)
        except zlib.error:
            raise TransportFailure(f"ConnectionError: the answer's {coding} body is corrupt") from None
    return data


class _Reader:
    """Reads an answer from a socket: what has arrived is kept in one buffer."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _more(self) -> bool:
        chunk = self.sock.recv(65_536)
        if chunk:
            self.buf += chunk
        return bool(chunk)

    def until(self, sep: bytes, limit: int) -> bytes:
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ProtocolError("the answer's head is too long")
            start = max(0, len(self.buf) - len(sep) + 1)
            if not self._more():
                raise ProtocolError("the connection closed before a complete answer")

    def line(self, limit: int) -> bytes:
        """One line without its end: CRLF, or a bare LF (RFC 9112 section 2.2: a recipient MAY take it)."""
        out = self.until(b"\n", limit)
        return out[:-1] if out[-1:] == b"\r" else out

    def head(self) -> list[str]:
        """The lines of an answer's head, up to the empty line."""
        lines: list[str] = []
        size = 0
        while True:
            line = self.line(MAX_HEAD - size)
            size += len(line) + 2
            if not line:
                return lines
            lines.append(line.decode("latin-1"))

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise ProtocolError("the connection closed before a complete answer")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def to_end(self) -> bytes:
        """The rest of the connection, at most ``MAX_BODY`` bytes of it (the connection is then done with)."""
        while len(self.buf) <= MAX_BODY and self._more():
            pass
        out = bytes(self.buf[:MAX_BODY])
        self.buf.clear()
        return out


def exchange(sock: socket.socket, request: bytes) -> tuple[int, bytes, dict[str, str], bool]:
    """Send one request and read its answer: (status, body, headers with lower-case names, keep-alive). The
    body by ``Content-Length``, chunked, or to the end of the connection (HTTP/1.1, RFC 9112 section 6.3)."""
    sock.sendall(request)
    r = _Reader(sock)
    while True:
        head = r.head()
        version, _, code = (head[0] if head else "").partition(" ")
        if not version.startswith("HTTP/1.") or not code[:3].isdigit():
            raise ProtocolError("the answer is not HTTP/1.x")
        status = int(code[:3])
        if not 100 <= status < 200 or status == 101:
            break  # 1xx: an interim answer (never asked for here); the real one follows
    lines: list[str] = []
    for line in head[1:]:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] = f"{lines[-1]} {line.strip()}"  # obsolete line folding: a space (RFC 9112 section 5.2)
        else:
            lines.append(line)
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    conn = headers.get("connection", "").lower()
    keep = "close" not in conn and (version != "HTTP/1.0" or "keep-alive" in conn)
    if status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        total = 0
        while True:
            digits = r.line(1024).split(b";")[0].strip()
            try:
                size = int(digits, 16)
            except ValueError:
                raise ProtocolError("a malformed chunk size") from None
            if size == 0:
                r.head()  # trailers, up to the empty line
                break
            if total + size > MAX_BODY:  # cut: the rest is not read, the connection not reused
                parts.append(r.exactly(min(size, MAX_BODY - total)))
                return status, b"".join(parts), CaseInsensitiveHeaders(headers), False
            total += size
            parts.append(r.exactly(size))
            if r.line(2):
                raise ProtocolError("a malformed chunked body")
        body = b"".join(parts)
    elif "content-length" in headers:
        n = headers["content-length"].split(",")[0].strip()
        if not n.isdigit():
            raise ProtocolError("a malformed Content-Length")
        if int(n) > MAX_BODY:  # cut: the rest is not read, the connection not reused
            return status, r.exactly(MAX_BODY), CaseInsensitiveHeaders(headers), False
        body = r.exactly(int(n))
    else:
        body, keep = r.to_end(), False
    if r.buf:
        keep = False  # bytes after the answer: never reuse a connection out of step
    return status, body, CaseInsensitiveHeaders(headers), keep


class CaseInsensitiveHeaders(dict[str, str]):
    """The answer's headers (names stored lower-case), looked up by any case: ``CESError.from_response``
    reads ``Retry-After`` and ``X-Request-Id``."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)


def _dropped(sock: socket.socket) -> bool:
    """A kept-alive socket that is readable before we sent anything has been closed by the server (EOF) or
    holds junk: either way it must not carry a request. Asked with ``poll`` where there is one, as ``urllib3``
    does (``select`` refuses descriptors above 1023, which a busy server's process has). Looked up at each call:
    gevent's patching replaces ``poll``, eventlet's removes it."""
    try:
        poll = getattr(select, "poll", None)
        if poll is not None:
            p = poll()
            p.register(sock, select.POLLIN)
            return bool(p.poll(0))
        return bool(select.select([sock], [], [], 0.0)[0])
    except (OSError, ValueError):
        return True


def describe(e: BaseException) -> str:
    """A failure's words for ``CESTransportError``, in ``requests``' vocabulary (``Timeout``, ``SSLError``,
    ``ConnectionError``). ``ValueError`` (http.client refusing a header value, whose text quotes the value)
    is named by its type alone."""
    name = type(e).__name__
    if isinstance(e, ValueError) and not isinstance(e, ssl.SSLError):
        return name
    if name == "Timeout" or isinstance(e, TimeoutError | socket.timeout):
        kind = "Timeout"
    elif isinstance(e, ssl.SSLError | ssl.CertificateError):
        kind = "SSLError"
    else:
        kind = "ConnectionError"
    what = kind if name == kind else f"{kind}: {name}"  # "Timeout", not "Timeout: Timeout"
    text = str(e)[:300]
    return f"{what}: {text}" if text else what
