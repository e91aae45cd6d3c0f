"""Real frameworks: Django and Flask apps (in their own processes) and loguru, configured from examples/."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ces_logging import CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT, ROOT, run_python


def run_py(code: str, emu: Emulator, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_python(code, timeout, CES_ENDPOINT=emu.url, CES_PROJECT_ID=PROJECT)


def test_django_view_error_reaches_cloud_eye(emu: Emulator) -> None:
    code = """
        import django
        from django.conf import settings
        from django.http import HttpResponse
        from django.urls import path
        import logging
        from examples.django_settings import LOGGING

        def pay(request):
            logging.getLogger("shop.payments").error("card declined for %s", "u-7")
            return HttpResponse("sorry")

        def crash(request):
            raise RuntimeError("unhandled in a view")

        urlpatterns = [path("pay", pay), path("crash", crash)]
        settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["testserver"], SECRET_KEY="x",
                           MIDDLEWARE=[], LOGGING=LOGGING)
        django.setup()
        from django.test import Client
        c = Client(raise_request_exception=False)
        assert c.get("/pay").status_code == 200
        assert c.get("/crash").status_code == 500
        # no flush: the process just ends, and the handler drains at exit
    """
    r = run_py(code, emu)
    assert r.returncode == 0, r.stderr
    payments = emu.events(PROJECT, "shop_payments")
    assert [e["detail"]["content"] for e in payments] == ["card declined for u-7"]
    assert payments[0]["event_source"] == "shop.django" and payments[0]["detail"]["event_level"] == "Major"
    crash = emu.events(PROJECT, "django_request")
    assert len(crash) == 1 and "RuntimeError: unhandled in a view" in crash[0]["detail"]["content"]


def test_flask_app_errors_reach_cloud_eye(emu: Emulator) -> None:
    code = """
        from examples.flask_app import app
        c = app.test_client()
        assert c.get("/pay/A-1").status_code == 200
        assert c.get("/crash").status_code == 500
    """
    r = run_py(code, emu)
    assert r.returncode == 0, r.stderr
    names = {n: emu.events(PROJECT, n) for n in ("examples_flask_app",)}
    events = names["examples_flask_app"]
    contents = sorted(e["detail"]["content"].splitlines()[0] for e in events)
    assert contents[0].startswith("Exception on /crash [GET]") and contents[1] == "payment failed for order A-1"
    assert {e["event_source"] for e in events} == {"shop.flask"}
    pay = next(e for e in events if e["detail"]["content"].startswith("payment"))
    assert pay["detail"]["resource_id"] == "order-A-1"


def test_yaml_dictconfig_example(emu: Emulator) -> None:
    code = """
        import logging, logging.config, yaml
        logging.config.dictConfig(yaml.safe_load(open("examples/dictconfig.yaml")))
        logging.getLogger("jobs").warning("queue is %d deep", 900)
    """
    r = run_py(code, emu)
    assert r.returncode == 0, r.stderr
    ev = emu.events(PROJECT, "jobs")[0]
    assert ev["detail"]["content"] == "queue is 900 deep" and ev["event_source"] == "shop.worker"
    assert ev["detail"]["dimensions"] == [{"name": "env", "value": "prod"}, {"name": "team", "value": "payments"}]


def test_one_line_example(emu: Emulator) -> None:
    r = subprocess.run(
        [sys.executable, "examples/one_line.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT},
    )
    assert r.returncode == 0, r.stderr
    assert emu.events(PROJECT, "nightly_backup")[0]["detail"]["content"] == "backup of /var/lib/db failed: disk full"


def test_loguru_sink(emu: Emulator) -> None:
    loguru = pytest.importorskip("loguru")
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="viaLoguru", flush_interval=0.05)
    sink_id = loguru.logger.add(h, format="{message}")
    try:
        loguru.logger.error("from loguru {}", 42)
        loguru.logger.warning("second")
        assert h.flush(timeout=10)
    finally:
        loguru.logger.remove(sink_id)
        h.close()
    got = {e["detail"]["content"]: e["detail"]["event_level"] for e in emu.events(PROJECT, "viaLoguru")}
    assert got == {"from loguru 42": "Major", "second": "Minor"}


def test_logging_handler_name_is_left_alone(emu: Emulator) -> None:
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_name="fixed")
    h.set_name("my-handler")
    assert h.name == "my-handler" and h.event_name == "fixed"
    h.close()
