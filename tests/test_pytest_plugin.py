"""The pytest plugin (``pytest11`` entry point): a user's suite, run by pytest in its own process with no
conftest, gets ``ces_emulator``; ``configure()`` with no arguments sends to it; nothing outlives a test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

USER_SUITE = '''
import logging
import os

import ces_logging
from ces_logging import CESHandler


def test_configure_with_no_arguments_sends_to_the_emulator(ces_emulator):
    assert os.environ["CES_ENDPOINT"] == ces_emulator.url
    assert os.environ["CES_PROJECT_ID"] == ces_emulator.project_id
    handler = ces_logging.configure()
    log = logging.getLogger("shop.checkout")
    log.warning("slow")
    log.error("declined")
    assert handler.flush(timeout=10)
    got = ces_emulator.events("shop_checkout")
    assert [e["detail"]["content"] for e in got] == ["declined", "slow"]  # newest first
    assert [e["detail"]["content"] for e in ces_emulator.events("shop_checkout", event_level="Minor")] == ["slow"]
    assert ces_emulator.count() == 2 and ces_emulator.events("shop_checkout", project_id="other") == []


def test_a_handler_left_behind_with_queued_records(ces_emulator):
    # no flush, no close, a logger of its own and a long interval: the fixture's teardown must deliver and detach
    h = CESHandler(event_name="leftBehind", flush_interval=60)
    logging.getLogger("left.behind").addHandler(h)
    logging.getLogger("left.behind").error("still queued")
    pytest_state["url"] = ces_emulator.url
    pytest_state["emulator"] = ces_emulator.emulator


def test_nothing_outlives_the_test():
    handlers = [h for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
                if isinstance(lg, logging.Logger) for h in lg.handlers]
    assert not [h for h in handlers if isinstance(h, CESHandler)]
    assert "CES_ENDPOINT" not in os.environ and "CES_PROJECT_ID" not in os.environ
    # what the left-behind handler held was delivered before its emulator stopped
    emu = pytest_state["emulator"]
    assert emu.state.stats["events_stored"] == 1


pytest_state = {}
'''


def test_a_user_suite_gets_the_fixture_without_a_conftest(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_SUITE))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_", "PYTEST_"))}
    env["HUAWEICLOUD_SDK_CREDENTIALS_FILE"] = str(tmp_path / "none")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "3 passed" in out
    assert "not delivered" not in out  # no handler was left to report losses at exit


def test_the_plugin_can_be_switched_off(tmp_path: Path) -> None:
    (tmp_path / "test_off.py").write_text("def test_x(ces_emulator):\n    pass\n")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:ces_logging", "test_off.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "fixture 'ces_emulator' not found" in r.stdout
