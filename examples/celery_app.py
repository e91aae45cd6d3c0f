"""Celery: errors in tasks reach Cloud Eye from the pre-fork worker's pool processes.

Two things to know. A worker sets logging up itself (and by default takes the root logger over, dropping its
handlers): connect ``setup_logging`` and Celery leaves logging to you. And the pool's processes are forked
from the worker and end with ``os._exit``, so no exit hook runs in them: flush in ``worker_process_shutdown``.
In between, the handler is fork-aware: each pool process gets its own queue, thread and connections, and an
error in a task is sent from the process that ran it. Celery logs a task's failure on ``celery.app.trace``
at ERROR with the traceback (event name ``celery_app_trace``).

    CES_ENDPOINT=... CES_PROJECT_ID=... celery -A examples.celery_app worker --loglevel=INFO

The broker here defaults to ``memory://`` (Celery's in-process transport, enough for the test); set
``CELERY_BROKER_URL`` for a real one.
"""

from __future__ import annotations

import logging
import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_shutdown

from ces_logging import CESHandler

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "cloud_eye": {"()": "ces_logging.handler_factory", "level": "WARNING", "event_source": "shop.celery"},
    },
    "root": {"handlers": ["console", "cloud_eye"], "level": "INFO"},
}

app = Celery("shop", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
log = logging.getLogger("shop.tasks")


@setup_logging.connect
def configure_logging(**kwargs: Any) -> None:
    logging.config.dictConfig(LOGGING)


@worker_process_shutdown.connect
def deliver_before_the_pool_process_ends(**kwargs: Any) -> None:
    for handler in logging.root.handlers:
        if isinstance(handler, CESHandler):
            handler.close()  # delivers what is queued, within its grace_period (5 s by default)


@app.task
def charge(order: str) -> None:
    log.warning("card for order %s declined once, trying again", order)
    raise RuntimeError(f"payment provider down while charging {order}")
