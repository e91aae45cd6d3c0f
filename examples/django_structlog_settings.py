"""django-structlog's settings shape with Cloud Eye: the event's content is the JSON line of ``json_formatter``.

The LOGGING dict and ``structlog.configure`` are the ones django-structlog documents (its console, JSON file
and ``ProcessorFormatter`` formatters); the Cloud Eye handler is one more handler, given ``json_formatter``,
so its content is the line the JSON log file gets. Context bound with ``structlog.contextvars`` (the
request id django-structlog's middleware binds) is in it; ``ces_`` key-values choose the event's name, level
and dimensions.

Run as a script, it answers two requests with Django's test client. CES_ENDPOINT (or CES_REGION),
CES_PROJECT_ID and credentials from the environment; JSON_LOG_FILE names the JSON log (default json.log).
"""

from __future__ import annotations

import os

import structlog

JSON_LOG_FILE = os.environ.get("JSON_LOG_FILE", "json.log")
HANDLERS = ["console", "json_file", "cloud_eye"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json_formatter": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": structlog.processors.JSONRenderer(),
            # records from plain logging (django.request's, say); add a TimeStamper here if you like: it stamps
            # the time of each formatting, so then the file's and the event's timestamps differ by microseconds
            "foreign_pre_chain": [
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.stdlib.PositionalArgumentsFormatter(),
                structlog.processors.format_exc_info,
            ],
        },
        "plain_console": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": structlog.dev.ConsoleRenderer(colors=False),
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain_console"},
        "json_file": {
            "class": "logging.handlers.WatchedFileHandler",
            "filename": JSON_LOG_FILE,
            "formatter": "json_formatter",
        },
        "cloud_eye": {
            "()": "ces_logging.handler_factory",
            "level": "WARNING",
            "event_source": "shop.django",
            "formatter": "json_formatter",  # the JSON file's line is the event's content
        },
    },
    "loggers": {
        "django_structlog": {"handlers": HANDLERS, "level": "INFO"},
        "shop": {"handlers": HANDLERS, "level": "INFO"},  # your project's loggers
        "django.request": {"handlers": HANDLERS, "level": "ERROR", "propagate": False},
    },
}

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    cache_logger_on_first_use=True,
)


def main() -> None:
    import django
    from django.conf import settings
    from django.http import HttpRequest, HttpResponse
    from django.urls import path

    log = structlog.get_logger("shop.payments")

    def pay(request: HttpRequest) -> HttpResponse:
        structlog.contextvars.bind_contextvars(request_id="r-42")  # what django-structlog's middleware does
        log.info("payment_started", order=1002)  # INFO: console and file only
        log.warning("card_declined", order=1002, ces_dimensions={"provider": "acme"}, ces_event_level="Major")
        return HttpResponse("sorry")

    def crash(request: HttpRequest) -> HttpResponse:
        structlog.contextvars.bind_contextvars(request_id="r-43")
        raise RuntimeError("unhandled in a view")  # django.request logs it, with the traceback

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        SECRET_KEY="example-only",
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        LOGGING=LOGGING,
    )
    globals()["urlpatterns"] = [path("pay", pay), path("crash", crash)]
    django.setup()
    from django.test import Client

    client = Client(raise_request_exception=False)
    assert client.get("/pay").status_code == 200
    structlog.contextvars.clear_contextvars()
    assert client.get("/crash").status_code == 500


if __name__ == "__main__":
    main()
