"""The emulator over real HTTP, driven by the official huaweicloudsdkces client and by plain requests."""

from __future__ import annotations

import json
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

from ces_logging.emulator import Emulator
from ces_logging.events import EVENT_ID_RE, WINDOW_FUTURE_MS, WINDOW_PAST_MS

from .conftest import AK, PROJECT, SK, item, now_ms


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
    from ces_logging.auth import AKSKAuth

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
    from ces_logging.auth import AKSKAuth

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


@freeze_time("2026-01-15 12:00:00")
def test_time_window_edges() -> None:
    with Emulator() as emu:
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
