"""Real frameworks: Django and Flask apps (in their own processes) and loguru, configured from examples/."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time

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


def _wait_for_line(p: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    """Read the process's output (on a thread, so the wait has a deadline) until a line matches."""
    if not hasattr(p, "_lines"):
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(ln) for ln in p.stdout], daemon=True)  # type: ignore[union-attr]
        reader.start()
        p._lines, p._reader = lines, reader  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = p._lines.get(timeout=max(0.01, deadline - time.monotonic()))  # type: ignore[attr-defined]
        except queue.Empty:
            break
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    p.kill()
    raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n" + "".join(seen))


def _rest_of_output(p: subprocess.Popen[str]) -> str:
    """What the process wrote that ``_wait_for_line`` has not read, once it has ended."""
    if not hasattr(p, "_lines"):
        return p.communicate(timeout=30)[0]
    p._reader.join(timeout=30)  # type: ignore[attr-defined]
    out = []
    while True:
        try:
            out.append(p._lines.get_nowait())  # type: ignore[attr-defined]
        except queue.Empty:
            return "".join(out)


def _start_uvicorn(emu: Emulator) -> tuple[subprocess.Popen[str], str]:
    """``uvicorn examples.fastapi_app:app --log-config examples/uvicorn_logging.json`` on a free port, as the
    recipe says; returns the process and its base URL once it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_"))}
    env.update(CES_ENDPOINT=emu.url, CES_PROJECT_ID=PROJECT, HUAWEICLOUD_SDK_CREDENTIALS_FILE="/nonexistent")
    p = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1", "--port", "0",
         "--log-config", "examples/uvicorn_logging.json"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return p, _wait_for_line(p, r"Uvicorn running on (http://127\.0\.0\.1:\d+)").group(1)


def test_fastapi_under_uvicorn_unhandled_errors_reach_cloud_eye(emu: Emulator) -> None:
    import signal
    import urllib.error
    import urllib.request

    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    p, url = _start_uvicorn(emu)
    try:
        with urllib.request.urlopen(f"{url}/pay/A-7", timeout=10) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{url}/crash", timeout=10)
        assert e.value.code == 500
    finally:
        p.send_signal(signal.SIGINT)  # uvicorn shuts down; the handler drains at exit
        try:
            p.wait(timeout=30)
        finally:
            p.kill()
    assert p.returncode == 0
    crash = emu.events(PROJECT, "uvicorn_error")
    assert len(crash) == 1 and crash[0]["event_source"] == "shop.fastapi"
    content = crash[0]["detail"]["content"]
    assert content.startswith("Exception in ASGI application") and "Traceback (most recent call last)" in content
    assert crash[0]["detail"]["event_level"] == "Major" and crash[0]["detail"]["event_state"] == "incident"
    # uvicorn's and Starlette's frames alone pass 4096 characters: the content is cut in the middle, so the
    # first line and the line naming the exception (the end) are both kept
    assert "truncated" in content, "the traceback fitted: the test no longer covers a cut one"
    assert content.rstrip().endswith("RuntimeError: unhandled in an endpoint"), content[-300:]
    pay = emu.events(PROJECT, "shop_api")
    assert [e["detail"]["content"] for e in pay] == ["payment failed for order A-7"]
    assert pay[0]["detail"]["resource_id"] == "order-A-7"
    # the access log (INFO) and uvicorn's start-up lines stay out of Cloud Eye
    assert emu.count(PROJECT) == 2


CELERY_WORKER = """
    import sys
    from examples import celery_app

    if sys.argv[1:] == ["slow"]:  # nothing sent on a timer: only the pool process's shutdown hook delivers
        celery_app.LOGGING["handlers"]["cloud_eye"]["flush_interval"] = "120"
    celery_app.charge.delay("A-9")  # memory transport: the message waits in this process for the worker
    celery_app.app.worker_main(["worker", "--pool=prefork", "--concurrency=1", "--loglevel=INFO",
                                "--without-heartbeat", "--without-mingle", "--without-gossip"])
"""


@pytest.mark.parametrize("mode", ["timer", "slow"])
def test_celery_prefork_task_errors_reach_cloud_eye(emu: Emulator, mode: str) -> None:
    """A real pre-fork worker, broker-free (Celery's memory transport): the task runs in a forked pool process,
    which sends its own events; with a long flush interval the ``worker_process_shutdown`` hook delivers them."""
    import signal
    import textwrap

    pytest.importorskip("celery")
    from .conftest import wait_for

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_"))}
    env.update(CES_ENDPOINT=emu.url, CES_PROJECT_ID=PROJECT, HUAWEICLOUD_SDK_CREDENTIALS_FILE="/nonexistent",
               PYTHONPATH=str(ROOT), C_FORCE_ROOT="1")  # fmt: skip
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CELERY_WORKER), mode], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        def task_events() -> int:
            return len(emu.events(PROJECT, "celery_app_trace")) + len(emu.events(PROJECT, "shop_tasks"))

        if mode == "timer":
            assert wait_for(lambda: task_events() == 2, timeout=60), "the task's events did not arrive"
        else:
            _wait_for_line(p, "raised unexpected")  # the task ran (the worker says so); now stop it
            time.sleep(0.5)
            # queued in the pool process, nothing sent yet (without the hook they would be lost at its exit)
            assert task_events() == 0
        p.send_signal(signal.SIGTERM)  # warm shutdown: the pool process ends, its hook delivers
        p.wait(timeout=60)
        out = _rest_of_output(p)
    finally:
        p.kill()
    assert p.returncode == 0, out
    failure = emu.events(PROJECT, "celery_app_trace")
    assert len(failure) == 1 and failure[0]["event_source"] == "shop.celery"
    content = failure[0]["detail"]["content"]
    assert "raised unexpected: RuntimeError('payment provider down while charging A-9')" in content
    assert "Traceback (most recent call last)" in content and failure[0]["detail"]["event_level"] == "Major"
    task_log = emu.events(PROJECT, "shop_tasks")
    assert [e["detail"]["content"] for e in task_log] == ["card for order A-9 declined once, trying again"]
    assert "not delivered" not in (out or "")
