"""The emulator over real HTTP, driven by the official huaweicloudsdkces client and by plain requests."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from freezegun import freeze_time
from huaweicloudsdkces.v1 import (
    CesClient,
    CreateEventsRequest,
    CreateEventsRequestBody,
    EventItemDetail,
    ListEventDetailRequest,
    ListEventsRequest,
    MetricsDimension,
)
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from ces_logging import CESClient, ConfigError
from ces_logging.emulator import Emulator
from ces_logging.events import EVENT_ID_RE, WINDOW_FUTURE_MS, WINDOW_PAST_MS

from .conftest import AK, PROJECT, SK, frozen_wall_clock, item, now_ms, wait_for


def sdk(emu: Emulator, sk: str = SK, project: str = PROJECT) -> CesClient:
    creds = BasicCredentials(AK, sk, project)
    return CesClient.new_builder().with_credentials(creds).with_endpoint(emu.url).build()


def sdk_item(name: str, t: int, level: str = "Major", user: str | None = None, content: str = "x") -> object:
    return CreateEventsRequestBody(
        event_name=name,
        event_source="financial.System",
        time=t,
        detail=EventItemDetail(
            content=content,
            event_level=level,
            event_state="incident",
            event_user=user,
            event_type="EVENT.CUSTOM",
            dimensions=[MetricsDimension(name="instance_id", value="i-1")],
        ),
    )


def post(emu: Emulator, body: object, project: str = PROJECT) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{emu.url}/V1.0/{project}/events", data=data, timeout=10)


def get(emu: Emulator, name: str, project: str = PROJECT, **params: object) -> requests.Response:
    return requests.get(f"{emu.url}/V1.0/{project}/event/{name}", params=params, timeout=10)


# --- the official SDK ----------------------------------------------------------------------------------------


def test_official_sdk_creates_and_lists_newest_first_with_paging_and_filters(emu_aksk: Emulator) -> None:
    c = sdk(emu_aksk)
    t0 = now_ms() - 10_000
    body = [sdk_item("systemInvaded", t0 + i, level="Major" if i % 2 else "Minor", user=f"u{i % 3}") for i in range(7)]
    created = c.create_events(CreateEventsRequest(body=body))
    ids = [e.event_id for e in created.body]
    assert len(set(ids)) == 7 and all(EVENT_ID_RE.fullmatch(i) for i in ids)

    page = c.list_event_detail(ListEventDetailRequest(event_name="systemInvaded", event_type="EVENT.CUSTOM", limit=3))
    assert page.meta_data.total == 7
    assert [e.time for e in page.event_info] == [t0 + 6, t0 + 5, t0 + 4]  # newest first
    assert page.event_info[0].detail.dimensions[0].value == "i-1"
    page2 = c.list_event_detail(
        ListEventDetailRequest(event_name="systemInvaded", event_type="EVENT.CUSTOM", start=6, limit=3)
    )
    assert [e.time for e in page2.event_info] == [t0]

    majors = c.list_event_detail(
        ListEventDetailRequest(event_name="systemInvaded", event_type="EVENT.CUSTOM", event_level="Major")
    )
    assert majors.meta_data.total == 3 and {e.detail.event_level for e in majors.event_info} == {"Major"}
    by_user = c.list_event_detail(
        ListEventDetailRequest(event_name="systemInvaded", event_type="EVENT.CUSTOM", event_user="u1")
    )
    assert by_user.meta_data.total == 2 and by_user.event_users == ["u1"]
    window = c.list_event_detail(
        ListEventDetailRequest(event_name="systemInvaded", event_type="EVENT.CUSTOM", _from=t0 + 2, to=t0 + 4)
    )
    assert sorted(e.time for e in window.event_info) == [t0 + 2, t0 + 3, t0 + 4]
    kinds = c.list_events(ListEventsRequest())
    assert kinds.events[0].event_name == "systemInvaded" and kinds.events[0].event_count == 7


def test_official_sdk_with_wrong_sk_gets_401(emu_aksk: Emulator) -> None:
    with pytest.raises(ClientRequestException) as e:
        sdk(emu_aksk, sk="wrong").create_events(CreateEventsRequest(body=[sdk_item("x", now_ms())]))
    assert e.value.status_code == 401
    assert emu_aksk.count() == 0


def test_unsigned_and_stale_requests_are_refused(emu_aksk: Emulator) -> None:
    assert post(emu_aksk, [item()]).status_code == 401
    # Signed 16 minutes ago (a skewed client clock): refused, with the reason.
    from ces_logging._service.auth import AKSKAuth

    body = json.dumps([item()]).encode()
    with freeze_time(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 16 * 60))):
        req = requests.Request(
            "POST",
            f"{emu_aksk.url}/V1.0/{PROJECT}/events",
            data=body,
            headers={"Content-Type": "application/json"},
            auth=AKSKAuth(AK, SK, project_id=PROJECT),
        ).prepare()
    r = requests.Session().send(req, timeout=10)
    assert r.status_code == 401 and "15 min" in r.json()["error_msg"]


def test_projects_are_kept_apart(emu_aksk: Emulator) -> None:
    sdk(emu_aksk, project="projA").create_events(CreateEventsRequest(body=[sdk_item("shared", now_ms())]))
    other = sdk(emu_aksk, project="projB").list_event_detail(
        ListEventDetailRequest(event_name="shared", event_type="EVENT.CUSTOM")
    )
    assert other.meta_data.total == 0
    assert emu_aksk.count("projA") == 1 and emu_aksk.count("projB") == 0


def test_token_auth(tmp_path: Path) -> None:
    with Emulator(token="tok-123") as emu:
        url = f"{emu.url}/V1.0/{PROJECT}/events"
        body = json.dumps([item()])
        assert requests.post(url, data=body, headers={"X-Auth-Token": "nope"}, timeout=5).status_code == 401
        assert requests.post(url, data=body, headers={"X-Auth-Token": "tok-123"}, timeout=5).status_code == 201


def test_temporary_key_needs_its_security_token() -> None:
    from ces_logging._service.auth import AKSKAuth

    with Emulator(ak=AK, sk=SK, security_token="sec-tok") as emu:
        url = f"{emu.url}/V1.0/{PROJECT}/events"
        body = json.dumps([item()]).encode()
        without = requests.post(url, data=body, auth=AKSKAuth(AK, SK), timeout=5)
        assert without.status_code == 401 and "security token" in without.json()["error_msg"]
        ok = requests.post(url, data=body, auth=AKSKAuth(AK, SK, "sec-tok"), timeout=5)
        assert ok.status_code == 201


# --- validation: each rule refuses a bad value and takes the edge value --------------------------------------


def _with(**changes: object) -> dict[str, object]:
    it = item()
    detail = dict(it["detail"])  # type: ignore[call-overload]
    for k, v in changes.items():
        if k in ("event_name", "event_source", "time"):
            it[k] = v
        elif v is _DELETE:
            detail.pop(k, None)
        else:
            detail[k] = v
    it["detail"] = detail
    return it


_DELETE = object()

GOOD = [
    {"event_name": "a" * 64},
    {"event_name": "A"},
    {"event_name": "a_1"},
    {"event_source": "a.b"},
    {"event_source": "s" * 15 + "." + "i" * 16},
    {"content": "c" * 4096},
    {"content": ""},
    {"content": "ünïcødé ✓ \n tabs\t"},
    {"group_id": "rg15221211517051YWWkEnVd"},
    {"group_id": ""},
    {"resource_id": "6a69bf28-ee62-49f3:9785_845dacd799ec" + "x" * 92},
    {"resource_name": "ecs-001@prod_a.b" + "n" * 112},
    {"event_user": "u" * 64},
    {"event_user": "ops team/bot_1-a"},
    {"event_state": "warning"},
    {"event_level": "Critical"},
    {"sub_event_type": "SUB_EVENT.PLAN"},
    {"event_type": _DELETE},
    {"dimensions": [{"name": f"d{i}", "value": "v" * 256} for i in range(4)]},
    {"dimensions": [{"name": "n" * 32, "value": "v"}]},
]

BAD = [
    ({"event_name": "a" * 65}, "event_name"),
    ({"event_name": "1abc"}, "event_name"),
    ({"event_name": "has-dash"}, "event_name"),
    ({"event_name": ""}, "event_name"),
    ({"event_source": "nodot"}, "event_source"),
    ({"event_source": "a.b.c"}, "event_source"),
    ({"event_source": "1a.b"}, "event_source"),
    ({"event_source": "s" * 16 + "." + "i" * 16}, "event_source"),
    ({"content": "c" * 4097}, "content"),
    ({"group_id": "short"}, "group_id"),
    ({"resource_id": "r" * 129}, "resource_id"),
    ({"resource_id": "has space"}, "resource_id"),
    ({"resource_name": "no spaces"}, "resource_name"),
    ({"event_user": "u" * 65}, "event_user"),
    ({"event_user": "no@at"}, "event_user"),
    ({"event_state": "bad"}, "event_state"),
    ({"event_level": "major"}, "event_level"),
    ({"event_type": "EVENT.SYS"}, "EVENT.SYS"),
    ({"event_type": "EVENT.OTHER"}, "event_type"),
    ({"sub_event_type": "SUB_EVENT.X"}, "sub_event_type"),
    ({"dimensions": [{"name": f"d{i}", "value": "v"} for i in range(5)]}, "dimensions"),
    ({"dimensions": [{"name": "1d", "value": "v"}]}, "dimensions[0].name"),
    ({"dimensions": [{"name": "n" * 33, "value": "v"}]}, "dimensions[0].name"),
    ({"dimensions": [{"name": "d", "value": ""}]}, "dimensions[0].value"),
    ({"dimensions": [{"name": "d", "value": "v" * 257}]}, "dimensions[0].value"),
    ({"time": "123"}, "time"),
    ({"surprise": "x"}, "surprise"),
]


@pytest.mark.parametrize("change", GOOD, ids=lambda c: next(iter(c)))
def test_edge_values_are_accepted(emu: Emulator, change: dict[str, object]) -> None:
    r = post(emu, [_with(**change)])
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("change", "field"), BAD, ids=lambda c: str(c)[:40])
def test_bad_values_are_refused_with_400_naming_item_and_field(
    emu: Emulator, change: dict[str, object], field: str
) -> None:
    body = [item(), _with(**change)]
    r = post(emu, body)
    assert r.status_code == 400
    err = r.json()
    assert err["error_code"] == "ces.0014"
    assert "item 1" in err["error_msg"] and field in err["error_msg"]
    assert emu.count() == 0  # one bad item refuses the whole request


def test_batch_size_limits(emu: Emulator) -> None:
    assert post(emu, []).status_code == 400
    assert post(emu, [item(t=now_ms() - i) for i in range(101)]).status_code == 400
    t0 = now_ms()
    assert post(emu, [item(t=t0 - i) for i in range(100)]).status_code == 201
    assert emu.count() == 100


def test_missing_fields_and_malformed_bodies(emu: Emulator) -> None:
    r = post(emu, [{"event_name": "x"}])
    assert r.status_code == 400 and "event_source: is required" in r.json()["error_msg"]
    bad_json = post(emu, b"[{not json")
    assert bad_json.status_code == 400 and "Traceback" not in bad_json.text
    assert bad_json.json()["error_code"] == "ces.0014"
    big = requests.post(
        f"{emu.url}/V1.0/{PROJECT}/events", data=b"[" + b" " * (12 * 1024 * 1024 + 1) + b"]", timeout=30
    )
    assert big.status_code == 413 and big.json()["error_code"] == "APIGW.0201"


def test_time_window_edges() -> None:
    with frozen_wall_clock("2026-01-15 12:00:00"), Emulator() as emu:
        now = int(time.time() * 1000)
        assert post(emu, [item(t=now - WINDOW_PAST_MS)]).status_code == 201
        assert post(emu, [item(t=now + WINDOW_FUTURE_MS)]).status_code == 201
        assert post(emu, [item(t=now - WINDOW_PAST_MS - 1)]).status_code == 400
        r = post(emu, [item(t=now + WINDOW_FUTURE_MS + 1)])
        assert r.status_code == 400 and "time" in r.json()["error_msg"]
        assert WINDOW_PAST_MS == 3_600_000 - 10_000 and WINDOW_FUTURE_MS == 600_000 - 10_000


# --- the same-event rule, persistence ------------------------------------------------------------------------


def test_same_event_rule(emu: Emulator) -> None:
    t = now_ms()
    first = post(emu, [item(t=t, content="first")]).json()[0]["event_id"]
    again = post(emu, [item(t=t, content="different content, same key")]).json()[0]["event_id"]
    assert again == first and emu.count() == 1
    other_user = post(emu, [item(t=t, event_user="bob")]).json()[0]["event_id"]
    other_time = post(emu, [item(t=t + 1)]).json()[0]["event_id"]
    assert len({first, other_user, other_time}) == 3 and emu.count() == 3
    # Absent event_type is EVENT.CUSTOM: the same event as one that says so.
    implicit = post(emu, [_with(event_type=_DELETE, time=t, content="x")]).json()[0]["event_id"]
    assert implicit == first
    stored = get(emu, "testEvent", event_type="EVENT.CUSTOM").json()["event_info"]
    assert {e["detail"]["content"] for e in stored if e["event_id"] == first} == {"first"}


def test_restart_with_same_db_keeps_events(tmp_path: Path) -> None:
    db = str(tmp_path / "ces.db")
    with Emulator(db=db) as emu:
        t0 = now_ms()
        ids = [r["event_id"] for r in post(emu, [item(t=t0 - i) for i in range(5)]).json()]
    with Emulator(db=db) as emu2:
        got = get(emu2, "testEvent", event_type="EVENT.CUSTOM").json()
        assert got["meta_data"]["total"] == 5
        assert sorted(e["event_id"] for e in got["event_info"]) == sorted(ids)


# --- queries ---------------------------------------------------------------------------------------------------


def test_query_parameter_rules(emu: Emulator) -> None:
    t0 = now_ms()
    post(emu, [item(t=t0 - i, event_user="ann" if i % 2 else "bob") for i in range(5)])
    assert get(emu, "testEvent").status_code == 400  # event_type is required
    assert get(emu, "testEvent", event_type="EVENT.CUSTOM", limit=0).status_code == 400
    assert get(emu, "testEvent", event_type="EVENT.CUSTOM", limit=101).status_code == 400
    assert get(emu, "testEvent", event_type="EVENT.CUSTOM", start=-1).status_code == 400
    assert get(emu, "testEvent", event_type="EVENT.CUSTOM", event_level="major").status_code == 400
    t = now_ms()
    assert get(emu, "testEvent", event_type="EVENT.CUSTOM", **{"from": t, "to": t}).status_code == 400
    ok = get(emu, "testEvent", event_type="EVENT.CUSTOM", limit=2).json()
    assert ok["meta_data"]["total"] == 5 and len(ok["event_info"]) == 2
    assert ok["event_users"] == ["ann", "bob"] and ok["event_sources"] == ["app.test"]
    assert ok["sub_event_type"] == "SUB_EVENT.CUSTOM"
    sys_events = get(emu, "testEvent", event_type="EVENT.SYS").json()
    assert sys_events["meta_data"]["total"] == 0


# --- fault injection, admin ------------------------------------------------------------------------------------


@pytest.fixture
def faulty(emu: Emulator) -> Iterator[Emulator]:
    yield emu
    emu.clear_faults()


def test_faults_status_retry_after_and_count(faulty: Emulator) -> None:
    faulty.admin("POST", "faults", {"count": 2, "status": 429, "retry_after": "3"})
    for _ in range(2):
        r = post(faulty, [item()])
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert post(faulty, [item()]).status_code == 201
    assert faulty.admin("GET", "stats")["faults_served"] == 2


def test_fault_drop_and_store_then_delay(faulty: Emulator) -> None:
    faulty.add_fault(drop=True)
    with pytest.raises(requests.ConnectionError):
        post(faulty, [item()])
    assert faulty.count() == 0
    faulty.add_fault(store=True, delay=1.0)
    with pytest.raises(requests.Timeout):
        requests.post(f"{faulty.url}/V1.0/{PROJECT}/events", data=json.dumps([item()]), timeout=0.3)
    assert faulty.count() == 1  # stored although the client gave up


def test_fault_reject_matching(faulty: Emulator) -> None:
    faulty.add_fault(count=10, reject_matching="POISON")
    r = post(faulty, [item(), item(content="has POISON in it")])
    assert r.status_code == 400 and r.json()["error_code"] == "ces.0014"
    assert post(faulty, [item()]).status_code == 201


# --- security: admin routes, malformed requests, connections (issue 15) --------------------------------------


def _raw(emu: Emulator, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a new connection; everything the server answers until it closes (or goes quiet)."""
    host, port = emu.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out


