"""The total deadline (``watchdog.py``) for ``requests``: ``with total_deadline(10): session.get(...)``.

``requests``' ``timeout`` bounds each socket operation, not the exchange: a server that sends a byte every
1.5 s keeps a 2 s timeout waiting for as long as it likes. Here the watchdog shuts the exchange's sockets down
when its deadline passes, so the blocked read returns at once and the call fails with ``requests.Timeout``.
Sockets are registered by the connection pools of ``DeadlineAdapter`` (mounted by ``new_session``) when a
connection is made or taken from the pool inside a ``total_deadline`` block; a session without that adapter
keeps only the per-operation timeout.

The ``requests`` side only, so that the worker's lean POST (``transport.py``) keeps the deadline without loading
``requests``: it is imported where a request goes over ``requests`` (a query, a session of the caller's own,
the credential fetches).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import watchdog
from .watchdog import watch

__all__ = ["DeadlineAdapter", "new_session", "total_deadline", "watch"]


@contextlib.contextmanager
def total_deadline(seconds: float) -> Iterator[None]:
    """Every socket the block's requests use (through a ``DeadlineAdapter``) is shut down ``seconds`` after
    the block starts; an exception raised because of that becomes ``requests.Timeout``."""
    try:
        with watchdog.total_deadline(seconds):
            yield
    except watchdog.Timeout as e:
        raise requests.Timeout(str(e)) from None


class _HTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        watch(sock)  # before the TLS handshake: a stalled handshake is cut too
        return sock


class _HTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        watch(sock)  # the handshake on this socket is cut too
        return sock

    def connect(self) -> None:
        super().connect()
        # The TLS socket that replaced the raw one (wrapping detaches the raw socket: its descriptor is gone, so
        # shutting it down would not stop a read on the TLS socket).
        watch(self.sock)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        watch(getattr(conn, "sock", None))  # a pooled connection: its socket is already there
        return conn


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        watch(getattr(conn, "sock", None))
        return conn


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections honour ``total_deadline`` (direct and through HTTP proxies)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme") and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


def new_session(pool_maxsize: int = 10) -> requests.Session:
    """A session whose http and https connections honour ``total_deadline``."""
    s = requests.Session()
    for prefix in ("https://", "http://"):
        s.mount(prefix, DeadlineAdapter(pool_connections=1, pool_maxsize=pool_maxsize))
    return s
