"""python-json-logger: the event's content is the JSON line the same JsonFormatter prints, extras included.

Values passed with ``extra=`` become JSON keys, as on any handler with this formatter. ``json_content=True``
keeps the content valid JSON when it has to be cut to the service's 4,096 characters.

CES_ENDPOINT (or CES_REGION), CES_PROJECT_ID and credentials from the environment.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from ces_logging import CESHandler

formatter = JsonFormatter("{asctime}{levelname}{name}{message}", style="{")

console = logging.StreamHandler(sys.stdout)
console.setFormatter(formatter)
cloud_eye = CESHandler(event_source="shop.api", json_content=True)
cloud_eye.setFormatter(formatter)
log = logging.getLogger("shop.api")
log.addHandler(console)
log.addHandler(cloud_eye)
log.setLevel(logging.INFO)

log.warning("slow request", extra={"request_id": "r-42", "path": "/pay", "ms": 2300})
log.error(
    "payment failed for %s",
    "order-1002",
    extra={"request_id": "r-43", "ces": {"resource_id": "order-1002", "dimensions": {"provider": "acme"}}},
)
try:
    {}["basket"]
except KeyError:
    log.exception("checkout crashed", extra={"request_id": "r-44"})
