"""Every code block in README.md runs: Python blocks as scripts (or with pytest when they hold tests), shell
blocks' `ces-logging` lines as commands, all against the emulator. The set-up lines (`make ...`, `pip install`)
are what CI itself runs to get here."""

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

import pytest

from ces_logging.emulator import Emulator

from .conftest import PROJECT

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def env_for(emu: Emulator) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_"))}
    return {**e, "CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT, "HUAWEICLOUD_SDK_CREDENTIALS_FILE": "/none"}


def test_readme_has_blocks() -> None:
    assert sum(lang == "python" for lang, _ in BLOCKS) >= 4 and sum(lang == "sh" for lang, _ in BLOCKS) >= 3


@dataclass
class Expect:
    """What a README block must do besides exiting 0: ``trailer`` runs after it (the part of an app a recipe
    leaves out: applying a LOGGING dict, a request to a Flask app), then each ``events`` entry (event name or
    None for any, a piece of the content, level or None) must be among the emulator's events, ``total`` (if
    set) is how many there are in all, and ``stdout`` must be in the block's output."""

    trailer: str = ""
    events: tuple[tuple[str | None, str, str | None], ...] = ()
    total: int | None = None
    stdout: str = ""


# Each Python block of the README, by a line of its own: a block with no entry here fails (say what it does).
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
    '@app.route("/pay/<order>")': Expect(
        trailer='assert app.test_client().get("/pay/7").get_data(as_text=True) == "sorry"',
        events=((None, "payment failed for order 7", "Major"),),
        total=1,
    ),
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
    'IAMPasswordTokenProvider("alice", "her-password"': Expect(
        trailer="""
assert "her-password" not in repr(provider) + repr(client)
print("constructed without a request")
""",
        total=0,
        stdout="constructed without a request",
    ),
    "def test_payment_errors_reach_cloud_eye": Expect(stdout="1 passed"),  # its own emulator: ces_emulator
    '"storm_control": "10/5s",': Expect(
        events=(("shop_payments", "order A-17: payment failed", "Major"),
                ("shop_payments", "order A-17: cart loaded", None)),  # the context goes with the error
        total=1,
    ),
}


def all_events(emu: Emulator) -> list[dict[str, Any]]:
    return [e for k in emu.state.store.kinds(PROJECT) for e in emu.events(PROJECT, k["event_name"])]


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
def test_python_block_runs(index: int, emu: Emulator, tmp_path: Path) -> None:
    code = BLOCKS[index][1]
    matches = [e for marker, e in EXPECT.items() if marker in code]
    if len(matches) != 1:
        pytest.fail(f"README block {index} matches {len(matches)} entries of EXPECT: give it one\n{code}")
    (expect,) = matches
    if "def test_" in code:
        f = tmp_path / "test_block.py"
        f.write_text(code + expect.trailer)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(f)]
    else:
        cmd = [sys.executable, "-c", code + "\n" + textwrap.dedent(expect.trailer)]
    r = subprocess.run(cmd, env=env_for(emu), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert expect.stdout in r.stdout, r.stdout
    assert "not delivered" not in r.stdout + r.stderr  # what was queued at exit went
    events = all_events(emu)
    got = [(e["event_name"], e["detail"]["content"], e["detail"]["event_level"]) for e in events]
    for name, piece, level in expect.events:
        assert any((name in (None, n)) and piece in c and (level in (None, lv)) for n, c, lv in got), (
            (name, piece, level), got)
    if expect.total is not None:
        assert len(events) == expect.total, got


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "sh"])
def test_shell_block_runs(index: int, emu: Emulator) -> None:
    lines = [ln.split("#")[0].strip() for ln in BLOCKS[index][1].splitlines()]
    commands = [ln for ln in lines if ln.startswith("ces-logging ")]
    others = [ln for ln in lines if ln and not ln.startswith("ces-logging ")]
    assert all(ln.startswith(("make ", "pip install")) for ln in others), others
    for c in commands:
        args = shlex.split(c)[1:]
        r = subprocess.run([sys.executable, "-m", "ces_logging", *args], env=env_for(emu), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, (c, r.stdout, r.stderr)
