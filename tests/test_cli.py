"""The ces-logging command, driven as a subprocess against the emulator."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from freezegun import freeze_time

from ces_logging import CESClient
from ces_logging.cli import build_parser, parse_time
from ces_logging.emulator import Emulator

from .conftest import AK, PROJECT, SK, item, now_ms, wait_for


def cli(*args: str, emu: Emulator | None = None, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_"))}
    e["HUAWEICLOUD_SDK_CREDENTIALS_FILE"] = "/nonexistent"
    if emu is not None:
        e.update({"CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT})
    e.update(env)
    return subprocess.run([sys.executable, "-m", "ces_logging", *args], env=e, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_send_then_events_shows_it(emu: Emulator) -> None:
    r = cli("send", "--name", "diskFull", "--level", "Major", "--content", "disk /data 95% full",
            "--resource-id", "vol-1", "--dimension", "host=web1", emu=emu)  # fmt: skip
    assert r.returncode == 0, r.stderr
    event_id = r.stdout.strip()
    assert re.fullmatch(r"ev\d{13}[A-Za-z0-9]{9}", event_id)
    table = cli("events", "diskFull", emu=emu)
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split()[:4] == ["time", "level", "state", "source"]
    assert "Major" in row and "incident" in row and "vol-1" in row and row.endswith("disk /data 95% full")
    js = cli("events", "diskFull", "--json", emu=emu)
    doc = json.loads(js.stdout)
    assert doc["event_id"] == event_id and doc["detail"]["dimensions"] == [{"name": "host", "value": "web1"}]


def test_events_filters_and_pages_with_progress(emu: Emulator) -> None:
    c = CESClient(PROJECT, endpoint=emu.url)
    t0 = now_ms() - 30_000
    c.report_events([item(name="many", t=t0 + i, event_level="Minor" if i % 10 else "Major") for i in range(230)])
    r = cli("events", "many", "--json", emu=emu)
    assert len(r.stdout.splitlines()) == 230
    assert r.stderr == "230/230 events\n"  # piped: the count once, no \r progress line in a log
    assert len(cli("events", "many", "--level", "Major", "--json", emu=emu).stdout.splitlines()) == 23
    limited = cli("events", "many", "--limit", "5", "--json", emu=emu).stdout.splitlines()
    assert [json.loads(x)["time"] for x in limited] == [t0 + 229 - i for i in range(5)]
    window = cli("events", "many", "--since", str(t0 + 220), "--until", str(t0 + 224), "--json", emu=emu)
    assert len(window.stdout.splitlines()) == 5
    none = cli("events", "nothing", emu=emu)
    assert none.returncode == 0 and "no nothing events match" in none.stderr


_AS_FROM_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'ces-logging'; runpy.run_module('ces_logging', run_name='__main__', alter_sys=True)"
)


def tail(emu: Emulator, *args: str) -> subprocess.Popen[str]:
    """``ces-logging tail`` in a process, once it is in its loop: its first query answered (it takes its start
    time before that query, so an event reported after it is new to it, and Ctrl-C lands in the loop)."""
    env = {**os.environ, "CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT, "PYTHONFAULTHANDLER": "1"}
    queries = emu.stats().get("status_200", 0)
    # As from a terminal, Ctrl-C starts with its default action. A process spawned by another that ignores
    # SIGINT (pytest-xdist's workers; C's system() while it runs) inherits the "ignored" across exec, and Python
    # then installs no KeyboardInterrupt: the child puts the default back first.
    p = subprocess.Popen([sys.executable, "-c", _AS_FROM_A_TERMINAL, "tail", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert wait_for(lambda: emu.stats().get("status_200", 0) > queries or p.poll() is not None, timeout=60)
        assert p.poll() is None, p.communicate()
    except BaseException:
        p.kill()
        p.communicate()
        raise
    return p


def ended(p: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``p.communicate(timeout)``; one still running then fails the test with where its threads were
    (faulthandler's dump on SIGABRT), not a bare TimeoutExpired."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        masks = []  # each thread's blocked, ignored, caught and pending signals: where a signal went
        for task in Path(f"/proc/{p.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                sig = [ln for ln in (task / "status").read_text().splitlines() if ln.startswith(("Sig", "Shd"))]
                masks.append(f"{task.name}: {' '.join(sig)}")
        p.send_signal(signal.SIGABRT)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        pytest.fail(f"still running {timeout} s later; signals per thread:\n" + "\n".join(masks)
                    + f"\nits threads:\n{err[-6000:]}")


def test_tail_picks_up_new_events(emu: Emulator) -> None:
    c = CESClient(PROJECT, endpoint=emu.url)
    c.report_events([item(name="live", t=now_ms() - 600_000, content="old, before tail started")])
    p = tail(emu, "live", "--interval", "0.2", "--count", "2", "--json")
    try:
        t = now_ms()  # after tail took its start time; two times, so that the order is theirs
        c.report_events([item(name="live", t=t, content="first new")])
        c.report_events([item(name="live", t=t + 1, content="second new")])
        out, err = ended(p, 30)
    finally:
        p.kill()
        p.communicate()
    assert p.returncode == 0, err
    assert [json.loads(x)["detail"]["content"] for x in out.splitlines()] == ["first new", "second new"]


def test_tail_stops_on_ctrl_c(emu: Emulator) -> None:
    p = tail(emu, "x", "--interval", "0.2")
    try:
        p.send_signal(signal.SIGINT)
        _, err = ended(p, 20)
    finally:
        p.kill()
        p.communicate()
    assert p.returncode == 0 and "Traceback" not in err, err


@pytest.fixture
def signed_emu() -> Iterator[Emulator]:
    with Emulator(ak=AK, sk=SK) as e:
        yield e


def test_doctor_healthy(signed_emu: Emulator) -> None:
    r = cli("doctor", emu=signed_emu, HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK=SK)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[ok  ] credentials: environment (HUAWEICLOUD_SDK_AK/SK)" in r.stdout
    assert "[ok  ] authentication: accepted" in r.stdout and "[ok  ] clock" in r.stdout
    assert SK not in r.stdout + r.stderr


def test_doctor_wrong_sk(signed_emu: Emulator) -> None:
    r = cli("doctor", emu=signed_emu, HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK="wrong-secret-xyz")
    assert r.returncode == 1
    assert "[FAIL] authentication" in r.stdout and "fix: the credentials were refused" in r.stdout
    assert "wrong-secret-xyz" not in r.stdout + r.stderr


def test_doctor_dead_port() -> None:
    r = cli("doctor", CES_ENDPOINT="http://127.0.0.1:9", CES_PROJECT_ID=PROJECT, timeout=60)
    assert r.returncode == 1 and "[FAIL] reachability" in r.stdout and "fix: check the endpoint" in r.stdout


def test_doctor_skewed_clock() -> None:
    skewed = datetime.now(timezone.utc) + timedelta(minutes=20)  # the server's clock runs 20 min ahead
    with freeze_time(skewed, tick=True), Emulator(ak=AK, sk=SK) as emu:
        r = cli("doctor", emu=emu, HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK=SK)
    assert r.returncode == 1
    assert "[warn] clock: -1200 s" in r.stdout or "[warn] clock: -1199 s" in r.stdout
    assert "min off the server's" in r.stdout and "[FAIL] authentication" in r.stdout


def test_doctor_config_error() -> None:
    r = cli("doctor", CES_ENDPOINT="ftp://nowhere", CES_PROJECT_ID=PROJECT)
    assert r.returncode == 1 and "[FAIL] configuration" in r.stdout


def test_usage_errors_exit_2_and_set_up_errors_exit_1_in_one_line() -> None:
    r = cli("events", "x", "--since", "yesterday", CES_ENDPOINT="http://127.0.0.1:9", CES_PROJECT_ID=PROJECT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot read time" in r.stderr
    assert cli("nosuchcommand").returncode == 2
    r = cli("send", "--name", "x", CES_ENDPOINT="http://127.0.0.1:9")  # the set-up said no: README's exit 1
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "CES_PROJECT_ID" in r.stderr
    r = cli("--region", "xx-nowhere-1", "send", "--name", "x", CES_PROJECT_ID=PROJECT)
    assert r.returncode == 1 and "unknown region 'xx-nowhere-1'" in r.stderr and "Traceback" not in r.stderr


def test_service_error_is_exit_1(emu: Emulator) -> None:
    r = cli("send", "--name", "bad name", emu=emu)
    assert r.returncode == 1 and r.stderr.startswith("ces-logging: HTTP 400 ces.0014")


def test_every_command_has_help_with_an_example() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        assert "example: ces-logging " + name in p.format_help()


def test_emulator_command_serves_and_stops_on_sigterm(tmp_path: object) -> None:
    p = subprocess.Popen([sys.executable, "-m", "ces_logging", "emulator", "--port", "0", "--db",
                          f"{tmp_path}/e.db"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = p.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://127\.0\.0\.1:\d+", first).group(0)  # type: ignore[union-attr]
        assert "open, for local development" in p.stdout.readline()  # type: ignore[union-attr]
        assert p.stdout.readline().startswith("try: ")  # type: ignore[union-attr]
        assert p.stdout.readline().startswith(f"console: {url}/ ")  # type: ignore[union-attr]
        CESClient(PROJECT, endpoint=url).report_events([item()])
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0 and "emulator stopped" in out
    with Emulator(db=f"{tmp_path}/e.db") as again:
        assert again.count(PROJECT) == 1


def test_parse_time() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_time("1h", now) == int((now - timedelta(hours=1)).timestamp() * 1000)
    assert parse_time("1767225600000") == 1767225600000
    assert parse_time("2026-01-01T00:00:00Z") == 1767225600000


def test_table_colours_levels_and_cuts_to_the_terminal_width() -> None:
    import io

    from ces_logging.cli import Table
    from ces_logging.events import EventRecord

    out = io.StringIO()
    t = Table(out, colour=True, width=120)
    detail = {"event_level": "Critical", "event_state": "incident", "resource_name": "web-1", "content": "x" * 500}
    t.row(EventRecord("ev1", "n", "app.log", 1_767_225_600_000, detail))
    row = out.getvalue().splitlines()[1]
    assert "\033[1;31mCritical" in row and row.endswith("…")
    visible = row.replace("\033[1;31m", "").replace("\033[0m", "")
    assert len(visible) == 120
    plain = io.StringIO()
    Table(plain, colour=False, width=0).row(EventRecord("ev1", "n", "app.log", 1, detail))
    assert plain.getvalue().splitlines()[1].endswith("x" * 500)  # piped: nothing cut, no colour codes


# --- the CLI matches its README (issue 14) -----------------------------------------------------------------------


def test_global_options_work_before_and_after_the_command(emu: Emulator) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_SDK_"))}
    for args in (
        ["--endpoint", emu.url, "--project-id", PROJECT, "send", "--name", "before"],
        ["send", "--endpoint", emu.url, "--project-id", PROJECT, "--name", "after"],
        ["--endpoint", emu.url, "send", "--project-id", PROJECT, "--name", "mixed", "--timeout", "5"],
    ):
        r = subprocess.run([sys.executable, "-m", "ces_logging", *args], env=base, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode == 0, (args, r.stderr)
    assert [len(emu.events(PROJECT, n)) for n in ("before", "after", "mixed")] == [1, 1, 1]
    # after the command wins over before it, as a person reading the line expects
    r = cli("--project-id", "bad id!", "events", "before", "--project-id", PROJECT, "--json", emu=emu)
    assert r.returncode == 0 and json.loads(r.stdout)["event_name"] == "before"


def test_allow_insecure_flag(emu: Emulator) -> None:
    # 127.1 reaches this machine but is not a loopback address the endpoint check recognises: plain http to
    # "another host", refused unless --allow-insecure says so
    url = emu.url.replace("127.0.0.1", "127.1")
    creds = {"CES_PROJECT_ID": PROJECT, "CES_AUTH_TOKEN": "any"}  # not loopback: the chain would ask ECS metadata
    r = cli("--endpoint", url, "send", "--name", "insecure", **creds)
    assert r.returncode == 1 and "allow_insecure" in r.stderr
    r = cli("--endpoint", url, "--allow-insecure", "send", "--name", "insecure", **creds)
    assert r.returncode == 0, r.stderr
    assert len(emu.events(PROJECT, "insecure")) == 1
    assert "--allow-insecure" in cli("send", "--help").stdout


def test_events_checks_the_name_before_asking(emu: Emulator) -> None:
    for name in ("bad name", "9lives", "x" * 65):
        r = cli("events", name, emu=emu)
        assert r.returncode == 2 and f"event name {name!r}" in r.stderr and "Traceback" not in r.stderr
        assert cli("tail", name, emu=emu).returncode == 2
    assert emu.stats().get("requests", 0) == 0  # found locally: nothing was sent
    r = cli("events", "Some.System-Event", "--type", "EVENT.SYS", emu=emu)  # system names: only the length
    assert r.returncode == 0, r.stderr


def test_progress_line_only_on_a_terminal(emu: Emulator) -> None:
    import pty

    c = CESClient(PROJECT, endpoint=emu.url)
    t0 = now_ms() - 30_000
    c.report_events([item(name="paged", t=t0 + i) for i in range(150)])
    master, slave = pty.openpty()
    try:
        e = {**os.environ, "CES_ENDPOINT": emu.url, "CES_PROJECT_ID": PROJECT}
        r = subprocess.run([sys.executable, "-m", "ces_logging", "events", "paged", "--json"], env=e,
                           stdout=subprocess.PIPE, stderr=slave, timeout=60)  # fmt: skip
        os.close(slave)
        slave = -1
        got = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            got += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 150
    assert b"\r100/150 events" in got and b"\r150/150 events" in got


def test_send_help_shows_the_example_as_typed() -> None:
    out = cli("send", "--help").stdout
    assert '"disk /data 95% full"' in out and "95%%" not in out


def test_emulator_command_set_up_errors_are_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = cli("emulator", "--port", str(port), timeout=30)
    assert r.returncode == 1 and f"port {port} on 127.0.0.1 is in use" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = cli("emulator", "--port", "0", "--ak", "AKONLY", timeout=30)
    assert r.returncode == 2 and "--ak and --sk go together" in r.stderr and "Traceback" not in r.stderr
    r = cli("emulator", "--port", "0", "--db", str(tmp_path / "no" / "such" / "dir" / "e.db"), timeout=30)
    assert r.returncode == 1 and "cannot open the database" in r.stderr and "Traceback" not in r.stderr


def test_credentials_file_that_is_not_utf8(emu: Emulator, tmp_path: Path) -> None:
    from ces_logging import CESHandler, ConfigError

    bad = tmp_path / "credentials"
    bad.write_bytes("[basic]\nak = AKEXAMPLE\nsk = s\xe9cret-\xff\n".encode("latin-1"))
    r = cli("send", "--name", "x", emu=emu, HUAWEICLOUD_SDK_CREDENTIALS_FILE=str(bad))
    assert r.returncode == 1 and "is not UTF-8" in r.stderr and "Traceback" not in r.stderr
    assert "cret" not in r.stderr  # nothing of the file's content
    with pytest.raises(ConfigError, match="not UTF-8"):
        CESHandler(project_id=PROJECT, endpoint=emu.url, env={"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(bad)})
