"""What the documented code blocks must do, shared by tests/test_readme.py and tests/test_docs.py.

A block that checks nothing itself (no ``assert``, no test in it) is found here by a line of its own, with what
it must make the emulator hold: a block that only logs and exits 0 would pass whatever happened to its records.
The README and the site show some blocks twice (the README's set-up snippets are also on the Frameworks page):
one entry serves both copies, which must then be the same code.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ces_logging.emulator import Emulator

from .conftest import PROJECT

ROOT = Path(__file__).resolve().parent.parent


def env_for(emu: Emulator) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_"))}
    return {**e, "CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT, "HUAWEICLOUD_SDK_CREDENTIALS_FILE": "/none"}


@dataclass
class Expect:
    """What a block must do besides exiting 0: ``trailer`` runs after it (the part of an app a recipe leaves
    out: applying a LOGGING dict), then each ``events`` entry (event name or None for any, a piece of the
    content, level or None) must be among the emulator's events, ``total`` (if set) is how many there are in
    all, and ``stdout`` must be in the block's output."""

    trailer: str = ""
    events: tuple[tuple[str | None, str, str | None], ...] = ()
    total: int | None = None
    stdout: str = ""


# Each block that does not check itself, by a line of its own.
EXPECT = {
    'log.warning("payment provider slow: %d ms", 2300)  # -> event shop_checkout': Expect(
        events=(("shop_checkout", "payment provider slow: 2300 ms", "Minor"), ("shop_checkout", "payment failed",
                                                                              "Major")), total=2),
    '"dimensions": "env=prod,team=payments"': Expect(events=(("jobs", "queue is 900 deep", "Major"),), total=1),
    '"loggers": {"django.request": {"handlers": ["cloud_eye"], "level": "ERROR", "propagate": False}}': Expect(
        trailer="""
import logging.config
logging.config.dictConfig(LOGGING)
logging.getLogger("django.request").error("Internal Server Error: /pay/7")
logging.getLogger("shop.views").info("below the handler's WARNING: no event")
logging.getLogger("shop.views").warning("stock low")
""",
        # django.request does not propagate: its error is one event, not two
        events=(("django_request", "Internal Server Error: /pay/7", "Major"), ("shop_views", "stock low", "Minor")),
        total=2,
    ),
    '@app.route("/pay/<order>")': Expect(events=((None, "payment failed for order 1002", "Major"),), total=1),
    "def deliver_before_the_pool_process_ends": Expect(
        trailer="""
configure_logging()
logging.getLogger("tasks").error("task failed")
deliver_before_the_pool_process_ends()
""",
        events=(("tasks", "task failed", "Major"),),
        total=1,
    ),
    'log.error("payment_failed", order=1002, amount=12.5)': Expect(
        events=(("shop_checkout", '"payment_failed"', "Major"), ("paymentProvider", '"provider_slow"', "Major")),
        total=2,
    ),
    'structlog.get_logger("shop.jobs").warning("job_slow"': Expect(events=(("shop_jobs", '"job_slow"', "Minor"),),
                                                                   total=1),
    'logger.add(CESHandler(event_name="shopWorker")': Expect(
        events=(("shopWorker", "payment failed for order 1002", "Major"),), total=1
    ),
    "CESHandler(json_content=True)": Expect(events=(("shop_api", '"slow request"', "Minor"),), total=1),
    '"django.server": {"handlers": ["django.server", "cloud_eye"]': Expect(
        trailer="""
import logging.config
logging.config.dictConfig(LOGGING)
logging.getLogger("django.server").warning('"GET /missing HTTP/1.1" 404 0', extra={"status_code": 404})
""",
        events=(("django_server", '] "GET /missing HTTP/1.1" 404 0', "Minor"),),  # the formatter's line
        total=1,
        stdout='] "GET /missing HTTP/1.1" 404 0',
    ),
    "@ces_logging.deliver_before_return": Expect(events=(("orders", "payment failed for order 42", "Major"),), total=1),
    "logging.LoggerAdapter(base": Expect(events=(("shop_orders", "[r-42] payment provider slow: 2300 ms", "Minor"),),
                                         total=1),
    '"storm_control": "10/5s",': Expect(
        events=(("shop_payments", "order A-17: payment failed", "Major"),
                ("shop_payments", "order A-17: cart loaded", None)),  # the context goes with the error
        total=1,
    ),
}


def expectations_of(code: str) -> list[Expect]:
    return [e for marker, e in EXPECT.items() if marker in code]


def checks_itself(code: str) -> bool:
    return "assert " in code or "def test_" in code


def all_events(emu: Emulator) -> list[dict[str, Any]]:
    return [e for k in emu.state.store.kinds(PROJECT) for e in emu.events(PROJECT, k["event_name"])]


def run_python_block(code: str, expect: Expect | None, emu: Emulator, tmp_path: Path) -> None:
    """The block as a script (with pytest when it holds a test) against ``emu``, then ``expect`` checked."""
    expect = expect or Expect()
    if "def test_" in code:
        f = tmp_path / "test_block.py"
        f.write_text(code + textwrap.dedent(expect.trailer))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(f)]
    else:
        cmd = [sys.executable, "-c", code + "\n" + textwrap.dedent(expect.trailer)]
    r = subprocess.run(cmd, env=env_for(emu), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert expect.stdout in r.stdout, r.stdout
    assert "not delivered" not in r.stdout + r.stderr  # what was queued at exit went
    if "def test_" in code:
        assert re.search(r"\b[1-9]\d* passed", r.stdout) and "failed" not in r.stdout, r.stdout
    events = all_events(emu)
    got = [(e["event_name"], e["detail"]["content"], e["detail"]["event_level"]) for e in events]
    for name, piece, level in expect.events:
        assert any((name in (None, n)) and piece in c and (level in (None, lv)) for n, c, lv in got), (
            (name, piece, level), got)
    if expect.total is not None:
        assert len(events) == expect.total, got


def run_shell_block(code: str, emu: Emulator) -> None:
    """A shell block's ``ces-logging`` lines, in order, against one emulator: each must succeed; an event that
    ``send`` reported must then be stored, and ``events``/``doctor`` must print something. Its other lines may
    only be the set-up CI itself runs (``make ...``, ``pip install``)."""
    lines = [ln.split("#")[0].strip() for ln in code.splitlines()]
    commands = [ln for ln in lines if ln.startswith("ces-logging ")]
    others = [ln for ln in lines if ln and not ln.startswith("ces-logging ")]
    assert all(ln.startswith(("make ", "pip install")) for ln in others), others
    for c in commands:
        args = shlex.split(c)[1:]
        r = subprocess.run([sys.executable, "-m", "ces_logging", *args], env=env_for(emu), capture_output=True,
                           text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, (c, r.stdout, r.stderr)
        if args[0] in ("events", "doctor"):
            assert r.stdout.strip(), (c, r.stderr)
        if args[0] == "send":
            name = args[args.index("--name") + 1]
            assert emu.events(PROJECT, name), (c, "the event sent is not stored")
