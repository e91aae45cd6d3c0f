"""A local Cloud Eye: ``with Emulator() as emu: emu.url``.

A real HTTP server on 127.0.0.1 (port 0 picks a free one) over a SQLite store, faithful enough that the
official ``huaweicloudsdkces`` client works against it. For the demo, this project's tests and your own.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request
from types import TracebackType
from typing import Any

from .server import EmulatorState, Fault, _Handler, _Server
from .store import EventStore

__all__ = ["Emulator", "Fault"]


class Emulator:
    """Runs the emulator's HTTP server on a background thread.

    Auth: with ``ak``/``sk`` it verifies SDK-HMAC-SHA256 signatures (``security_token`` makes the key a
    temporary one that needs its token); with ``token`` it accepts ``X-Auth-Token``; ``iam_users`` maps
    ``(domain, user)`` to a password and enables a stand-in IAM token endpoint; ``metadata=True`` enables a
    stand-in ECS metadata service handing out temporary keys. With none of these it is open.
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
    ) -> None:
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
        handler = type("Handler", (_Handler,), {"state": self.state, "verbose": verbose})
        self._server = _Server((host, port), handler)
        self._scheme = "http"
        if tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls_cert, tls_key)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
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
    def auth_required(self) -> bool:
        return self.state.auth_required

    def start(self) -> Emulator:
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
        """Call an admin route over HTTP (what a test in another process would do)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/_emulator/{route}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read() or b"null")
