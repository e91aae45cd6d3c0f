"""Signing equals the official SDK's; token, IAM and metadata credentials work against the emulator."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests
from freezegun import freeze_time
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from ces_logging import AKSKAuth, CESClient, ConfigError, IAMPasswordTokenProvider, TokenAuth
from ces_logging._service.auth import canonical_query, canonical_uri
from ces_logging._service.credentials import resolve_auth
from ces_logging.emulator import Emulator
from ces_logging.errors import CESNoCredentialsError

from .conftest import AK, PROJECT, SK, frozen_wall_clock, item

CASES = [
    ("POST", "https://ces.cn-north-4.myhuaweicloud.com", "/V1.0/p1/events", [], b'[{"a":1}]', None),
    (
        "GET",
        "https://ces.cn-north-4.myhuaweicloud.com",
        "/V1.0/p1/event/diskFull",
        [("event_type", "EVENT.CUSTOM"), ("limit", "10")],
        b"",
        None,
    ),
    (
        "GET",
        "http://127.0.0.1:8765",
        "/V1.0/p1/event/disk%20full",
        [("event_user", "ops team"), ("from", "1")],
        b"",
        None,
    ),
    ("GET", "http://localhost:80", "/V1.0/p1/event/x", [("event_user", "ünïcødé/ü"), ("a", "")], b"", "sec-tok"),
    ("POST", "https://example.com:8443", "/V1.0/p1/events", [("q", "a+b=c&d~e")], '{"c": "ü"}'.encode(), None),
    ("DELETE", "https://example.com", "/V1.0/p1/events/", [], b"", "tok"),
]


@pytest.mark.parametrize(("method", "base", "path", "query", "body", "sec"), CASES)
@freeze_time("2026-03-04 05:06:07")
def test_signature_equals_official_signer(
    method: str, base: str, path: str, query: list[tuple[str, str]], body: bytes, sec: str | None
) -> None:
    url = base + path + ("?" + canonical_query(query) if query else "")
    headers = {"Content-Type": "application/json"} if body else {}
    ours = requests.Request(method, url, data=body or None, headers=headers, auth=AKSKAuth(AK, SK, sec, "p1")).prepare()

    sdk_headers = {"X-Sdk-Date": "20260304T050607Z", "X-Project-Id": "p1", **headers}
    if sec:
        sdk_headers["X-Security-Token"] = sec
    netloc = base.split("://", 1)[1]
    req = SdkRequest(
        method=method,
        schema=base.split(":")[0],
        host=netloc,
        resource_path=path,
        query_params=list(query),
        header_params=sdk_headers,
        body=body or None,
    )
    Signer(BasicCredentials(AK, SK)).sign(req)
    assert ours.headers["X-Sdk-Date"] == "20260304T050607Z"
    assert ours.headers["Host"] == netloc
    assert ours.headers["Authorization"] == req.header_params["Authorization"]


def test_canonical_pieces() -> None:
    assert canonical_uri("/V1.0/p/events") == "/V1.0/p/events/"
    assert canonical_uri("/V1.0/p/event/a%20b") == "/V1.0/p/event/a%20b/"
    assert canonical_query([("b", "x y"), ("a", "1")]) == "a=1&b=x%20y"


def test_secrets_never_in_repr() -> None:
    a = AKSKAuth(AK, SK, "sec-token-value")
    t = TokenAuth("token-value-secret")
    p = IAMPasswordTokenProvider("alice", "pa55word-secret", "dom", region="cn-north-4")
    c = CESClient(PROJECT, endpoint="http://127.0.0.1:1", ak=AK, sk=SK, security_token="sec-token-value")
    text = " ".join(map(repr, (a, t, p, c, a.provider.credentials())))
    for secret in (SK, "sec-token-value", "token-value-secret", "pa55word-secret"):
        assert secret not in text
    assert AK in text  # the access key is not a secret: it says which key is in use


def test_bad_credentials_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="sk"):
        CESClient(PROJECT, endpoint="http://127.0.0.1:1", ak=AK)
    with pytest.raises(ConfigError, match="white space"):
        AKSKAuth(AK, "inner space")  # surrounding white space is stripped (tests/reliability/test_security.py)
    with pytest.raises(ConfigError, match="one kind"):
        CESClient(PROJECT, endpoint="http://127.0.0.1:1", ak=AK, sk=SK, token="t")
    with pytest.raises(ConfigError, match="empty"):
        TokenAuth("  ")


# --- tokens ---------------------------------------------------------------------------------------------------


def test_static_token_client() -> None:
    with Emulator(token="static-tok") as emu:
        c = CESClient(PROJECT, endpoint=emu.url, token="static-tok")
        assert c.report_events([item()])[0].event_name == "testEvent"
        bad = CESClient(PROJECT, endpoint=emu.url, token="wrong")
        with pytest.raises(Exception) as e:
            bad.report_events([item()])
        assert getattr(e.value, "status", None) == 401 and "wrong" not in str(e.value)


@pytest.fixture
def iam_emu() -> Emulator:
    with Emulator(iam_users={("dom", "alice"): "pw-alice-secret"}) as e:
        yield e


def test_iam_provider_caches_and_refreshes_after_401(iam_emu: Emulator) -> None:
    prov = IAMPasswordTokenProvider("alice", "pw-alice-secret", "dom", region="cn-north-4", iam_endpoint=iam_emu.url)
    c = CESClient(PROJECT, endpoint=iam_emu.url, token_provider=prov)
    for _ in range(3):
        c.report_events([item(t=int(time.time() * 1000))])
        time.sleep(0.002)
    assert iam_emu.stats()["iam_tokens_issued"] == 1
    iam_emu.admin("POST", "revoke")
    c.report_events([item(name="afterRevoke")])  # 401 -> refresh once -> 201
    assert iam_emu.stats()["iam_tokens_issued"] == 2
    assert iam_emu.count() == 4


def test_iam_wrong_password_is_an_auth_error(iam_emu: Emulator) -> None:
    prov = IAMPasswordTokenProvider("alice", "nope", "dom", region="cn-north-4", iam_endpoint=iam_emu.url)
    with pytest.raises(Exception) as e:
        prov.token()
    assert getattr(e.value, "status", None) == 401 and "nope" not in str(e.value)


def test_iam_token_refreshed_one_hour_before_expiry(iam_emu: Emulator) -> None:
    with frozen_wall_clock("2026-05-01 00:00:00") as clock:
        prov = IAMPasswordTokenProvider("alice", "pw-alice-secret", "dom", region="x", iam_endpoint=iam_emu.url)
        first = prov.token()
        clock.tick(22 * 3600)
        assert prov.token() == first  # 2 h left: still good
        clock.tick(3600 + 1)
        second = prov.token()  # under 1 h left: fetched again
        assert second != first
        assert iam_emu.stats()["iam_tokens_issued"] == 2


# --- the credential chain -------------------------------------------------------------------------------------


def test_chain_env(monkeypatch: pytest.MonkeyPatch, emu_aksk: Emulator) -> None:
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", AK)
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", SK)
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", PROJECT)
    c = CESClient(endpoint=emu_aksk.url)
    assert c.auth_source.startswith("environment") and c.project_id == PROJECT
    assert c.report_events([item()])
    assert SK not in c.auth_source


def test_chain_profile_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emu_aksk: Emulator) -> None:
    f = tmp_path / "credentials"
    f.write_text(f"[basic]\nak = {AK}\nsk = {SK}\nproject_id = {PROJECT}\n")
    monkeypatch.setenv("HUAWEICLOUD_SDK_CREDENTIALS_FILE", str(f))
    c = CESClient(endpoint=emu_aksk.url)
    assert c.auth_source == f"profile file {f}" and c.project_id == PROJECT
    assert c.report_events([item()])


def test_chain_metadata_temporary_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    with Emulator(metadata=True) as emu:
        monkeypatch.setenv("CES_METADATA_URL", emu.url)
        c = CESClient(PROJECT, endpoint=emu.url)
        assert c.auth_source == f"metadata {emu.url}"
        c.report_events([item()])
        emu.admin("POST", "revoke")  # the temporary keys stop working: a 401 fetches new ones
        c.report_events([item(name="second")])
        assert emu.stats()["metadata_keys_issued"] == 2 and emu.count() == 2


def test_metadata_keys_refreshed_before_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    with frozen_wall_clock("2026-05-01 00:00:00") as clock, Emulator(metadata=True, metadata_ttl=900) as emu:
        resolved = resolve_auth(project_id=PROJECT, env={"CES_METADATA_URL": emu.url})
        provider = resolved.auth.provider  # type: ignore[union-attr]
        first = provider.credentials()
        clock.tick(200)
        assert provider.credentials() == first
        clock.tick(200)  # 500 s left, under the 10 min margin
        assert provider.credentials().ak != first.ak


def test_chain_nothing_found_is_a_config_error_only_without_a_metadata_service() -> None:
    """Nothing found and ``CES_METADATA_URL=off`` (no metadata service here): a ConfigError. With a metadata
    service that cannot answer (nothing listens on port 9), the chain resolves to it without asking it, and
    the first request says "no credentials found" (credentials.py, the rule)."""
    with pytest.raises(ConfigError, match=r"no credentials found: .*HUAWEICLOUD_SDK_AK.*CES_METADATA_URL=off"):
        resolve_auth(project_id=PROJECT, env={"CES_METADATA_URL": "off"})
    lazy = resolve_auth(project_id=PROJECT, env={"CES_METADATA_URL": "http://127.0.0.1:9"})
    assert lazy.source == "metadata http://127.0.0.1:9"
    with pytest.raises(CESNoCredentialsError, match=r"no credentials found: .*HUAWEICLOUD_SDK_AK"):
        lazy.auth.provider.credentials()  # type: ignore[union-attr]
    open_local = resolve_auth(project_id=PROJECT, local_endpoint=True, env={})
    assert open_local.auth is None and open_local.source.startswith("none")
    off_local = resolve_auth(project_id=PROJECT, local_endpoint=True, env={"CES_METADATA_URL": "off"})
    assert off_local.auth is None and off_local.source.startswith("none")


def test_emulator_iam_route_shape(iam_emu: Emulator) -> None:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "alice", "password": "pw-alice-secret", "domain": {"name": "dom"}}},
            },
            "scope": {"project": {"name": "x"}},
        }
    }
    r = requests.post(f"{iam_emu.url}/v3/auth/tokens", data=json.dumps(body), timeout=5)
    assert r.status_code == 201 and r.headers["X-Subject-Token"] and r.json()["token"]["expires_at"].endswith("Z")


def test_credentials_are_a_read_only_value_that_copies_and_pickles_without_showing_the_secret() -> None:
    """``Credentials`` (a provider's answer) behaves as the frozen dataclass it replaced: compared and hashed by
    value, copied, pickled, matched and weakly referenced; never changed; its repr hides the SK and the token."""
    import copy
    import pickle
    import weakref

    from ces_logging._service.auth import Credentials

    c = Credentials("AKX", "the-secret-key", "the-token", 12.5)
    assert c == Credentials("AKX", "the-secret-key", "the-token", 12.5) != Credentials("AKX", "other")
    assert hash(c) == hash(Credentials("AKX", "the-secret-key", "the-token", 12.5))
    for twin in (copy.copy(c), copy.deepcopy(c), pickle.loads(pickle.dumps(c))):
        assert twin == c and type(twin) is Credentials
    assert weakref.ref(c)() is c
    match c:
        case Credentials(ak, sk, token, expires):
            assert (ak, sk, token, expires) == ("AKX", "the-secret-key", "the-token", 12.5)
    with pytest.raises(AttributeError):
        c.sk = "changed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del c.ak  # type: ignore[misc]
    assert c.sk == "the-secret-key"
    assert "the-secret-key" not in repr(c) and "the-token" not in repr(c) and "AKX" in repr(c)
