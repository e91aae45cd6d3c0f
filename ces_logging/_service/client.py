"""``CESClient``: report events and query them.

Queries and every other call go over ``requests``, with environment settings (proxy variables, CA bundle
variables) merged once, at the first request, not per call. The hot path, ``post_events_body`` (the worker's
POST of a ready JSON body, once per 100 events), goes over ``transport.FastPost`` (the standard library's
sockets, with the same CA bundle, proxies, total deadline and error model) whenever it can: the client's own
session, a signer of this package (``AKSKAuth``, ``TokenAuth``) and a direct connection or an ``http://``
proxy. Otherwise (a session or an auth object of the caller's own, a socks proxy) it goes over ``requests`` too.
Measured in ``benchmarks/``: see RESULTS.md for the ratio.

Building a client checks everything (endpoint, credentials, project id, timeout: a ``ConfigError`` there) and
loads no HTTP stack: a handler builds its client on the app's thread, at a cold start or in a ``manage.py``
command, before anything is logged, and ``requests`` with ``urllib3``, ``ssl`` and the email package would be
most of that cold start (``make bench``'s import row). What the first request needs is made then, once, under a
lock of the client's (see ``_Locks``): the environment's settings and the lean transport at the worker's first
send (no ``requests`` when no proxy variable is set), the ``requests`` session at the first request that goes
over it (a query, the CLI, a session or auth object of the caller's own, a proxy). The lean transport's modules
(``socket``, ``ssl``) are imported when the client is built, on the app's thread: a thread of ours never
imports (forks.py).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from urllib.parse import quote, urlsplit

from .. import forks
from ..config import is_loopback, resolve_endpoint, resolve_project_id
from ..errors import (
    CertificateFailure,
    CESCertificateError,
    CESEndpointError,
    CESError,
    CESTransportError,
    ConfigError,
    TransportFailure,
    one_line,
    transport_error_text,
)
from ..events import EVENT_TYPE_CUSTOM, MAX_EVENTS_PER_REQUEST, QUERY_MAX_LIMIT
from .auth import AKSKAuth, TokenAuth, TokenProvider, encode_query
from .credentials import resolve_auth

if TYPE_CHECKING:
    import requests
    from requests.adapters import BaseAdapter

    from ..model import CustomEvent, EventDetailPage, EventRecord, ReportedEvent
    from .transport import FastPost

# The client's answer types live in model.py (dataclasses: loaded by the first report or query, not by building
# a handler); their old address here still resolves, through __getattr__. (``typing.get_type_hints`` on this
# module's functions reads the module's globals, not __getattr__: pass ``vars(ces_logging.model)`` to it.)
_MODEL_NAMES = frozenset({"CustomEvent", "EventDetailPage", "EventRecord", "ReportedEvent"})


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from .. import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


USER_AGENT = "ces-logging/0.2"
_JSON_TYPE = "application/json;charset=UTF-8"


class _Wire(NamedTuple):
    """How requests reach the endpoint, resolved at the first one: the environment's proxies and CA bundle as
    ``requests`` merges them, and the lean transport when the hot POST can use it."""

    proxies: dict[str, str]
    verify: bool | str
    fast: FastPost | None
    events_path: str  # the events URL's path as ``requests`` sends (and signs) it


# What a client makes at its first use (its session; its wire: the environment's settings and the lean transport)
# is made under a lock of that client's, one per thing: one session and one resolution however many threads ask
# at once. Rules that keep a SIGTERM's drain (which runs on the main thread and waits for the worker's sends)
# from waiting on a lock it interrupted: the locks are the client's own, so that another client's first query
# never holds the worker's; and the modules a build needs are imported before its lock is taken (the lean
# transport's when the client is built: forks.py), so that no import runs under one. The locks are made again
# in a new process (the parent's may be held by a thread that is gone) and once gevent or eventlet has patched
# ``threading`` (a greenlet must not wait on a real lock: green.py); ``threading.Lock`` tells, as for the
# throttle (``RLock`` stays the same function, building on the patched lock).
_generation = 0  # counts new processes


def _new_process() -> None:
    global _generation
    _generation += 1


forks.on_new_process(_new_process)


class _Locks:
    """A client's build locks (see above), made again in a new process or once ``threading`` is patched."""

    __slots__ = ("generation", "made_with", "session", "wire")

    def __init__(self) -> None:
        self.generation = _generation
        self.made_with = threading.Lock
        self.session = threading.RLock()
        self.wire = threading.RLock()

    def current(self) -> bool:
        return self.generation == _generation and self.made_with is threading.Lock


