"""structlog rendering before the standard library: structlog's JSONRenderer makes the line, logging carries it.

With ``JSONRenderer`` as structlog's last processor and ``stdlib.LoggerFactory``, the stdlib record's message
is already the JSON line: the Cloud Eye handler needs no formatter and its content is that line. The event's
name comes from the logger (``shop.jobs`` -> ``shop_jobs``); ``ces_`` key-values are only text in the JSON here:
to choose name, level or dimensions from bound key-values, render in a ``ProcessorFormatter`` instead
(examples/structlog_stdlib.py).

CES_ENDPOINT (or CES_REGION), CES_PROJECT_ID and credentials from the environment.
"""

from __future__ import annotations

import logging
import sys

import structlog

from ces_logging import CESHandler

structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),  # the message logging gets is this JSON line
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
logging.getLogger().addHandler(CESHandler(event_source="shop.jobs"))  # no formatter: the content is the message

log = structlog.get_logger("shop.jobs")
log.info("job_started", job="nightly-export")
log.warning("job_slow", job="nightly-export", minutes=42)
try:
    raise OSError("disk full")
except OSError:
    log.exception("job_failed", job="nightly-export")
