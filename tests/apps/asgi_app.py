"""A bare ASGI app (no framework, so no extra dependency) for uvicorn and gunicorn's UvicornWorker. ``/err``
logs the same error every time; the lifespan shutdown (after SIGTERM, before uvicorn raises SIGTERM again with
the default disposition) logs one ``asgiStop`` warning.
``uvicorn tests.apps.asgi_app:app``"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import ces_logging

ces_logging.configure(level="WARNING", event_name="asgiErr", event_source="proc.asgi", flush_interval=60)

_log = logging.getLogger("proc.asgi")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":  # the server's graceful shutdown, after SIGTERM
                _log.warning("app stopping", extra={"ces": {"event_name": "asgiStop"}})
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/err":
        _log.error("payment failed")
        body = b"logged"
    else:
        body = str(os.getpid()).encode()  # the tests wait until every worker has answered
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