def _no_proxy_configured() -> bool:
    """True when ``requests`` would find no proxy for any URL: no ``*_proxy`` variable with a value (any case),
    on a system where the environment is the only source (``urllib.request.getproxies`` also reads the
    system's settings on macOS and Windows)."""
    if sys.platform == "darwin" or os.name == "nt":
        return False
    return not any(value and name.lower().endswith("_proxy") for name, value in os.environ.items())


def to_ms(t: int | float | datetime | None) -> int | None:
    """ms epoch from an int (already ms), a float (seconds) or an aware/naive-UTC datetime."""
    if t is None:
        return None
    if isinstance(t, datetime):
        return int(t.timestamp() * 1000)
    if isinstance(t, float):
        return int(t * 1000)
    return int(t)


class CESClient:
    """HTTP client for Cloud Eye custom events.

    Credentials: pass ``ak``/``sk`` (with ``security_token`` for temporary keys), ``token``, ``token_provider``
    or a ready ``auth`` object; with none, the credential chain decides (``credentials.resolve_auth``).
    """

    def __init__(
        self,
        project_id: str | None = None,
        *,
        region: str | None = None,
        endpoint: str | None = None,
        ak: str | None = None,
        sk: str | None = None,
        security_token: str | None = None,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        auth: Callable[[requests.PreparedRequest], requests.PreparedRequest] | None = None,
        timeout: float = 10.0,
        verify: bool | str = True,
        session: requests.Session | None = None,
        allow_insecure: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.endpoint = resolve_endpoint(endpoint, region, allow_insecure=allow_insecure, env=env)
        host = urlsplit(self.endpoint).hostname or ""
        if auth is not None:
            if any(x is not None for x in (ak, sk, token, token_provider)):
                raise ConfigError("pass either auth= or credentials (ak/sk, token, token_provider), not both")
            self.auth: Callable[[requests.PreparedRequest], requests.PreparedRequest] | None = auth
            self.auth_source = "arguments (auth object)"
            pid_hint = None
        else:
            resolved = resolve_auth(
                ak=ak,
                sk=sk,
                security_token=security_token,
                token=token,
                token_provider=token_provider,
                project_id=project_id,
                local_endpoint=is_loopback(host),
                env=env,
            )
            self.auth, self.auth_source, pid_hint = resolved.auth, resolved.source, resolved.project_id
        self.project_id = resolve_project_id(project_id, env, pid_hint)
        if isinstance(self.auth, AKSKAuth) and not self.auth.project_id:
            self.auth.project_id = self.project_id
        self.timeout = float(timeout)
        self._verify_arg = verify
        self._own_session = session is None
        self._session = session  # ours is made at its first use (``session``)
        if session is not None:
            session.headers["User-Agent"] = USER_AGENT
        self._wire_state: _Wire | None = None  # resolved at the first request (``_wire``)
        self._locks_state = _Locks()
        self._import_what_sends_need()
        self._adapter_state: BaseAdapter | None = None
        self._base = f"{self.endpoint}/V1.0/{quote(self.project_id, safe='')}"
        self._events_url = f"{self._base}/events"
        self._events_netloc = urlsplit(self._events_url).netloc

    def __repr__(self) -> str:
        return (
            f"CESClient(project_id={self.project_id!r}, endpoint={self.endpoint!r}, auth={self.auth!r}, "
            f"timeout={self.timeout})"
        )

    # --- what the first request makes -------------------------------------------------------------------------

    def _import_what_sends_need(self) -> None:
        """What the worker's sends will use, imported here, on the app's thread: a thread of ours never imports
        a module for the first time (forks.py). The lean POST's ``socket`` and ``ssl`` always; certifi's bundle
        for https; ``requests`` (and ``http.client``, a proxy's tunnel) where sends go over it or through a
        proxy: a session or auth object of the caller's own, or a proxy variable set."""
        from . import transport  # noqa: F401

        if self.endpoint.startswith("https:"):
            import certifi  # noqa: F401
        own_auth = self.auth is None or type(self.auth) in (AKSKAuth, TokenAuth)
        if not (self._own_session and own_auth and _no_proxy_configured()):
            import http.client  # noqa: F401

            from . import deadline  # noqa: F401 - requests

    def _locks(self) -> _Locks:
        locks = self._locks_state
        if not locks.current():
            locks = self._locks_state = _Locks()
        return locks

    @property
    def session(self) -> requests.Session:
        """The ``requests`` session of queries and of every request off the lean path: the caller's, or one of
        ours, made (and ``requests`` imported) at its first use."""
        s = self._session
        if s is None:
            from .deadline import new_session  # before the lock (see _Locks)

            with self._locks().session:
                s = self._session
                if s is None:
                    # One request at a time per handler; a few spare connections for direct callers.
                    # DeadlineAdapter: ``timeout`` bounds the whole exchange, not each read (deadline.py).
                    s = new_session(pool_maxsize=4)
                    s.headers["User-Agent"] = USER_AGENT
                    self._session = s
        return s

    def _wire(self) -> _Wire:
        wire = self._wire_state
        if wire is None:
            if not (self._own_session and _no_proxy_configured()):
                self.session  # noqa: B018 - made (requests imported) before the wire's lock is taken
            with self._locks().wire:
                wire = self._wire_state
                if wire is None:
                    wire = self._wire_state = self._resolve_wire()
        return wire

    def _resolve_wire(self) -> _Wire:
        """The environment's settings, merged once (``Session.merge_environment_settings``'s answer). Known
        without ``requests`` for our own session when no proxy is configured: no proxies, and the CA bundle
        variables' bundle for ``verify=True``, as ``requests`` reads them."""
        verify: bool | str
        if self._own_session and _no_proxy_configured():
            proxies: dict[str, str] = {}
            verify = self._verify_arg
            if verify is True or verify is None:
                verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        else:
            settings = self.session.merge_environment_settings(self.endpoint, {}, False, self._verify_arg, None)
            proxies = dict(settings["proxies"])
            verify = True if settings["verify"] is None else settings["verify"]
        from .transport import FastPost, requote_path  # socket and ssl: the lean path's own

        events_path = requote_path(urlsplit(self._events_url).path)  # as requests sends (and signs) it
        fast = FastPost(self.endpoint, verify, proxies)
        own_auth = self.auth is None or type(self.auth) in (AKSKAuth, TokenAuth)
        return _Wire(proxies, verify, fast if fast.usable and own_auth and self._own_session else None, events_path)

    @property
    def _fast(self) -> FastPost | None:
        """The lean transport of the hot POST, or None when it goes over ``requests`` (see the module)."""
        return self._wire().fast

    @property
    def _adapter(self) -> BaseAdapter:
        adapter = self._adapter_state
        if adapter is None:
            adapter = self._adapter_state = self.session.get_adapter(self.endpoint)
        return adapter

    def reset_connections(self) -> None:
        """Drop pooled connections (after ``fork``: the parent's sockets are not the child's to use)."""
        if self._session is not None:
            for adapter in self._session.adapters.values():
                adapter.close()
        wire = self._wire_state
        if wire is not None and wire.fast is not None:
            wire.fast.reset()

    def close(self) -> None:
        if self._own_session and self._session is not None:
            self._session.close()
        wire = self._wire_state
        if wire is not None and wire.fast is not None:
            wire.fast.reset()

    def __enter__(self) -> CESClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the transport -------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        *,
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one request; answer the response when it is 2xx, else raise a ``CESError`` subclass.

        A 401 makes a refreshable auth (token provider, temporary keys) fetch new credentials and the request
        go once more. Connection errors and timeouts become ``CESTransportError``; a redirect or a certificate
        that does not verify, ``CESEndpointError``."""
        for attempt in (1, 2):
            resp = self._send_once(method, url, body, timeout)
            if resp.status_code == 401 and attempt == 1 and self._refresh_auth():
                continue
            if resp.status_code >= 400:
                raise CESError.from_response(resp.status_code, resp.content, resp.headers)
            if resp.status_code >= 300:
                raise redirect_error(resp.status_code, resp.headers)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _refresh_auth(self) -> bool:
        refresh = getattr(self.auth, "refresh", None)
        if refresh is None or getattr(self.auth, "provider", None) is None:
            return False
        try:
            refresh()
        except CESError:
            return False
        return True

    def _send_once(self, method: str, url: str, body: bytes | None, timeout: float | None) -> requests.Response:
        import requests  # here: a client that only reports over the lean path never loads it

        from .deadline import total_deadline
        from .transport import certificate_problem

        wire = self._wire()
        req = requests.PreparedRequest()
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = _JSON_TYPE
        seconds = self.timeout if timeout is None else timeout
        try:
            req.prepare(method=method, url=url, headers=headers, data=body, auth=self.auth)
            with total_deadline(seconds):
                resp = self._adapter.send(req, timeout=seconds, verify=wire.verify, proxies=wire.proxies)
                resp.content  # noqa: B018 - the body too is read within the deadline
            return resp
        except CESError:
            raise  # from a credentials provider
        except requests.exceptions.SSLError as e:
            problem = certificate_problem(e)
            if problem is not None:
                raise certificate_error(urlsplit(url).hostname or "", problem) from None
            text = transport_error_text(e, req.headers)
            raise CESTransportError(f"{method} {url.split('?')[0]} failed: {text}") from None
        except (requests.RequestException, ValueError) as e:
            # ValueError: http.client refusing a header value; its text would quote the value.
            text = transport_error_text(e, req.headers)
            raise CESTransportError(f"{method} {url.split('?')[0]} failed: {text}") from None

    # --- reporting -------------------------------------------------------------------------------------------

    def post_events_body(self, body: bytes, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """POST a ready-made JSON array of at most 100 events; the service's ``[{event_id, event_name}]``."""
        status, content = self.send_events_body(body, timeout=timeout)
        if not content.strip():
            return []  # a 2xx without a body: taken, without ids
        try:
            data = json.loads(content)
        except ValueError:
            data = None
        if not isinstance(data, list):
            raise not_an_array(status, content)
        return data

    def send_events_body(self, body: bytes, *, timeout: float | None = None) -> tuple[int, bytes]:
        """``post_events_body`` for the worker, which needs no event ids: the answer's status and body, the
        body checked to be a JSON array by its first byte only. A 2xx without a body (204, or a 201 some
        gateway emptied) is what it says: the events were taken. A 2xx with something else (a portal's HTML
        page) raises ``CESError``, a 3xx ``CESEndpointError``."""
        wire = self._wire()
        if wire.fast is None:
            resp = self.request("POST", self._events_url, body, timeout=timeout)
            status, content = resp.status_code, resp.content
        else:
            status, content = self._post_fast(wire, body, self.timeout if timeout is None else timeout)
        head = content.lstrip()[:1]
        if head != b"[" and head:
            raise not_an_array(status, content)
        return status, content

    def _post_fast(self, wire: _Wire, body: bytes, timeout: float) -> tuple[int, bytes]:
        """The hot POST over ``transport.FastPost``, with ``request``'s rules: 2xx answered, a 401 with a
        refreshable auth refreshed and sent once more, any other failure a ``CESError``."""
        fast = wire.fast
        assert fast is not None
        auth = cast("AKSKAuth | TokenAuth | None", self.auth)  # the hot path is ours only with these (__init__)
        for attempt in (1, 2):
            headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "Content-Type": _JSON_TYPE}
            if auth is not None:  # a signer of ours (see __init__): it raises CESError, nothing else
                headers.update(auth.headers_for("POST", self._events_netloc, wire.events_path, "", headers, body))
            try:
                status, content, answer = fast.post(wire.events_path, headers, body, timeout)
            except CertificateFailure as e:
                raise certificate_error(fast.host, str(e)) from None
            except TransportFailure as e:
                text = transport_error_text(e, headers, limit=400)
                raise CESTransportError(f"POST {self._events_url} failed: {text}") from None
            if status == 401 and attempt == 1 and self._refresh_auth():
                continue
            if status >= 400:
                raise CESError.from_response(status, content, answer)
            if status >= 300:
                raise redirect_error(status, answer)
            return status, content
        raise AssertionError("unreachable")  # pragma: no cover

    def report_events(self, events: Iterable[CustomEvent | Mapping[str, Any]]) -> list[ReportedEvent]:
        """Report any number of events, 100 to a request, in order; each one's id back, in the same order."""
        from ..model import CustomEvent, ReportedEvent  # dataclasses: loaded by the first call, not by a handler

        items = [e.to_api() if isinstance(e, CustomEvent) else dict(e) for e in events]
        out: list[ReportedEvent] = []
        for i in range(0, len(items), MAX_EVENTS_PER_REQUEST):
            chunk = items[i : i + MAX_EVENTS_PER_REQUEST]
            body = json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode()
            out.extend(
                ReportedEvent(str(r.get("event_id")), str(r.get("event_name"))) for r in self.post_events_body(body)
            )
        return out

    # --- querying --------------------------------------------------------------------------------------------

    def event_detail(
        self,
        event_name: str,
        *,
        event_type: str = EVENT_TYPE_CUSTOM,
        sub_event_type: str | None = None,
        event_source: str | None = None,
        event_level: str | None = None,
        event_user: str | None = None,
        event_state: str | None = None,
        start_time: int | float | datetime | None = None,
        end_time: int | float | datetime | None = None,
        start: int = 0,
        limit: int = QUERY_MAX_LIMIT,
    ) -> EventDetailPage:
        """One page of an event name's occurrences, newest first (times: ms int, seconds float, datetime)."""
        from ..model import EventDetailPage, EventRecord  # dataclasses: loaded by the first query, not by a handler

        if not 1 <= limit <= QUERY_MAX_LIMIT:
            raise ValueError(f"limit must be 1 to {QUERY_MAX_LIMIT}, got {limit}")
        params: dict[str, object] = {
            "event_type": event_type,
            "sub_event_type": sub_event_type,
            "event_source": event_source,
            "event_level": event_level,
            "event_user": event_user,
            "event_state": event_state,
            "from": to_ms(start_time),
            "to": to_ms(end_time),
            "start": start,
            "limit": limit,
        }
        url = f"{self._base}/event/{quote(event_name, safe='~')}?{encode_query(params)}"
        data = _json(self.request("GET", url))
        if not isinstance(data, dict):
            raise CESError("the service answered 200 without an object", status=200)
        info = [EventRecord.from_api(e) for e in data.get("event_info") or []]
        return EventDetailPage(
            event_name=str(data.get("event_name", event_name)),
            event_type=str(data.get("event_type", event_type)),
            sub_event_type=data.get("sub_event_type"),
            event_users=list(data.get("event_users") or []),
            event_sources=list(data.get("event_sources") or []),
            event_info=info,
            total=int((data.get("meta_data") or {}).get("total", len(info))),
            raw=data,
        )

    def iter_event_detail(
        self, event_name: str, *, page_size: int = QUERY_MAX_LIMIT, **filters: Any
    ) -> Iterator[EventRecord]:
        """Every match across pages, lazily, newest first. Stops at ``total`` or at an empty page."""
        start = int(filters.pop("start", 0))
        while True:
            page = self.event_detail(event_name, start=start, limit=page_size, **filters)
            yield from page.event_info
            start += len(page.event_info)
            if not page.event_info or start >= page.total:
                return

    def probe(self) -> requests.Response:
        """A harmless signed query (one page of an event name nobody uses): reachability and auth in one
        request, for ``ces-logging doctor``. Raises ``CESError`` as any call does."""
        params = {"event_type": EVENT_TYPE_CUSTOM, "limit": 1}
        return self.request("GET", f"{self._base}/event/cesLoggingDoctor?{encode_query(params)}")

    def server_time(self, headers: Mapping[str, str] | None = None) -> float | None:
        """The server's clock (epoch seconds) from a ``Date`` header: of ``headers`` when given, else of an
        unsigned request to the endpoint (any answer carries one). None when there is no readable date."""
        if headers is None:
            try:
                headers = self._send_once("GET", self.endpoint + "/", None, 5.0).headers
            except CESError:
                return None
        from email.utils import parsedate_to_datetime  # the email package: only here

        date = headers.get("Date")
        try:
            return parsedate_to_datetime(date).timestamp() if date else None
        except (TypeError, ValueError):
            return None

    def list_events(self, *, event_type: str | None = None, start: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The project's event kinds with counts (``GET /V1.0/{project_id}/events``)."""
        params = {"event_type": event_type, "start": start, "limit": limit}
        data = _json(self.request("GET", f"{self._base}/events?{encode_query(params)}"))
        return list((data or {}).get("events") or []) if isinstance(data, dict) else []


def redirect_error(status: int, headers: Any) -> CESEndpointError:
    """A 3xx: the endpoint is not the service's address (a signed request is never followed elsewhere)."""
    location = one_line(str(headers.get("Location") or ""), 200) or "nowhere (no Location)"
    return CESEndpointError(
        f"the endpoint answered with a redirect to {location}: set endpoint= to the service's own address "
        "(redirects are not followed)",
        status=status,
        request_id=headers.get("X-Request-Id"),
    )


def certificate_error(host: str, problem: str) -> CESCertificateError:
    return CESCertificateError(
        f"SSLError: the TLS certificate of {host} did not verify: {one_line(problem, 200)} (a configuration "
        "problem, not an outage: check endpoint=, verify= or REQUESTS_CA_BUNDLE)"
    )


def not_an_array(status: int, content: bytes) -> CESError:
    text = one_line(content[:4096].decode("utf-8", "replace"), 120)
    return CESError(f"the service answered {status} without an array of events: {text}", status=status)


def _json(resp: requests.Response) -> Any:
    try:
        return json.loads(resp.content or b"null")
    except ValueError:
        raise CESError(
            "the service answered with a body that is not JSON",
            status=resp.status_code,
            request_id=resp.headers.get("X-Request-Id"),
        ) from None
