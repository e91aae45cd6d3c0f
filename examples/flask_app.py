"""Flask: configure logging before the app is made, and Flask's own errors reach Cloud Eye too."""

from __future__ import annotations

from logging.config import dictConfig

from flask import Flask

dictConfig(
    {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "cloud_eye": {"()": "ces_logging.handler_factory", "level": "WARNING", "event_source": "shop.flask"},
        },
        "root": {"handlers": ["cloud_eye"], "level": "INFO"},
    }
)

app = Flask(__name__)


@app.route("/pay/<order>")
def pay(order: str) -> str:
    app.logger.error("payment failed for order %s", order, extra={"ces": {"resource_id": f"order-{order}"}})
    return "sorry"


@app.route("/crash")
def crash() -> str:
    raise RuntimeError("unhandled in a view")  # Flask logs it at ERROR with the traceback