def _head(path: str, extra: str = "", method: str = "POST") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("mode", ["aksk", "token"])
def test_admin_routes_need_the_api_credentials(mode: str) -> None:
    from ces_logging._service.auth import AKSKAuth

    kwargs: dict[str, str] = {"ak": AK, "sk": SK} if mode == "aksk" else {"token": "token-value-secret"}
    auth = AKSKAuth(AK, SK) if mode == "aksk" else None
    headers = {"X-Auth-Token": "token-value-secret"} if mode == "token" else {}
    with Emulator(**kwargs) as emu:
        requests.post(f"{emu.url}/V1.0/{PROJECT}/events", data=json.dumps([item()]), auth=auth, headers=headers,
                      timeout=5).raise_for_status()  # fmt: skip
        base = f"{emu.url}/_emulator"
        outsider = [
            requests.post(f"{base}/reset", timeout=5),
            requests.post(f"{base}/revoke", timeout=5),
            requests.post(f"{base}/faults", json={"count": 1_000_000, "status": 503}, timeout=5),
            requests.delete(f"{base}/faults", timeout=5),
            requests.get(f"{base}/stats", timeout=5),
            requests.post(f"{base}/reset", headers={"X-Auth-Token": "guess"}, timeout=5),
        ]
        assert [r.status_code for r in outsider] == [401] * 6
        assert emu.count() == 1 and not emu.state.faults  # nothing reset, no fault injected
        # With the API's credentials (or the in-process helper's token) they work.
        r = requests.post(f"{base}/faults", json={"count": 1, "status": 503}, auth=auth, headers=headers, timeout=5)
        assert r.status_code == 201
        assert requests.get(f"{base}/stats", auth=auth, headers=headers, timeout=5).json()["events_in_store"] == 1
        assert emu.admin("POST", "reset") == {"reset": True} and emu.count() == 0


