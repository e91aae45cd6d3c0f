"""logging.LoggerAdapter: the adapter's context reaches the event like any ``extra=``.

The adapter's dict becomes record attributes: ``%(request_id)s`` in the format, and the ``ces_`` keys
(``ces_event_name``, ``ces_dimensions``, ...) or a ``ces`` mapping choose the event's fields.

CES_ENDPOINT (or CES_REGION), CES_PROJECT_ID and credentials from the environment.
"""

from __future__ import annotations

import logging
import sys

from ces_logging import CESHandler

formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
console = logging.StreamHandler(sys.stdout)
console.setFormatter(formatter)
cloud_eye = CESHandler(event_source="shop.api")
cloud_eye.setFormatter(formatter)
base = logging.getLogger("shop.orders")
base.addHandler(console)
base.addHandler(cloud_eye)
base.setLevel(logging.INFO)

log = logging.LoggerAdapter(base, {"request_id": "r-42", "ces_dimensions": {"tenant": "acme"}})
log.info("order %s placed", "A-1001")
log.warning("payment provider slow: %d ms", 2300)
try:
    int("twelve")
except ValueError:
    log.exception("order %s rejected", "A-1002")
