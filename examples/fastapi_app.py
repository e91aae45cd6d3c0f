"""FastAPI (any Starlette or ASGI app) under uvicorn: unhandled exceptions reach Cloud Eye too.

uvicorn logs an unhandled exception ("Exception in ASGI application", with the traceback) on ``uvicorn.error``,
and its default logging set-up stops the ``uvicorn`` loggers from propagating to the root logger: a handler on
the root alone never sees those errors. ``uvicorn_logging.json`` beside this file is uvicorn's own default
set-up plus one Cloud Eye handler, on ``uvicorn`` (so ``uvicorn.error``) and on the root (the app's loggers):

    uvicorn examples.fastapi_app:app --log-config examples/uvicorn_logging.json

or ``python examples/fastapi_app.py``, which passes the same file as ``log_config``. Endpoint, project and
credentials come from the environment (CES_ENDPOINT or CES_REGION, CES_PROJECT_ID, HUAWEICLOUD_SDK_AK/_SK).
With ``--workers N`` each worker process configures its own handler from the same file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import FastAPI

LOG_CONFIG = json.loads((Path(__file__).parent / "uvicorn_logging.json").read_text())
log = logging.getLogger("shop.api")
app = FastAPI()


@app.get("/pay/{order}")
def pay(order: str) -> dict[str, str]:
    log.error("payment failed for order %s", order, extra={"ces": {"resource_id": f"order-{order}"}})
    return {"status": "declined"}


@app.get("/crash")
def crash() -> dict[str, str]:
    raise RuntimeError("unhandled in an endpoint")  # uvicorn logs it on uvicorn.error with the traceback


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000, log_config=LOG_CONFIG)
