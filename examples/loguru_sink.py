"""loguru: a CESHandler is a loguru sink; the event's content is the line loguru formats for it.

loguru formats the message for each sink (``format=``, or its JSON with ``serialize=True``) and hands a
logging handler a record whose message is that text; key-values bound with ``logger.bind(...)`` reach the
record as ``record.extra``, and the ``ces_`` ones choose the event's name, level and dimensions.

CES_ENDPOINT (or CES_REGION), CES_PROJECT_ID and credentials from the environment.
``python loguru_sink.py`` uses a format; ``python loguru_sink.py serialize`` sends loguru's JSON.
"""

from __future__ import annotations

import logging
import sys

from loguru import logger

from ces_logging import CESHandler

FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
serialize = sys.argv[1:] == ["serialize"]

logger.remove()  # loguru's default stderr sink
logger.add(logging.StreamHandler(sys.stdout), format=FORMAT, serialize=serialize, level="INFO")
# loguru's record name is the module (here __main__): name the event, or bind ces_event_name
cloud_eye = CESHandler(event_source="shop.worker", event_name="shopWorker")
logger.add(cloud_eye, format=FORMAT, serialize=serialize, level="INFO")

logger.info("worker started")  # event shopWorker, Info
logger.error("payment failed for order {}", 1002)  # event shopWorker, Major
logger.bind(ces_event_name="paymentProvider", ces_dimensions={"provider": "acme"}).warning(
    "provider slow: {} ms", 2300
)  # event paymentProvider, Minor, dimension provider=acme
try:
    divmod(1002, 0)
except ZeroDivisionError:
    logger.exception("refund crashed")  # the traceback is in loguru's text