def test_non_ascii_credentials_get_401_not_500(emu_aksk: Emulator) -> None:
    from ces_logging._service.auth import format_sdk_date

    path = f"/V1.0/{PROJECT}/events"
    sig = f"X-Sdk-Date: {format_sdk_date()}\r\nAuthorization: SDK-HMAC-SHA256 Access={AK}, "
    sig += "SignedHeaders=host;x-sdk-date, Signature=\xe9\xe9\r\n"
    for extra in (sig, "X-Auth-Token: \xe9t\xe9\r\n"):
        req = f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n[]"
        out = _raw(emu_aksk, req.encode("latin-1"))
        assert out.startswith(b"HTTP/1.1 401"), out[:80]
    assert emu_aksk.stats().get("internal_errors", 0) == 0


def test_admin_routes_stay_open_in_open_mode(emu: Emulator) -> None:
    assert requests.get(f"{emu.url}/_emulator/stats", timeout=5).status_code == 200


def test_open_mode_on_another_address_warns_and_the_cli_suggests_loopback() -> None:
    from ces_logging.emulator import exposure_warning, local_url

    for host in ("0.0.0.0", "::", "192.168.1.10"):
        warning = exposure_warning(host, anyone_gets_in=True)
        assert warning is not None and "WARNING" in warning and "--token" in warning
    assert exposure_warning("127.0.0.1", True) is None and exposure_warning("localhost", True) is None
    assert exposure_warning("0.0.0.0", anyone_gets_in=False) is None
    assert local_url("http", "0.0.0.0", 8765) == "http://127.0.0.1:8765"
    assert local_url("http", "::1", 8765) == "http://[::1]:8765"
    # The URL suggested for 0.0.0.0 is one our own client takes (plain http to 0.0.0.0 it refuses).
    CESClient(PROJECT, endpoint=local_url("http", "0.0.0.0", 8765))
    with pytest.raises(ConfigError):
        CESClient(PROJECT, endpoint="http://0.0.0.0:8765")
    with Emulator() as emu:
        assert emu.exposure_warning is None  # 127.0.0.1


