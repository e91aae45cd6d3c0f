"""A local Cloud Eye event service: a real HTTP server over a SQLite store.

Routes (as the service): ``POST /V1.0/{project_id}/events``, ``GET /V1.0/{project_id}/event/{event_name}``,
``GET /V1.0/{project_id}/events`` (event kinds with counts). Optional stand-ins for what a client meets on
the way: IAM's ``POST /v3/auth/tokens`` (with ``iam_users``) and the ECS metadata service's
``GET /openstack/latest/securitykey`` (with ``metadata=True``). Admin routes for tests under ``/_emulator/``:
``faults`` (POST to add, DELETE to clear), ``stats``, ``reset``, ``revoke``; they need the same credentials
as the API when the emulator has any (or the in-process ``admin_token``), and are open in open mode.

Hostile clients: a malformed request gets a 4xx and never a 500; each read waits at most ``idle_timeout`` and
a whole request must arrive within ``request_timeout`` (so no connection holds a thread for long); at most
``max_connections`` connections are served at once, the next ones get a 503 and are closed.

Validation uses the field rules of ``ces_logging.events``; AK/SK verification uses the signing functions of
``ces_logging._service.auth``: one rule, one place.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .._service import auth as signing
from ..events import MAX_BODY_BYTES, PROJECT_ID, default_sub_event_type, validate_query, validate_report
from . import console
from .store import EventStore


@dataclass
class Fault:
    """What the next ``count`` matching requests get instead of (or on top of) a normal answer."""

    count: int = 1
    status: int | None = None  # answer this status without storing
    retry_after: str | None = None
    delay: float = 0.0  # seconds before answering
    drop: bool = False  # close the connection without an answer
    store: bool = False  # process the request first (so it lands), then delay/drop/answer
    reject_matching: str | None = None  # 400 for a body holding this text (a rule the emulator lacks)
    method: str = "POST"  # POST: reports; GET: queries
    seconds: float = 0.0  # > 0: every matching request for this long (an outage), whatever the count
    _until: float = 0.0

    def __post_init__(self) -> None:
        if self.seconds > 0:
            self._until = time.monotonic() + self.seconds


@dataclass
class _TempKey:
    sk: str
    security_token: str | None
    expires_at: float | None


class EmulatorState:
    """Everything the handler threads share: store, credentials, faults, counters."""

    def __init__(
        self,
        store: EventStore,
        *,
        ak: str | None,
        sk: str | None,
        security_token: str | None,
        token: str | None,
        iam_users: dict[tuple[str, str], str] | None,
        metadata: bool,
        metadata_ttl: float,
        token_ttl: float,
    ) -> None:
        self.store = store
        self.lock = threading.Lock()
        self.keys: dict[str, _TempKey] = {}
        if ak or sk:
            if not (ak and sk):
                raise ValueError("the emulator needs both ak and sk to verify signatures")
            self.keys[ak] = _TempKey(sk, security_token, None)
        self.tokens: dict[str, float | None] = {token: None} if token else {}
        self.iam_users = dict(iam_users or {})
        self.metadata = metadata
        self.metadata_ttl = metadata_ttl
        self.token_ttl = token_ttl
        self.auth_required = bool(self.keys or self.tokens or self.iam_users or metadata)
        # Accepted on the admin routes only, for the in-process ``Emulator.admin`` helper; never printed.
        self.admin_token = secrets.token_urlsafe(32)
        self.faults: list[Fault] = []
        self.stats: Counter[str] = Counter()

    def take_fault(self, method: str, body: bytes) -> Fault | None:
        with self.lock:
            for f in list(self.faults):
                if f.reject_matching is not None and f.reject_matching.encode() not in body:
                    continue
                if f.method == method and f.seconds > 0:
                    if time.monotonic() < f._until:
                        self.stats["faults_served"] += 1
                        return f
                    self.faults.remove(f)
                    continue
                if f.method == method and f.count > 0:
                    f.count -= 1
                    self.stats["faults_served"] += 1
                    if f.count == 0:
                        self.faults.remove(f)
                    return f
        return None

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def token_valid(self, tok: str) -> bool:
        with self.lock:
            if tok not in self.tokens:
                return False
            exp = self.tokens[tok]
        return exp is None or time.time() < exp


def _utc_iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_CONTENT_LENGTH = re.compile(r"[0-9]{1,15}")


def _parse_int(text: str) -> int:
    """JSON integers of at most 40 digits: no field takes more, and a 12 MB one costs minutes on 3.10."""
    if len(text) > 40:
        raise ValueError("an integer of more than 40 digits")
    return int(text)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")


class _Malformed(Exception):
    """A request the emulator will not read further: answered with a 4xx, then the connection is closed."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _RequestReader(io.RawIOBase):
    """The connection's reads: each waits at most ``idle`` seconds, and the reads of one request (from its
    first byte) end ``whole`` seconds after it started. A client trickling a byte at a time cannot keep a
    thread longer than that; a keep-alive connection left idle is closed after ``idle``."""

    def __init__(self, sock: socket.socket, idle: float, whole: float) -> None:
        super().__init__()
        self._sock = sock
        self._idle = idle
        self._whole = whole
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        wait = self._idle
        if self.deadline is not None:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(wait)
        n = self._sock.recv_into(b)
        if self.deadline is None:
            self.deadline = time.monotonic() + self._whole
        return n


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real service: clients reuse connections
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall
    server_version = "CESEmulator/1"
    state: EmulatorState  # set on the subclass the server makes
    verbose: bool = False
    idle_timeout: float = 60.0
    request_timeout: float = 60.0

    # --- plumbing ------------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()  # sets the socket timeout to ``timeout``, which the emulator sets to idle_timeout
        if isinstance(self.connection, ssl.SSLSocket):
            # Here, on the connection's thread, not in accept(): a client that never finishes its handshake
            # would otherwise stop the whole server.
            self.connection.do_handshake()
        self.rfile.close()
        self._reader = _RequestReader(self.connection, self.idle_timeout, self.request_timeout)
        self.rfile = io.BufferedReader(self._reader, 65536)

    def handle_one_request(self) -> None:
        self._reader.deadline = None  # the next request's clock starts with its first byte
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        # "replace": a lone surrogate echoed in a message must not turn an answer into a failure.
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8", "replace")
        self.state.count(f"status_{status}")  # before the answer: a client that has it sees it counted
        self.connection.settimeout(self.idle_timeout)  # a reader that does not read gets no longer than this
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, msg: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error_code": code, "error_msg": msg}, headers)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.state.count("dropped_connections")

    def _read_body(self) -> bytes:
        """The body, by Content-Length or chunked. Raises ``_Malformed`` (answered 400/413 by ``_route``, then
        the connection closed: what follows on it cannot be trusted) and ``ConnectionError`` when the client
        leaves before sending all of it."""
        lengths = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if lengths:
                raise _Malformed(400, "ces.0011", "both Transfer-Encoding and Content-Length")
            if encoding.strip().lower() != "chunked":
                raise _Malformed(400, "ces.0011", "unsupported Transfer-Encoding (only chunked)")
            return self._read_chunked()
        if not lengths:
            return b""
        if len(set(lengths)) > 1 or not _CONTENT_LENGTH.fullmatch(lengths[0]):
            raise _Malformed(400, "ces.0011", "bad Content-Length")
        n = int(lengths[0])
        if n > MAX_BODY_BYTES:
            raise _Malformed(413, "APIGW.0201", f"request body too large: {n} bytes, at most {MAX_BODY_BYTES}")
        body = self.rfile.read(n) if n else b""
        if len(body) < n:
            raise ConnectionResetError("the client left before sending its body")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size_text):
                if not line:
                    raise ConnectionResetError("the client left inside a chunked body")
                raise _Malformed(400, "ces.0011", "bad chunk size line")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise _Malformed(413, "APIGW.0201", f"request body too large: over {MAX_BODY_BYTES} bytes")
            data = self.rfile.read(size)
            if len(data) < size:
                raise ConnectionResetError("the client left inside a chunked body")
            parts.append(data)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _Malformed(400, "ces.0011", "a chunk does not end with CRLF")
        for _ in range(64):  # trailer fields, ignored, up to the empty line
            line = self.rfile.readline(8192)
            if line in (b"\r\n", b"\n", b""):
                return b"".join(parts)
        raise _Malformed(400, "ces.0011", "too many trailer fields")

    # --- auth ----------------------------------------------------------------------------------------------

    def _admin_allowed(self, body: bytes) -> bool:
        """Admin routes: open in open mode, else the API's credentials or the in-process admin token."""
        tok = self.headers.get("X-Auth-Token")
        if tok is not None and hmac.compare_digest(tok.encode(), self.state.admin_token.encode()):
            return True
        return self._authenticated(body)

    def _authenticated(self, body: bytes) -> bool:
        st = self.state
        if not st.auth_required:
            return True
        tok = self.headers.get("X-Auth-Token")
        if tok is not None:
            if st.token_valid(tok):
                return True
            self._error(401, "APIGW.0301", "Incorrect IAM authentication information: token invalid or expired")
            return False
        why = self._check_signature(body)
        if why is None:
            return True
        self._error(401, "APIGW.0301", f"Incorrect IAM authentication information: {why}")
        return False

    def _check_signature(self, body: bytes) -> str | None:
        value = self.headers.get("Authorization")
        if not value:
            return "no Authorization or X-Auth-Token header"
        parsed = signing.parse_authorization(value)
        if parsed is None:
            return "malformed Authorization header"
        ak, signed, sig = parsed
        with self.state.lock:
            key = self.state.keys.get(ak)
        if key is None:
            return "unknown access key"
        if key.expires_at is not None and time.time() >= key.expires_at:
            return "temporary access key expired"
        if "x-sdk-date" not in signed or "host" not in signed:
            return "x-sdk-date and host must be signed"
        date = self.headers.get("X-Sdk-Date", "")
        try:
            skew = abs(time.time() - signing.parse_sdk_date(date))
        except ValueError:
            return "bad X-Sdk-Date"
        if skew > signing.MAX_CLOCK_SKEW_S:
            return f"X-Sdk-Date is {int(skew)} s away from the server's clock (at most 15 min)"
        if key.security_token is not None:
            if self.headers.get("X-Security-Token") != key.security_token:
                return "temporary access key used without its security token"
            if "x-security-token" not in signed:
                return "x-security-token must be signed"
        headers: dict[str, str] = {}
        for name in signed:
            v = self.headers.get(name)
            if v is None:
                return f"signed header {name} is missing"
            # http.server decodes header bytes as latin-1; the signer signed their UTF-8 text.
            with contextlib.suppress(UnicodeError):
                v = v.encode("latin-1").decode("utf-8")
            headers[name] = v
        parts = urlsplit(self.path)
        canonical = signing.canonical_request(self.command, parts.path, parts.query, headers, signed, body)
        expected = signing.signature(key.sk, date, canonical)
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):  # str needs ASCII
            return "signature does not match"
        return None

    # --- routing -------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        try:
            body = self._read_body()
            parts = urlsplit(self.path)
            segs = [unquote(s) for s in parts.path.strip("/").split("/")]
            self.state.count("requests")
            if console.serves(segs):  # the web console and its read-only JSON API (console.py)
                console.respond(self, method, segs, parts.query, self.state.store, not self.state.auth_required)
            elif segs[0] == "_emulator":
                if self._admin_allowed(body):
                    self._admin(method, segs[1:], body)
            elif segs == ["v3", "auth", "tokens"] and method == "POST":
                self._iam(body)
            elif segs == ["openstack", "latest", "securitykey"] and method == "GET":
                self._metadata()
            elif len(segs) >= 3 and segs[0] == "V1.0":
                self._api(method, segs[1], segs[2:], parts.query, body)
            else:
                self._error(404, "APIGW.0101", f"The API does not exist or has not been published: {parts.path}")
        except _Malformed as e:
            self.close_connection = True
            self.state.count("malformed_requests")
            with contextlib.suppress(OSError):
                self._error(e.status, e.code, e.message, {"Connection": "close"})
        except OSError:  # the client left, or a read timed out (TimeoutError): nobody to answer
            self.close_connection = True
            self.state.count("connections_timed_out_or_lost")
        except Exception as e:  # never a stack trace in a body
            self.state.count("internal_errors")
            if self.verbose:
                sys.stderr.write(f"emulator internal error: {type(e).__name__}: {e}\n")
            with contextlib.suppress(OSError):
                self._error(500, "ces.0007", "internal error")

    def _api(self, method: str, project_id: str, rest: list[str], query: str, body: bytes) -> None:
        fault = self.state.take_fault(method, body)
        if fault is not None and fault.reject_matching is not None:
            self._error(400, "ces.0014", f"injected rejection: body holds {fault.reject_matching!r}")
            return
        if fault is not None and not fault.store and self._play(fault):
            return
        if not self._authenticated(body):
            return
        if PROJECT_ID.check(project_id):
            self._error(400, "ces.0003", f"project id {project_id!r} is not valid")
            return
        if method == "POST" and rest == ["events"]:
            self._report(project_id, body, fault)
        elif method == "GET" and rest == ["events"]:
            self._kinds(project_id, query)
        elif method == "GET" and len(rest) == 2 and rest[0] == "event":
            self._detail(project_id, rest[1], query)
        else:
            self._error(404, "APIGW.0101", "The API does not exist or has not been published")

    def _report(self, project_id: str, body: bytes, fault: Fault | None) -> None:
        try:
            items = json.loads(body.decode("utf-8"), parse_int=_parse_int) if body else None
        except (UnicodeDecodeError, ValueError, RecursionError) as e:  # RecursionError: [[[[... deep
            self._error(400, "ces.0014", f"body is not valid JSON: {type(e).__name__}")
            return
        if items is None:
            self._error(400, "ces.0001", "request body is missing")
            return
        problems = validate_report(items)
        if problems:
            self.state.count("rejected_requests")
            self._error(400, "ces.0014", "; ".join(problems[:20]) + (" ..." if len(problems) > 20 else ""))
            return
        out, new = self.state.store.add(project_id, items)
        self.state.count("events_received", len(items))
        self.state.count("events_stored", new)
        self.state.count("events_duplicate", len(items) - new)
        if fault is not None and fault.store and self._play(fault):
            return
        self._send(201, out)

    def _play(self, fault: Fault) -> bool:
        """Misbehave as the fault says (wait, then reset or answer its status); True when it answered."""
        if fault.delay:
            time.sleep(fault.delay)
        if fault.drop:
            self._drop()
            return True
        if fault.status is None:
            return False
        hdrs = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        code = "ces.0429" if fault.status == 429 else f"ces.{fault.status:04d}"
        when = "after storing" if fault.store else "instead of an answer"
        self._error(fault.status, code, f"injected fault {when}: HTTP {fault.status}", hdrs)
        return True

    def _detail(self, project_id: str, event_name: str, query: str) -> None:
        if not 1 <= len(event_name) <= 64:  # system event names too: only the length is documented
            self._error(400, "ces.0013", "event_name: must be 1 to 64 characters")
            return
        params = dict(parse_qsl(query, keep_blank_values=True))
        parsed, problems = validate_query(params)
        if problems:
            code = "ces.0006" if any(p.startswith(("start", "limit")) for p in problems) else "ces.0013"
            self._error(400, code, "; ".join(problems))
            return
        start = parsed.pop("start", 0)
        limit = parsed.pop("limit", 100)
        page, total, users, sources = self.state.store.query(project_id, event_name, parsed, start, limit)
        self._send(
            200,
            {
                "event_name": event_name,
                "event_type": parsed["event_type"],
                "sub_event_type": parsed.get("sub_event_type", default_sub_event_type(parsed["event_type"])),
                "event_users": users,
                "event_sources": sources,
                "event_info": page,
                "meta_data": {"total": total},
            },
        )

    def _kinds(self, project_id: str, query: str) -> None:
        params = dict(parse_qsl(query, keep_blank_values=True))
        kinds = self.state.store.kinds(project_id)
        for f in ("event_type", "sub_event_type", "event_name"):
            if f in params:
                kinds = [k for k in kinds if k[f] == params[f]]
        try:
            start = int(params.get("start", 0))
            limit = int(params.get("limit", 100))
        except ValueError:
            self._error(400, "ces.0006", "start and limit must be integers")
            return
        if start < 0 or not 1 <= limit <= 100:
            self._error(400, "ces.0006", "start must be >= 0 and limit 1 to 100")
            return
        self._send(200, {"events": kinds[start : start + limit], "meta_data": {"total": len(kinds)}})

    # --- stand-ins for IAM and the metadata service -------------------------------------------------------

    def _iam(self, body: bytes) -> None:
        try:
            ident = json.loads(body)["auth"]["identity"]["password"]["user"]
            key = (str(ident["domain"]["name"]), str(ident["name"]))
            password = str(ident["password"])
            password.encode()  # a lone surrogate: not a password anyone has
        except (ValueError, KeyError, TypeError, RecursionError):
            self._error(400, "IAM.0001", "bad token request body")
            return
        expected = self.state.iam_users.get(key)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            self._error(401, "IAM.0002", "The username or password is wrong")
            return
        tok = "MII" + secrets.token_urlsafe(48)
        expires = time.time() + self.state.token_ttl
        with self.state.lock:
            self.state.tokens[tok] = expires
            self.state.stats["iam_tokens_issued"] += 1
        self._send(201, {"token": {"expires_at": _utc_iso(expires)}}, {"X-Subject-Token": tok})

    def _metadata(self) -> None:
        if not self.state.metadata:
            self._error(404, "APIGW.0101", "metadata service not enabled")
            return
        ak = "TMP" + secrets.token_hex(8).upper()
        sk = secrets.token_urlsafe(30)
        sec = secrets.token_urlsafe(60)
        expires = time.time() + self.state.metadata_ttl
        with self.state.lock:
            self.state.keys[ak] = _TempKey(sk, sec, expires)
            self.state.stats["metadata_keys_issued"] += 1
        self._send(
            200,
            {"credential": {"access": ak, "secret": sk, "securitytoken": sec, "expires_at": _utc_iso(expires)}},
        )

    # --- admin ---------------------------------------------------------------------------------------------

    def _admin(self, method: str, segs: list[str], body: bytes) -> None:
        st = self.state
        if segs == ["faults"] and method == "POST":
            try:
                spec = json.loads(body or b"{}")
                specs = spec if isinstance(spec, list) else [spec]
                if any(k.startswith("_") for f in specs for k in f):
                    raise TypeError("unknown field")
                faults = [Fault(**f) for f in specs]
            except (ValueError, TypeError, AttributeError, RecursionError) as e:
                self._error(400, "EMU.0001", f"bad fault spec: {e}")
                return
            with st.lock:
                st.faults.extend(faults)
            self._send(201, {"faults": len(st.faults)})
        elif segs == ["faults"] and method == "DELETE":
            with st.lock:
                st.faults.clear()
            self._send(200, {"faults": 0})
        elif segs == ["stats"] and method == "GET":
            with st.lock:
                stats: dict[str, Any] = dict(st.stats)
            stats["events_in_store"] = st.store.count()
            self._send(200, stats)
        elif segs == ["reset"] and method == "POST":
            st.store.clear()
            with st.lock:
                st.faults.clear()
                st.stats.clear()
            self._send(200, {"reset": True})
        elif segs == ["revoke"] and method == "POST":
            # Every IAM token and temporary key issued so far stops working (tests of refresh on 401).
            with st.lock:
                st.tokens = {t: e for t, e in st.tokens.items() if e is None}
                st.keys = {a: k for a, k in st.keys.items() if k.expires_at is None}
            self._send(200, {"revoked": True})
        else:
            self._error(404, "EMU.0404", "no such admin route")


