"""structlog through the standard library: the event's content is the line structlog renders on the console.

structlog's standard stdlib integration: its last processor is ``ProcessorFormatter.wrap_for_formatter`` and
the renderer lives in a ``ProcessorFormatter`` set on each handler. Give the Cloud Eye handler the same
formatter as the console and the event's content is exactly the console's line. Key-values bound (or passed)
with ``ces_`` names choose the event's name, level and dimensions.

CES_ENDPOINT (or CES_REGION), CES_PROJECT_ID and credentials from the environment.
``python structlog_stdlib.py`` renders JSON; ``python structlog_stdlib.py console`` renders with
``ConsoleRenderer(colors=False)``.
"""

from __future__ import annotations

import logging
import sys

import structlog

from ces_logging import CESHandler

if sys.argv[1:] == ["console"]:
    # ConsoleRenderer formats exc_info itself (sys.exc_info() when the record is rendered: at emit, in the except)
    chain = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.dev.ConsoleRenderer(colors=False)]
else:
    chain = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]

structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.StackInfoRenderer(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,  # the renderer runs in the handlers' formatter
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)
formatter = structlog.stdlib.ProcessorFormatter(
    # records from plain logging ("foreign" ones) get the logger name and level too
    foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.add_log_level],
    processors=chain,
)

console = logging.StreamHandler(sys.stdout)
console.setFormatter(formatter)
cloud_eye = CESHandler(event_source="shop.api")
cloud_eye.setFormatter(formatter)  # the same formatter: the event's content is the console's line
root = logging.getLogger()
root.addHandler(console)
root.addHandler(cloud_eye)
root.setLevel(logging.INFO)

log = structlog.get_logger("shop.checkout")
log.info("order_placed", order=1001)  # event shop_checkout, Info
log.error("payment_failed", order=1002, amount=12.5)  # event shop_checkout, Major
# ces_ key-values, bound or passed, choose the event's name, level and dimensions
payments = log.bind(ces_event_name="paymentProvider", ces_dimensions={"provider": "acme"})
payments.warning("provider_slow", ms=2300, ces_event_level="Major")  # event paymentProvider, Major
try:
    divmod(1002, 0)
except ZeroDivisionError:
    log.exception("refund_crashed", order=1003)  # the traceback is rendered now, on this thread
logging.getLogger("shop.legacy").warning("stock low for %s: %d left", "sku-7", 3)  # plain logging, same formatter