def test_cli_metadata_mode_says_what_authentication_it_wants() -> None:
    """``--metadata`` used to print "authentication: none" while every request got 401; the line now says
    what is required and the CES_METADATA_URL to use, and that setting works."""
    p = subprocess.Popen([sys.executable, "-m", "ces_logging", "emulator", "--port", "0", "--metadata"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None
        first, auth_line, try_line = (p.stdout.readline() for _ in range(3))
        url = re.search(r"http://127\.0\.0\.1:\d+", first).group(0)  # type: ignore[union-attr]
        assert "none" not in auth_line and "required" in auth_line and f"CES_METADATA_URL={url}" in auth_line
        assert f"CES_ENDPOINT={url}" in try_line
        assert requests.post(f"{url}/V1.0/{PROJECT}/events", data=json.dumps([item()]), timeout=5).status_code == 401
        c = CESClient(PROJECT, endpoint=url, env={"CES_METADATA_URL": url})
        assert c.auth_source.startswith("metadata") and c.report_events([item()])
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0 and "WARNING" not in err


def test_content_length_minus_one_and_other_bad_lengths_get_400_and_free_the_thread(emu: Emulator) -> None:
    """``Content-Length: -1`` made ``rfile.read(-1)`` wait until the client left, holding a thread."""
    path = f"/V1.0/{PROJECT}/events"
    bad = ("-1", "+5", "5_0", "2\r\nContent-Length: 3", "99999999999999999999")
    for extra in (f"Content-Length: {v}\r\n" for v in bad):
        t0 = time.monotonic()
        out = _raw(emu, _head(path, extra))
        assert out.startswith((b"HTTP/1.1 400", b"HTTP/1.1 413")), (extra, out[:60])
        assert time.monotonic() - t0 < 4  # answered and closed, not held until the client gives up
    assert wait_for(lambda: emu.active_connections == 0, timeout=5)
    assert emu.stats().get("internal_errors", 0) == 0


def test_query_integers_beyond_any_integer_get_400(emu: Emulator) -> None:
    post(emu, [item()])
    for name, value in (("start", "9" * 30), ("from", str(2**63)), ("to", "1" * 5000), ("limit", "9" * 25)):
        r = get(emu, "testEvent", event_type="EVENT.CUSTOM", **{name: value})
        assert r.status_code == 400 and r.json()["error_code"] in ("ces.0006", "ces.0013"), (name, r.text[:200])
        assert len(r.text) < 2000  # a 5,000-digit value is not echoed whole
    edge = get(emu, "testEvent", event_type="EVENT.CUSTOM", start=2**63 - 1, to=2**63 - 1)
    assert edge.status_code == 200 and edge.json()["event_info"] == []
    r = requests.get(f"{emu.url}/V1.0/{PROJECT}/events", params={"start": "9" * 5000}, timeout=5)
    assert r.status_code == 400
    assert emu.stats().get("internal_errors", 0) == 0


def test_deeply_nested_json_gets_400(emu: Emulator) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = post(emu, deep)
    assert r.status_code == 400 and r.json()["error_code"] == "ces.0014"
    nested_detail = b'[{"event_name":"x","event_source":"a.b","time":1,"detail":' + b"[" * 100_000 + b"]" * 100_000
    assert post(emu, nested_detail + b"}]").status_code == 400
    assert requests.post(f"{emu.url}/_emulator/faults", data=deep, timeout=10).status_code == 400
    assert requests.post(f"{emu.url}/v3/auth/tokens", data=deep, timeout=10).status_code in (400, 404)
    huge_int = b'[{"event_name":"x","event_source":"a.b","time":' + b"9" * 100_000 + b',"detail":{}}]'
    assert post(emu, huge_int).status_code == 400
    assert emu.stats().get("internal_errors", 0) == 0 and emu.count() == 0


def test_a_lone_surrogate_gets_400_not_500(emu: Emulator) -> None:
    """JSON can write ``\\ud800``, UTF-8 cannot carry it: the service's likely answer (and the safe one for a
    client: not retried) is 400 ces.0014, not the 500 that made the handler retry it."""
    raw = json.dumps([item()]).replace('"hello"', '"bad \\ud800 text"').encode()
    r = post(emu, raw)
    assert r.status_code == 400 and r.json()["error_code"] == "ces.0014"
    assert "content" in r.json()["error_msg"] and "surrogate" in r.json()["error_msg"]
    in_key = json.dumps([item()]).replace('"detail": {', '"detail": {"\\udfff": 1, ').encode()
    assert post(emu, in_key).status_code == 400  # the message names the key: it must still be sendable
    dim = json.dumps([item(dimensions=[{"name": "d", "value": "v"}])]).replace('"v"', '"\\ud83d"').encode()
    assert post(emu, dim).status_code == 400
    assert emu.stats().get("internal_errors", 0) == 0 and emu.count() == 0


def test_chunked_bodies_are_read_as_bodies(emu: Emulator) -> None:
    """A chunked body used to be read as the next request on the connection; now it is decoded (bounded by
    the 12 MB limit), and a malformed one gets 400 and a closed connection."""
    body = json.dumps([item(content="chunked")]).encode()
    r = requests.post(f"{emu.url}/V1.0/{PROJECT}/events", data=iter([body[:10], body[10:]]), timeout=5)
    assert r.status_code == 201 and emu.count() == 1
    path = f"/V1.0/{PROJECT}/events"
    one = json.dumps([item(name="chunkedToo")]).encode()
    chunked = f"{len(one):x}\r\n".encode() + one + b"\r\n0\r\n\r\n"
    second = _head(path, "Connection: close\r\n", method="GET")
    out = _raw(emu, _head(path, "Transfer-Encoding: chunked\r\n") + chunked + second)
    assert out.startswith(b"HTTP/1.1 201") and out.count(b"HTTP/1.1 ") == 2  # the second request answered too
    assert emu.count() == 2
    for bad in (b"zz\r\nxx\r\n0\r\n\r\n", b"5\r\nabcdefgh\r\n0\r\n\r\n", b"FFFFFFFF\r\n"):
        out = _raw(emu, _head(path, "Transfer-Encoding: chunked\r\n") + bad)
        assert out.startswith((b"HTTP/1.1 400", b"HTTP/1.1 413")), out[:80]
    both = _raw(emu, _head(path, "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n") + b"0\r\n\r\n")
    assert both.startswith(b"HTTP/1.1 400")
    gzip = _raw(emu, _head(path, "Transfer-Encoding: gzip\r\n"))
    assert gzip.startswith(b"HTTP/1.1 400")
    assert emu.stats().get("internal_errors", 0) == 0 and emu.count() == 2


def test_connections_are_capped_and_idle_ones_time_out() -> None:
    """5,000 idle connections kept 5,001 threads. Here: a cap of 64 and 200 idle connections. The server
    holds at most 64 threads for them, answers the others 503 and closes them, closes idle connections
    after idle_timeout, and serves again once they are gone."""
    with Emulator(max_connections=64, idle_timeout=3.0) as emu:
        host, port = emu.url.split("//")[1].split(":")
        threads_before = threading.active_count()
        socks: list[socket.socket] = []

        def taken() -> int:
            return emu.active_connections + int(emu.stats().get("connections_refused", 0))

        try:
            for _ in range(200):
                socks.append(socket.create_connection((host, int(port)), timeout=5))
                if len(socks) % 25 == 0:  # in steps, so the listen backlog never overflows into SYN retries
                    assert wait_for(lambda: taken() == len(socks), timeout=5)
            assert emu.stats().get("connections_refused") == 136
            assert emu.active_connections == 64
            assert threading.active_count() - threads_before <= 64 + 2
            busy = requests.post(f"{emu.url}/V1.0/{PROJECT}/events", data=json.dumps([item()]), timeout=5)
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
            refused = socks[-1].recv(4096)  # an over-cap one got its 503 and an end
            assert refused.startswith(b"HTTP/1.1 503")
            # Idle connections are closed by the server after idle_timeout (3 s): each reads an end.
            for s in socks[:64]:
                s.settimeout(5)
                assert s.recv(1) == b""
            assert wait_for(lambda: emu.active_connections == 0, timeout=5)
        finally:
            for s in socks:
                s.close()
        ok = requests.post(f"{emu.url}/V1.0/{PROJECT}/events", data=json.dumps([item()]), timeout=5)
        assert ok.status_code == 201
        assert wait_for(lambda: threading.active_count() - threads_before <= 2, timeout=5)


def test_a_trickled_request_is_cut_at_the_request_timeout() -> None:
    """A client sending its headers a byte at a time (each byte within the idle timeout) holds its thread
    only until request_timeout."""
    with Emulator(idle_timeout=0.5, request_timeout=1.0) as emu:
        host, port = emu.url.split("//")[1].split(":")
        data = _head(f"/V1.0/{PROJECT}/events", "X-Slow: " + "x" * 100 + "\r\n")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            t0 = time.monotonic()
            closed = False
            for b in data:
                try:
                    s.sendall(bytes([b]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
                if time.monotonic() - t0 > 5:
                    break
                s.setblocking(False)
                try:
                    closed = s.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                s.setblocking(True)
                if closed:
                    break
            assert closed and time.monotonic() - t0 < 3.0
        assert wait_for(lambda: emu.active_connections == 0, timeout=5)


def test_a_body_shorter_than_its_content_length_frees_the_thread_after_idle_timeout() -> None:
    with Emulator(idle_timeout=0.5) as emu:
        host, port = emu.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(_head(f"/V1.0/{PROJECT}/events", "Content-Length: 100\r\n") + b"[")
            assert wait_for(lambda: emu.active_connections == 1, timeout=5)
            s.settimeout(5)
            assert s.recv(100) == b""  # closed without an answer: nobody sent a whole request
        assert wait_for(lambda: emu.active_connections == 0, timeout=5)
        assert emu.stats().get("internal_errors", 0) == 0


def test_a_silent_client_does_not_stall_a_tls_emulator(tls_files: tuple[Path, Path]) -> None:
    """The TLS handshake used to run inside accept(): one client that connected and said nothing stopped
    the whole server. It now runs on the connection's own thread, bounded by idle_timeout."""
    key, cert = tls_files
    with Emulator(tls_cert=str(cert), tls_key=str(key), idle_timeout=1.0) as emu:
        host, port = emu.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as silent:
            r = requests.get(f"{emu.url}/V1.0/{PROJECT}/events", verify=str(cert), timeout=5)
            assert r.status_code == 200
            silent.settimeout(5)
            assert silent.recv(1) == b""  # handshake never started: closed after idle_timeout
        assert wait_for(lambda: emu.active_connections == 0, timeout=5)
