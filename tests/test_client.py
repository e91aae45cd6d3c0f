"""CESClient over HTTP against the emulator, and its pure helpers."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from ces_logging import (
    CESClient,
    CESError,
    CESServerError,
    CESThrottledError,
    CESTransportError,
    CESValidationError,
    ConfigError,
    CustomEvent,
    Dimension,
    is_retryable,
)
from ces_logging._service.client import to_ms
from ces_logging.config import resolve_endpoint
from ces_logging.emulator import Emulator
from ces_logging.errors import parse_error_body, parse_retry_after

from .conftest import PROJECT, item, now_ms


def test_report_splits_into_requests_of_100_and_pages_back_250(client: CESClient, emu: Emulator) -> None:
    t0 = now_ms() - 60_000
    out = client.report_events([item(t=t0 + i, content=f"n{i}") for i in range(250)])
    assert len(out) == 250 and len({e.event_id for e in out}) == 250
    assert emu.stats()["status_201"] == 3  # 100 + 100 + 50
    seen = list(client.iter_event_detail("testEvent", page_size=40))
    assert len(seen) == 250
    assert [e.time for e in seen] == sorted((t0 + i for i in range(250)), reverse=True)
    page = client.event_detail("testEvent", start=240, limit=100)
    assert page.total == 250 and len(page.event_info) == 10


def test_typed_events_and_filters(client: CESClient) -> None:
    t = now_ms()
    ev = CustomEvent(
        "diskFull",
        "app.disk",
        t,
        content="90%",
        event_level="Major",
        event_state="incident",
        resource_id="vol-1",
        dimensions=(Dimension("instance_id", "i-1"),),
    )
    other = CustomEvent("diskFull", "app.disk", t + 1, content="ok", event_level="Info", event_state="normal")
    client.report_events([ev, other])
    majors = client.event_detail("diskFull", event_level="Major")
    assert majors.total == 1 and majors.event_info[0].content == "90%"
    assert majors.event_info[0].detail["dimensions"] == [{"name": "instance_id", "value": "i-1"}]
    since = client.event_detail(
        "diskFull", start_time=datetime.fromtimestamp((t + 1) / 1000, timezone.utc), end_time=t + 5
    )
    assert [e.content for e in since.event_info] == ["ok"]
    assert client.list_events()[0]["event_count"] == 2


def test_validation_error_carries_code_message_request_id(client: CESClient) -> None:
    with pytest.raises(CESValidationError) as e:
        client.report_events([item(name="bad-name")])
    err = e.value
    assert err.status == 400 and err.code == "ces.0014" and "event_name" in err.message
    assert err.request_id and not is_retryable(err)


def test_server_errors_and_throttling_are_retryable(client: CESClient, emu: Emulator) -> None:
    emu.add_fault(status=503)
    with pytest.raises(CESServerError) as e5:
        client.report_events([item()])
    assert is_retryable(e5.value)
    emu.add_fault(status=429, retry_after="7")
    with pytest.raises(CESThrottledError) as e4:
        client.report_events([item()])
    assert e4.value.retry_after == 7.0 and is_retryable(e4.value)


def test_transport_errors(emu: Emulator) -> None:
    emu.add_fault(drop=True)
    c = CESClient(PROJECT, endpoint=emu.url, timeout=2)
    with pytest.raises(CESTransportError) as e:
        c.report_events([item()])
    assert is_retryable(e.value)
    dead = CESClient(PROJECT, endpoint="http://127.0.0.1:9", timeout=1)
    with pytest.raises(CESTransportError):
        dead.event_detail("x")


def test_post_body_path_is_reused_connection(client: CESClient, emu: Emulator) -> None:
    body = json.dumps([item()]).encode()
    for _ in range(5):
        assert client.post_events_body(body)[0]["event_name"] == "testEvent"
    assert emu.count() == 1  # the same item five times is one event (the same-event rule)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b'{"error_code": "ces.0014", "error_msg": "bad"}', "ces.0014", "bad"),
        (
            b'{"code": 400, "element": "Bad Request", "message": "Invalid", '
            b'"details": {"details": "x wrong", "code": "ces.0014"}}',
            "ces.0014",
            "Invalid: x wrong",
        ),
        (b'{"http_code": "403", "message": {"details": "forbidden", "code": "403"}}', "403", "forbidden"),
        (b"<html>gateway</html>", None, "<html>gateway</html>"),
        (b"", None, None),
    ],
)
def test_error_body_shapes(body: bytes, code: str | None, message: str | None) -> None:
    assert parse_error_body(body) == (code, message)


def test_error_from_response_kinds() -> None:
    hdrs = {"X-Request-Id": "rid", "Retry-After": "2"}
    assert isinstance(CESError.from_response(429, b"", hdrs), CESThrottledError)
    assert isinstance(CESError.from_response(408, b"", hdrs), CESServerError)
    e = CESError.from_response(401, b'{"error_code":"APIGW.0301","error_msg":"no"}', hdrs)
    assert type(e).__name__ == "CESAuthError" and str(e) == "HTTP 401 APIGW.0301: no (request id rid)"
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and parse_retry_after("x") is None


@pytest.mark.parametrize("seconds", [0, 784111777, 1445412480, 951782400, 4107542399, -2208988800])
def test_an_http_date_in_each_of_its_three_forms_is_read_as_the_email_package_reads_it(seconds: int) -> None:
    """Retry-After may be an HTTP date (IMF-fixdate, RFC 850, asctime): read without the email package (a worker
    thread reads it, and a thread of ours never imports), to the same second as ``email.utils``."""
    import email.utils

    from ces_logging.errors import _http_date

    imf = email.utils.formatdate(seconds, usegmt=True)
    tm = time.gmtime(seconds)
    rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", tm)
    asctime = time.strftime("%a %b ", tm) + f"{tm.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", tm)
    assert email.utils.parsedate_to_datetime(imf).timestamp() == seconds
    assert _http_date(imf) == seconds
    assert _http_date(asctime) == seconds
    if abs(tm.tm_year - time.gmtime().tm_year) < 50:  # a two-digit year means the nearest century
        assert _http_date(rfc850) == seconds
    for bad in ("Wed, 32 Oct 2015 07:28:00 GMT", "Wed, 21 Foo 2015 07:28:00 GMT", "Wed, 21 Oct 2015 24:00:00 GMT",
                "Wed, 21 Oct 2015 07:28:00 PST", "21 Oct 2015", "soon", ""):  # fmt: skip
        assert _http_date(bad) is None, bad
    assert parse_retry_after(email.utils.formatdate(time.time() + 30, usegmt=True)) == pytest.approx(30, abs=2)


def test_to_ms() -> None:
    assert to_ms(1_700_000_000_123) == 1_700_000_000_123
    assert to_ms(1_700_000_000.5) == 1_700_000_000_500
    assert to_ms(datetime(2026, 1, 1, tzinfo=timezone.utc)) == 1_767_225_600_000


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="CES_PROJECT_ID"):
        CESClient(endpoint="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="not valid"):
        CESClient("bad project!", endpoint="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="http"):
        CESClient(PROJECT, endpoint="ftp://x")
    with pytest.raises(ConfigError, match="allow_insecure"):
        CESClient(PROJECT, endpoint="http://ces.example.com", token="t")
    assert CESClient(PROJECT, endpoint="http://ces.example.com", token="t", allow_insecure=True)
    with pytest.raises(ConfigError, match="unknown region"):
        CESClient(PROJECT, region="mars-1", token="t")
    with pytest.raises(ConfigError, match="timeout"):
        CESClient(PROJECT, endpoint="http://127.0.0.1:1", timeout=0)


def test_endpoint_resolution() -> None:
    assert resolve_endpoint(None, "cn-north-4", env={}) == "https://ces.cn-north-4.myhuaweicloud.com"
    env = {"HUAWEICLOUD_SDK_REGION_CES_EU_WEST_101": "https://ces.eu-west-101.myhuaweicloud.eu/"}
    assert resolve_endpoint(None, "eu-west-101", env=env) == "https://ces.eu-west-101.myhuaweicloud.eu"
    assert resolve_endpoint(None, None, env={"CES_ENDPOINT": "http://localhost:8765"}) == "http://localhost:8765"
    assert (
        resolve_endpoint(None, "xx-new-1", env={"HUAWEICLOUD_SDK_REGION_CES_XX_NEW_1": "https://a.b"}) == "https://a.b"
    )
