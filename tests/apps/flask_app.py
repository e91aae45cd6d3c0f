"""A Flask app for gunicorn: ``/err`` logs the same error every time (identical event fields), ``/health`` logs
nothing and answers the worker's pid. Importing it logs one ``flaskBoot`` warning.
``gunicorn tests.apps.flask_app:app``"""

from __future__ import annotations

import logging
import os

from flask import Flask

import ces_logging

ces_logging.configure(level="WARNING", event_name="flaskErr", event_source="proc.flask", flush_interval=60)

# One record at import: once per process that imports the app (each worker; the master alone with --preload).
logging.getLogger("proc.flask").warning("app loaded", extra={"ces": {"event_name": "flaskBoot"}})

app = Flask(__name__)


@app.route("/health")
def health() -> str:
    return str(os.getpid())  # the tests wait until every worker has answered


@app.route("/err")
def err() -> str:
    logging.getLogger("proc.flask").error("payment failed")
    return "logged"
