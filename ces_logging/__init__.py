"""ces_logging: Python logging records as Huawei Cloud Eye (CES) custom events.

import logging, ces_logging
ces_logging.configure()          # reads CES_ENDPOINT / CES_REGION, CES_PROJECT_ID and credentials
logging.getLogger("shop").error("payment failed")   # -> a Major, incident event "shop"
"""

from .auth import AKSKAuth, IAMPasswordTokenProvider, MetadataCredentialsProvider, TokenAuth
from .client import CESClient, EventDetailPage, ReportedEvent
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
from .events import CustomEvent, Dimension, EventRecord
from .factory import configure, handler_factory
from .handler import CESHandler, HandlerStats

__version__ = "0.2.0"

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
    "ReportedEvent",
    "TokenAuth",
    "__version__",
    "configure",
    "handler_factory",
    "is_retryable",
]