_BUSY_BODY = json.dumps({"error_code": "APIGW.0308", "error_msg": "too many connections: try again"}).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json;charset=UTF-8\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them: beyond that a connection gets a 503
    (written without blocking, from the accepting thread) and is closed two seconds later (closing at once
    could reset it before the client reads the answer)."""

    # socketserver's default backlog of 5 makes a burst of new connections wait for SYN retries (1 s, 3 s).
    request_queue_size = 128
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], state: EmulatorState, max_connections: int
    ) -> None:
        # Set before binding: a bind that fails (a port in use) calls server_close, which reads them.
        self.state = state
        self.max_connections = max_connections
        self.active = 0
        self._active_lock = threading.Lock()
        self._closing: deque[tuple[float, socket.socket]] = deque()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            admit = self.active < self.max_connections
            if admit:
                self.active += 1
        if not admit:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._active_lock:
                self.active -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self.active -= 1

    def _refuse(self, request: socket.socket) -> None:
        self.state.count("connections_refused")
        if isinstance(request, ssl.SSLSocket):  # no answer without a handshake, and that could block
            self.shutdown_request(request)
            return
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(_BUSY)  # a new socket's send buffer takes these few hundred bytes whole
            request.shutdown(socket.SHUT_WR)
        self._closing.append((time.monotonic() + 2.0, request))
        while len(self._closing) > 1024:
            self._close_socket(self._closing.popleft()[1])

    def service_actions(self) -> None:
        now = time.monotonic()
        while self._closing and self._closing[0][0] <= now:
            self._close_socket(self._closing.popleft()[1])

    def _close_socket(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.close()

    def server_close(self) -> None:
        super().server_close()
        while self._closing:
            self._close_socket(self._closing.popleft()[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake or a client gone mid-answer: counted, never a traceback on stderr.
        self.state.count("connection_errors")
        if getattr(self.RequestHandlerClass, "verbose", False):
            exc = sys.exc_info()[1]
            sys.stderr.write(f"emulator: connection from {client_address}: {type(exc).__name__}: {exc}\n")
