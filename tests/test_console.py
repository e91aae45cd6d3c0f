"""The emulator's web console: its read-only JSON API over HTTP, and the page itself in a real browser
(headless Chromium from Debian's ``chromium`` package), whose own scripts render the events."""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ces_logging import CESClient, CESHandler
from ces_logging.emulator import Emulator

from .conftest import PROJECT, ROOT, item, now_ms

STATIC = ROOT / "ces_logging" / "emulator" / "static"
ARTIFACTS = ROOT / "test-artifacts"


def get(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def api(emu: Emulator, route: str) -> Any:
    status, _, body = get(f"{emu.url}/_console/api/{route}")
    assert status == 200, body
    return json.loads(body)


# --- the JSON API and the assets -------------------------------------------------------------------------------


def test_page_and_assets_are_served_by_the_emulator_itself(emu: Emulator) -> None:
    status, headers, body = get(emu.url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    page = body.decode()
    for asset in re.findall(r'(?:href|src)="([^"]+)"', page):
        assert asset.startswith("/_console/"), asset  # nothing from another host
        s, h, b = get(emu.url + asset)
        assert s == 200 and b and h["Content-Type"].split("/")[0] in ("text", "image")
    # nothing in the page's files points outside (no CDN, no web font, no analytics)
    for f in STATIC.iterdir():
        text = f.read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", text.replace("http://www.w3.org", "")), f


def test_api_lists_projects_and_events_newest_first_with_filters(emu: Emulator) -> None:
    c = CESClient(PROJECT, endpoint=emu.url)
    t = now_ms()
    c.report_events([item("diskFull", t - 3000, event_level="Major", content="old"),
                     item("diskFull", t - 1000, event_level="Minor", content="newer"),
                     item("cpuHigh", t - 2000, event_level="Major", content="cpu")])  # fmt: skip
    CESClient("other-project", endpoint=emu.url).report_events([item("x", t)])
    projects = api(emu, "projects")["projects"]
    assert {p["project_id"]: p["event_count"] for p in projects} == {PROJECT: 3, "other-project": 1}
    got = api(emu, f"events?project={PROJECT}")
    assert [e["detail"]["content"] for e in got["events"]] == ["newer", "cpu", "old"]
    assert got["total"] == 3 and got["names"] == ["cpuHigh", "diskFull"]
    assert [e["detail"]["content"] for e in api(emu, f"events?project={PROJECT}&level=Major")["events"]] == [
        "cpu",
        "old",
    ]
    assert [e["detail"]["content"] for e in api(emu, f"events?project={PROJECT}&name=diskFull")["events"]] == [
        "newer",
        "old",
    ]
    window = api(emu, f"events?project={PROJECT}&from={t - 2500}&to={t - 1500}")
    assert [e["detail"]["content"] for e in window["events"]] == ["cpu"]
    limited = api(emu, f"events?project={PROJECT}&limit=1")
    assert len(limited["events"]) == 1 and limited["total"] == 3


@pytest.mark.parametrize(
    "query", ["", "project=bad%20id", f"project={PROJECT}&level=Fatal", f"project={PROJECT}&from=yesterday"]
)
def test_api_refuses_bad_queries(emu: Emulator, query: str) -> None:
    status, _, body = get(f"{emu.url}/_console/api/events?{query}")
    assert status == 400 and json.loads(body)["error_msg"]


def test_console_is_read_only(emu: Emulator) -> None:
    CESClient(PROJECT, endpoint=emu.url).report_events([item()])
    for method in ("POST", "DELETE"):
        for route in ("/", "/_console/api/events?project=" + PROJECT, "/_console/api/projects"):
            status, headers, _ = get(emu.url + route, method, b"{}" if method == "POST" else None)
            assert status == 405 and headers["Allow"] == "GET", (method, route)
    assert emu.count(PROJECT) == 1
    assert get(emu.url + "/_console/nothing")[0] == 404


def test_console_answers_this_machine_when_the_emulator_checks_credentials(emu_aksk: Emulator) -> None:
    from ces_logging.emulator.console import may_read

    # the API itself wants a signature; the console serves loopback clients only
    assert get(emu_aksk.url + "/V1.0/p/events")[0] == 401
    assert get(emu_aksk.url + "/_console/api/projects")[0] == 200
    assert may_read("127.0.0.1", False) and may_read("::1", False)
    assert not may_read("192.0.2.7", False) and may_read("192.0.2.7", True)  # others: only an open emulator


# --- the page in a real browser ----------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found: install Debian's chromium package (apt-get install chromium); "
    ".ci/run installs it on Debian-like machines",
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def rendered_rows(dom: str) -> list[dict[str, str]]:
    """The event rows the page's scripts put in the table: {column class: visible text}."""
    rows = []
    for tr in re.findall(r'<tr class="event"[^>]*>(.*?)</tr>', dom, flags=re.S):
        cells = re.findall(r'<td class="(c-[a-z]+)"[^>]*>(.*?)</td>', tr, flags=re.S)
        rows.append({cls: html.unescape(re.sub(r"<[^>]+>", "", inner)) for cls, inner in cells})
    return rows


@pytest.fixture
def shop(emu: Emulator) -> Emulator:
    """What an app sent: every level, a traceback, a hostile message, an hour-old event and a second project."""
    log = logging.getLogger("shop.checkout")
    log.propagate = False
    h = CESHandler(project_id=PROJECT, endpoint=emu.url, event_source="shop.api", resource_name="web-1")
    log.addHandler(h)
    log.setLevel(logging.INFO)
    try:
        log.info("order A-1001 placed")
        time.sleep(0.005)
        log.warning("payment provider slow: %d ms", 2300)
        time.sleep(0.005)
        log.error("payment failed for order A-1002", extra={"ces": {"resource_id": "order-A-1002"}})
        time.sleep(0.005)
        try:
            raise ZeroDivisionError("division by zero in basket total")
        except ZeroDivisionError:
            log.critical("checkout crashed", exc_info=True)
        time.sleep(0.005)
        log.error("<img src=x onerror=alert(1)> in a message", extra={"ces": {"event_name": "hostile"}})
        assert h.flush(timeout=10)
        s = h.stats
        assert s.sent == 5 and s.sent + s.dropped + s.queued == s.received and s.queued == 0
    finally:
        log.removeHandler(h)
        h.close()
    c = CESClient(PROJECT, endpoint=emu.url)
    c.report_events([item("nightlyBackup", now_ms() - 30 * 60_000, content="half an hour ago")])
    CESClient("staging-project", endpoint=emu.url).report_events([item("other", content="elsewhere")])
    return emu


@needs_chromium
def test_page_renders_events_newest_first(shop: Emulator, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", f"{shop.url}/?project={PROJECT}").stdout
    rows = rendered_rows(dom)
    assert [r["c-name"] for r in rows] == ["hostile", *["shop_checkout"] * 4, "nightlyBackup"]
    assert [r["c-level"] for r in rows[1:5]] == ["Critical", "Major", "Minor", "Info"]
    assert [r["c-state"] for r in rows[1:5]] == ["incident", "incident", "warning", "normal"]
    times = [r["c-time"] for r in rows]
    assert times == sorted(times, reverse=True) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", times[0])
    assert {r["c-source"] for r in rows[:5]} == {"shop.api"}
    # the handler's resource name, then its process identity (host@pid.token), then the resource id
    assert re.fullmatch(r"web-1@\S+@\d+\.[0-9a-f]{4} \(order-A-1002\)", rows[2]["c-resource"]), rows[2]
    crash = rows[1]["c-content"]
    assert crash.startswith("checkout crashed") and "Traceback (most recent call last):" in crash
    assert "ZeroDivisionError: division by zero in basket total" in crash
    # untrusted content is text: the markup is shown, never made into an element
    assert rows[0]["c-content"] == "<img src=x onerror=alert(1)> in a message" and "<img src" not in dom
    # the project chooser lists both projects, the name filter the project's names
    assert re.search(r'<option value="staging-project"', dom) and re.search(r'<option value="nightlyBackup"', dom)
    assert "6 events" in dom


@needs_chromium
def test_page_filters_by_level_name_and_time_range(shop: Emulator, tmp_path: Path) -> None:
    major = rendered_rows(chromium(tmp_path, "--dump-dom", f"{shop.url}/?project={PROJECT}&level=Major").stdout)
    assert [r["c-content"] for r in major] == ["<img src=x onerror=alert(1)> in a message",
                                               "payment failed for order A-1002"]  # fmt: skip
    named = rendered_rows(chromium(tmp_path, "--dump-dom", f"{shop.url}/?project={PROJECT}&name=nightlyBackup").stdout)
    assert [r["c-content"] for r in named] == ["half an hour ago"]
    recent = rendered_rows(chromium(tmp_path, "--dump-dom", f"{shop.url}/?project={PROJECT}&range=15m").stdout)
    assert len(recent) == 5 and "nightlyBackup" not in {r["c-name"] for r in recent}
    other = rendered_rows(chromium(tmp_path, "--dump-dom", f"{shop.url}/?project=staging-project").stdout)
    assert [r["c-content"] for r in other] == ["elsewhere"]


@needs_chromium
def test_page_screenshot_artefact(shop: Emulator, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "console.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path, "--window-size=1400,820", "--hide-scrollbars", f"--screenshot={shot}",
             f"{shop.url}/?project={PROJECT}&expand=1")  # fmt: skip
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one


@needs_chromium
@pytest.mark.parametrize("auto", [True, False])
def test_page_refreshes_by_itself(emu: Emulator, tmp_path: Path, auto: bool) -> None:
    """An event that lands after the page's first read shows up without a reload, by the page's own timer
    (the browser's virtual time runs 5 s; the page refreshes every 3 s), and only with auto-refresh on."""
    c = CESClient(PROJECT, endpoint=emu.url)
    c.report_events([item("first", content="there at load")])
    store = emu.state.store
    real_recent = store.recent
    reads = []

    def recent_then_a_new_event(*args: Any, **kwargs: Any) -> Any:
        out = real_recent(*args, **kwargs)
        reads.append(len(out[0]))
        if len(reads) == 1:  # right after the page's first read: the app sends another event
            store.add(PROJECT, [item("second", content="arrived later")])
        return out

    store.recent = recent_then_a_new_event  # type: ignore[method-assign]
    dom = chromium(tmp_path, "--dump-dom", f"{emu.url}/?project={PROJECT}" + ("" if auto else "&auto=0")).stdout
    shown = [r["c-content"] for r in rendered_rows(dom)]
    if auto:
        assert shown == ["arrived later", "there at load"] and reads[0] == 1 and len(reads) >= 2
    else:
        assert shown == ["there at load"] and reads == [1]
