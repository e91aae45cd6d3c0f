"""A local Cloud Eye: ``with Emulator() as emu: emu.url``.

A real HTTP server on 127.0.0.1 (port 0 picks a free one) over a SQLite store, faithful enough that the
official ``huaweicloudsdkces`` client works against it. For the demo, this project's tests and your own: a
development tool, not a production service (README, "Security").
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
import urllib.request
import warnings
from types import TracebackType
from typing import Any

from ..config import is_loopback
from .server import EmulatorState, Fault, _Handler, _Server
from .store import EventStore

__all__ = ["Emulator", "Fault", "exposure_warning", "local_url"]

_EVERY_ADDRESS = ("", "0.0.0.0", "::")


def exposure_warning(host: str, anyone_gets_in: bool) -> str | None:
    """The warning for an emulator that anyone who reaches it may use (open, or handing out keys from its
    metadata stand-in) on an address other machines can reach; None when there is nothing to warn about."""
    if not anyone_gets_in or is_loopback(host):
        return None
    where = "every address of this machine" if host in _EVERY_ADDRESS else host
    return (
        f"WARNING: the emulator listens on {where} and lets anyone in (no --ak/--sk or --token; --metadata "
        "alone hands keys to whoever asks): anyone who can reach this port can read and write its events and "
        "use its admin routes (reset, faults, revoke). Listen on 127.0.0.1, or require --ak/--sk or --token."
    )


def local_url(scheme: str, host: str, port: int) -> str:
    """A URL for a client on this machine: 127.0.0.1 when the server listens on every address (a client
    cannot connect to 0.0.0.0, and ours refuses plain http to a host that is not loopback)."""
    if host in _EVERY_ADDRESS:
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}"


class Emulator:
    """Runs the emulator's HTTP server on a background thread.

    Auth: with ``ak``/``sk`` it verifies SDK-HMAC-SHA256 signatures (``security_token`` makes the key a
    temporary one that needs its token); with ``token`` it accepts ``X-Auth-Token``; ``iam_users`` maps
    ``(domain, user)`` to a password and enables a stand-in IAM token endpoint; ``metadata=True`` enables a
    stand-in ECS metadata service handing out temporary keys. With none of these it is open. The admin
    routes need the same credentials as the API (``admin()`` here has its own token).

    Limits against hostile clients: ``max_connections`` connections served at once (503 beyond),
    ``idle_timeout`` for any single wait (an idle keep-alive connection is closed after it), and
    ``request_timeout`` for a whole request to arrive.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        db: str = ":memory:",
        *,
        ak: str | None = None,
        sk: str | None = None,
        security_token: str | None = None,
        token: str | None = None,
        iam_users: dict[tuple[str, str], str] | None = None,
        metadata: bool = False,
        metadata_ttl: float = 3600.0,
        token_ttl: float = 24 * 3600.0,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        verbose: bool = False,
        max_connections: int = 256,
        idle_timeout: float = 60.0,
        request_timeout: float = 60.0,
    ) -> None:
        if max_connections < 1 or idle_timeout <= 0 or request_timeout <= 0:
            raise ValueError("max_connections, idle_timeout and request_timeout must be positive")
        self.host = host
        self.port = port
        self.db = db
        self.state = EmulatorState(
            EventStore(db),
            ak=ak,
            sk=sk,
            security_token=security_token,
            token=token,
            iam_users=iam_users,
            metadata=metadata,
            metadata_ttl=metadata_ttl,
            token_ttl=token_ttl,
        )
        attrs = {
            "state": self.state,
            "verbose": verbose,
            "idle_timeout": float(idle_timeout),
            "timeout": float(idle_timeout),
            "request_timeout": float(request_timeout),
        }
        handler = type("Handler", (_Handler,), attrs)
        self._server = _Server((host, port), handler, self.state, max_connections)
        self._scheme = "http"
        if tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls_cert, tls_key)
            # The handshake happens on the connection's thread (_Handler.setup), not in accept().
            self._server.socket = ctx.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
            self._scheme = "https"
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Emulator(url={self.url!r}, db={self.db!r}, auth_required={self.auth_required})"

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        return f"{self._scheme}://{host_text}:{port}"

    @property
    def local_url(self) -> str:
        """``url``, with 127.0.0.1 in place of 0.0.0.0: what a client on this machine should use."""
        host, port = self._server.server_address[:2]
        return local_url(self._scheme, host.decode() if isinstance(host, bytes) else str(host), int(port))

    @property
    def auth_required(self) -> bool:
        return self.state.auth_required

    @property
    def exposure_warning(self) -> str | None:
        """Set when anyone who reaches this emulator may use it and other machines can reach it."""
        anyone = not self.state.auth_required or (self.state.metadata and not (self.state.keys or self.state.tokens))
        return exposure_warning(self.host, anyone)

    @property
    def active_connections(self) -> int:
        """Connections being served now (each holds a thread); at most ``max_connections``."""
        return self._server.active

    def start(self) -> Emulator:
        if self.exposure_warning:
            warnings.warn(self.exposure_warning, RuntimeWarning, stacklevel=2)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="ces-emulator", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until ``stop()`` (the CLI's way)."""
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self.state.store.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- conveniences for tests (the admin routes, called in-process) ----------------------------------------

    def add_fault(self, **spec: Any) -> None:
        """The next ``count`` requests misbehave; see ``Fault`` for the fields."""
        f = Fault(**spec)
        with self.state.lock:
            self.state.faults.append(f)

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults.clear()

    def stats(self) -> dict[str, Any]:
        with self.state.lock:
            s: dict[str, Any] = dict(self.state.stats)
        s["events_in_store"] = self.state.store.count()
        return s

    def count(self, project_id: str | None = None) -> int:
        return self.state.store.count(project_id)

    def events(self, project_id: str, event_name: str, **filters: Any) -> list[dict[str, Any]]:
        """Every stored event of a name, newest first, straight from the store."""
        page, _, _, _ = self.state.store.query(project_id, event_name, filters, 0, 10**9)
        return page

    def admin(self, method: str, route: str, body: Any = None) -> Any:
        """Call an admin route over HTTP (what a test in another process would do, with the API's
        credentials); this helper sends the emulator's own admin token."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.local_url}/_emulator/{route}",
            data=data,
            method=method,
            headers={"X-Auth-Token": self.state.admin_token},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"null")
