"""ces_logging: Python logging records as Huawei Cloud Eye (CES) custom events.

import logging, ces_logging
ces_logging.configure()          # reads CES_ENDPOINT / CES_REGION, CES_PROJECT_ID and credentials
logging.getLogger("shop").error("payment failed")   # -> a Major, incident event "shop"

Importing the package is cheap: the HTTP stack (requests, urllib3, ssl) and python-json-logger are loaded when
first needed (the worker's first send, a query, a JSON formatter, a CLI command), never by ``import ces_logging``,
by a ``configure()`` that finds nothing configured, or by building a handler that will send. Every process pays
its imports when it starts (each ``manage.py`` command, each CLI call, each serverless cold start). So the names
that need the HTTP stack or the dataclasses are exported lazily, by ``__getattr__`` below; for a type checker
they are ordinary imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CESAuthError,
    CESEndpointError,
    CESError,
    CESServerError,
    CESThrottledError,
    CESTransportError,
    CESValidationError,
    ConfigError,
    is_retryable,
)
from .factory import configure, handler_factory
from .handler import CESHandler
from .options import Options
from .serverless import deliver_before_return, invocation

if TYPE_CHECKING:
    from ._service.auth import AKSKAuth, IAMPasswordTokenProvider, MetadataCredentialsProvider, TokenAuth
    from ._service.client import CESClient
    from .model import CustomEvent, Dimension, EventDetailPage, EventRecord, HandlerStats, ReportedEvent

__version__ = "0.2.0"

# name -> the module that defines it, imported on first use (the HTTP stack; dataclasses, which load inspect)
_LAZY = {
    "AKSKAuth": "_service.auth",
    "IAMPasswordTokenProvider": "_service.auth",
    "MetadataCredentialsProvider": "_service.auth",
    "TokenAuth": "_service.auth",
    "CESClient": "_service.client",
    "EventDetailPage": "model",
    "ReportedEvent": "model",
    "CustomEvent": "model",
    "Dimension": "model",
    "EventRecord": "model",
    "HandlerStats": "model",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AKSKAuth",
    "CESAuthError",
    "CESClient",
    "CESEndpointError",
    "CESError",
    "CESHandler",
    "CESServerError",
    "CESThrottledError",
    "CESTransportError",
    "CESValidationError",
    "ConfigError",
    "CustomEvent",
    "Dimension",
    "EventDetailPage",
    "EventRecord",
    "HandlerStats",
    "IAMPasswordTokenProvider",
    "MetadataCredentialsProvider",
    "Options",
    "ReportedEvent",
    "TokenAuth",
    "__version__",
    "configure",
    "deliver_before_return",
    "handler_factory",
    "invocation",
    "is_retryable",
]
