"""The console as a person uses it, in a real browser: Playwright for Python driving Debian's chromium (no browser
download), one browser for the module. Each test posts events with the official SDK or CESClient, then clicks,
types, pages and resizes, and keeps a screenshot in test-artifacts/.

Without playwright or chromium these tests skip and say why; .ci/run installs both and sets
CES_LOGGING_BROWSER_TESTS=required, so in CI they fail instead of skipping."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from huaweicloudsdkces.v1 import (
    CesClient,
    CreateEventsRequest,
    CreateEventsRequestBody,
    EventItemDetail,
    MetricsDimension,
)
from huaweicloudsdkcore.auth.credentials import BasicCredentials

from ces_logging import CESClient
from ces_logging.emulator import Emulator

from .conftest import AK, PROJECT, ROOT, SK, item, now_ms

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# No outside network here or in CI: nothing the browser does by itself.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]  # fmt: skip
TIMEOUT_MS = 15_000

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = (
        "playwright is not installed (pip install -e '.[test]')"
        if sync_playwright is None
        else "headless Chromium not found: install Debian's chromium package (apt-get install chromium)"
        if CHROMIUM is None
        else None
    )
    if missing:
        if os.environ.get("CES_LOGGING_BROWSER_TESTS") == "required":
            pytest.fail(f"the browser tests are required here: {missing}")
        pytest.skip(missing)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        if not pg.is_closed():
            pg.screenshot(path=str(ARTIFACTS / f"console-{request.node.name}-end.png"))
        context.close()
    assert errors == [], errors  # the page's own scripts threw


def shot(pg: Page, name: str, top: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    if top:
        pg.evaluate("scrollTo(0, 0)")
    pg.screenshot(path=str(ARTIFACTS / f"console-{name}.png"))


def report(emu: Emulator, items: list[dict[str, object]], project: str = PROJECT) -> None:
    with CESClient(project, endpoint=emu.url) as c:
        for k in range(0, len(items), 100):
            c.report_events(items[k : k + 100])


def open_console(pg: Page, emu: Emulator, query: str = "") -> None:
    pg.goto(f"{emu.url}/?project={PROJECT}{query}")
    expect(pg.locator("#status")).not_to_have_text("Loading…")


def contents(pg: Page) -> list[str]:
    return pg.locator("tr.event td.c-content").all_inner_texts()


def url_params(pg: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(pg.url).query)


def box(pg: Page, selector: str) -> dict[str, float]:
    b = pg.locator(selector).first.bounding_box()
    assert b is not None, selector
    return dict(b)


def redrawn(pg: Page) -> None:
    """Wait (2 s at most) for the timeline to match its panel's width. (Not wait_for_function: the page's CSP
    forbids the eval it uses.)"""
    deadline = time.monotonic() + 2
    while abs(box(pg, "#timeline")["width"] - box(pg, "#tl-box")["width"]) >= 2:
        assert time.monotonic() < deadline, "the timeline was not redrawn to its panel's width"
        pg.wait_for_timeout(50)


def test_readable_at_900_and_1400_px_and_on_resize(emu: Emulator, page: Page) -> None:
    t = now_ms() - 60_000
    report(emu, [*(item("shop_checkout", t + i * 100, content=f"order A-{1000 + i} placed") for i in range(30)),
                 item("bigOne", t + 5000, event_level="Major", content="x" * 4096),
                 item("crash", t + 5001, event_level="Critical",
                      content="checkout crashed\nTraceback (most recent call last):\n  File \"a.py\", line 1, in f\n"
                              "ZeroDivisionError: division by zero")])  # fmt: skip
    open_console(page, emu, "&auto=0")  # no refresh by timer: the resize alone must redraw
    big = page.locator("tr.event", has=page.get_by_text("bigOne"))
    for width in (1400, 900):
        page.set_viewport_size({"width": width, "height": 900})  # the same page resized, then a fresh load
        for fresh in (False, True):
            if fresh:
                open_console(page, emu, "&auto=0")
            # the timeline is redrawn to the panel's width
            redrawn(page)
            assert box(page, "th.c-content")["width"] >= 250, width
            # nothing wider than the window: no sideways scrolling at either width
            assert page.evaluate("document.scrollingElement.scrollWidth") <= width
            # the 4 KB line folds to a few lines; its fold opens in place and closes again
            folded = box(page, "tr.event:has-text('bigOne')")["height"]
            assert folded < 120, (width, folded)
        big.locator("summary").click()
        assert box(page, "tr.event:has-text('bigOne')")["height"] > 3 * folded
        expect(big.locator("details")).to_have_attribute("open", "")
        big.locator("summary").click()
        assert box(page, "tr.event:has-text('bigOne')")["height"] == pytest.approx(folded, abs=1)
        expect(page.locator("g.tl-bar").first).to_be_visible()
        shot(page, f"{width}px")
    # at 900 px the columns the detail shows anyway step aside; the event's every field is one click away
    assert not page.locator("th.c-source").is_visible() and page.locator("th.c-level").is_visible()


def sdk_full_event(emu: Emulator, t: int) -> None:
    """An event with every field set, sent by the official SDK."""
    c = CesClient.new_builder().with_credentials(BasicCredentials(AK, SK, PROJECT)).with_endpoint(emu.url).build()
    c.create_events(CreateEventsRequest(body=[CreateEventsRequestBody(
        event_name="diskFull",
        event_source="storage.node",
        time=t,
        detail=EventItemDetail(
            content="disk /data 98% full\nfreed: 0 bytes",
            group_id="rg0123456789abcdefghijkl",
            resource_id="vol-42:data",
            resource_name="data-volume",
            event_state="warning",
            event_level="Major",
            event_user="ops team",
            event_type="EVENT.CUSTOM",
            sub_event_type="SUB_EVENT.OPS",
            dimensions=[MetricsDimension(name="instance_id", value="i-7"), MetricsDimension(name="az", value="az-2")],
        ),
    )]))  # fmt: skip


def test_detail_shows_every_field_and_the_url_shares_it(emu: Emulator, page: Page) -> None:
    t = now_ms() - 120_000
    sdk_full_event(emu, t)  # the oldest: beyond the first page, so a shared link must fetch it by id
    report(emu, [item("filler", t + 1 + i, content=f"filler {i}") for i in range(230)])
    full = json.loads(
        page.request.get(f"{emu.url}/_console/api/events?project={PROJECT}&name=diskFull").text()
    )["events"][0]

    open_console(page, emu, f"&event={full['event_id']}")  # a shared link
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    assert page.locator(f"tr[data-event-id='{full['event_id']}']").count() == 0  # not in the list's first page
    fields = dict(zip(detail.locator("dt").all_inner_texts(), detail.locator("dd").all_inner_texts(), strict=True))
    assert fields["Event ID"] == full["event_id"] and fields["Source"] == "storage.node"
    assert fields["Level"] == "Major" and fields["State"] == "warning"
    assert fields["Type"] == "EVENT.CUSTOM" and fields["Sub-type"] == "SUB_EVENT.OPS"
    assert fields["User"] == "ops team" and fields["Group"] == "rg0123456789abcdefghijkl"
    assert fields["Resource name"] == "data-volume" and fields["Resource ID"] == "vol-42:data"
    assert re.fullmatch(r"instance_id\s+i-7\s+az\s+az-2", fields["Dimensions"].strip()), fields["Dimensions"]
    assert detail.locator("pre.full").inner_text() == "disk /data 98% full\nfreed: 0 bytes"
    assert json.loads(detail.locator("pre.raw").inner_text()) == full  # the raw JSON: exactly the API's event
    shot(page, "detail", top=False)

    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    assert "event" not in url_params(page)
    # a click on a row in the list opens its detail and puts it in the URL; a reload shows the same view
    row = page.locator("tr.event").nth(3)
    picked = row.get_attribute("data-event-id")
    row.locator("td.c-time").click()
    expect(detail).to_be_visible()
    assert url_params(page)["event"] == [picked]
    page.set_viewport_size({"width": 900, "height": 900})
    page.reload()
    expect(page.locator("#detail-body")).to_contain_text(str(picked))
    assert box(page, "#detail")["width"] <= 900  # the detail fits a narrow window too
    shot(page, "detail-900px", top=False)
    page.locator("#detail-close").click()
    expect(detail).to_be_hidden()


def test_filter_search_and_page_to_the_oldest_event(emu: Emulator, page: Page) -> None:
    t = now_ms() - 100_000
    levels = ["Info", "Minor", "Major", "Critical"]
    report(emu, [item("order", t + i * 100, event_level=levels[i % 4],
                      content=f"order {i} " + ("needle found" if i % 50 == 0 else "hay"))
                 for i in range(450)])  # fmt: skip
    open_console(page, emu)
    expect(page.locator("#status")).to_have_text("Newest 200 of 450 events")
    older = page.locator("#older")
    for shown in (400, 450):
        older.click()
        expect(page.locator("tr.event")).to_have_count(shown)
    expect(older).to_be_hidden()
    ids = page.locator("tr.event").evaluate_all("rows => rows.map(r => [r.dataset.eventId, +r.dataset.time])")
    assert len({i for i, _ in ids}) == 450 and [x for _, x in ids] == sorted((x for _, x in ids), reverse=True)
    assert contents(page)[-1] == "order 0 needle found"  # the oldest event
    expect(page.locator("#status")).to_have_text("450 events")
    # an event arriving now shows on top at the next auto-refresh; the pages loaded below stay
    report(emu, [item("order", now_ms(), content="order 450 just now")])
    expect(page.locator("#status")).to_have_text("451 events")
    assert len(contents(page)) == 451 and contents(page)[0] == "order 450 just now"
    assert contents(page)[-1] == "order 0 needle found"

    page.locator("#q").fill("needle")  # typing searches, on the server
    expect(page.locator("#status")).to_have_text("9 events matching the search")  # 0, 50, ..., 400
    assert all("needle" in c for c in contents(page)) and url_params(page)["q"] == ["needle"]
    page.select_option("#level", "Major")  # i % 4 == 2 and i % 50 == 0: 50, 150, 250, 350, 450 is past the end
    expect(page.locator("#status")).to_have_text("4 events matching the search")
    assert contents(page) == [f"order {i} needle found" for i in (350, 250, 150, 50)]
    assert url_params(page)["level"] == ["Major"]
    shot(page, "search")
    page.locator("#q").fill("")
    expect(page.locator("#status")).to_have_text("112 events")  # i % 4 == 2 below 450
    assert set(page.locator("tr.event td.c-level").all_inner_texts()) == {"Major"}


def test_timeline_bars_per_minute_by_level_and_a_click_filters_to_one(emu: Emulator, page: Page) -> None:
    m0 = now_ms() // 60_000 * 60_000 - 10 * 60_000
    report(emu, [*(item("a", m0 + 1000 + i, event_level="Critical", content=f"c{i}") for i in range(3)),
                 *(item("a", m0 + 58_000 + i, event_level="Info", content=f"i{i}") for i in range(2)),
                 *(item("b", m0 + 120_000 + i, event_level="Minor", content=f"m{i}") for i in range(4))])  # fmt: skip
    # older than the service takes (an hour back): stored directly, as an emulator started on a kept file has it
    emu.state.store.add(PROJECT, [item("c", m0 - 3 * 3600_000, content="three hours ago")])
    open_console(page, emu, "&range=1h")
    expect(page.locator("#tl-title")).to_have_text("Events per minute")
    bars = page.locator("g.tl-bar")
    expect(bars).to_have_count(2)
    first = page.locator(f"g.tl-bar[data-from='{m0}']")
    assert first.get_attribute("data-count") == "5"
    heights = {
        cls: float(first.locator(f"rect.{cls}").get_attribute("height") or 0) for cls in ("tl-Critical", "tl-Info")
    }
    assert heights["tl-Critical"] == pytest.approx(1.5 * heights["tl-Info"], rel=0.01)  # stacked by level
    minor = float(page.locator(f"g.tl-bar[data-from='{m0 + 120_000}'] rect.tl-Minor").get_attribute("height") or 0)
    assert minor == pytest.approx(0.8 * sum(heights.values()), rel=0.01)  # 4 events against 5
    shot(page, "timeline")
    page.locator(f"g.tl-bar[data-from='{m0 + 120_000}'] rect.tl-Minor").click()
    expect(page.locator("#status")).to_have_text("4 events")
    assert contents(page) == ["m3", "m2", "m1", "m0"]
    assert page.locator("#range").input_value() == "custom" and url_params(page)["range"] == ["custom"]
    expect(bars).to_have_count(1)  # the timeline follows the new range


def test_bidi_and_control_characters_are_shown_not_applied(emu: Emulator, page: Page) -> None:
    report(emu, [item("bidi", now_ms(), content="invoice \u202efdp.exe\u202c sent\u0007 \u200fok")])
    open_console(page, emu)
    cell = page.locator("tr.event td.c-content")
    text = cell.inner_text()
    assert text == "invoice U+202Efdp.exeU+202C sentU+0007 U+200Fok"
    assert page.locator("tr.event .ctl").count() == 4
    # the characters really are gone from the rendered text, and the layout reads left to right
    assert not re.search("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u0007]", cell.evaluate("td => td.textContent"))
    lefts = cell.evaluate(
        """td => [...td.querySelector("pre").childNodes].map((n) => {
             const r = document.createRange(); r.selectNodeContents(n); return r.getBoundingClientRect().left; })"""
    )
    assert len(lefts) == 9 and lefts == sorted(lefts), lefts  # each piece right of the one before
    cell.click()
    # a marker is an isolate of its own: in right-to-left text it still reads "U+202E"
    bidi = page.locator("#detail .ctl").evaluate_all("m => m.map((x) => getComputedStyle(x).unicodeBidi)")
    assert bidi == ["isolate"] * 4
    raw = page.locator("#detail pre.raw").inner_text()
    assert "\\u202e" in raw and "\u202e" not in raw
    assert json.loads(raw)["detail"]["content"].startswith("invoice \u202e")  # still the same JSON
    shot(page, "bidi")
