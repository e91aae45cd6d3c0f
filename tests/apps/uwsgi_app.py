"""tests/apps/flask_app.py with a short ``flush_interval``, for uWSGI: its workers' exit runs Python's atexit
only when uWSGI sees them idle (``uwsgi_python_atexit``), so a uWSGI test cannot count on the exit's drain; the
records must arrive while the workers serve. Imported in the master (prefork) or in each worker (lazy-apps)."""

from __future__ import annotations

import logging
import os

from flask import Flask

import ces_logging

ces_logging.configure(level="WARNING", event_name="flaskErr", event_source="proc.uwsgi", flush_interval=0.2)

# One record at import: in the master (prefork, which forks the workers right after) or in each worker.
logging.getLogger("proc.uwsgi").warning("app loaded", extra={"ces": {"event_name": "flaskBoot"}})

app = Flask(__name__)


@app.route("/health")
def health() -> str:
    return str(os.getpid())


@app.route("/err")
def err() -> str:
    logging.getLogger("proc.uwsgi").error("payment failed")
    return "logged"
