"""Where settings come from: arguments first, then environment variables; regions and endpoints.

Building a handler from settings (``configure``, ``handler_factory``) is ``factory.py``'s: this module is
imported by ``handler.py``, so it imports no handler. Every check here runs at configuration time and raises
``ConfigError`` with the fix in words, so that a bad setting is found when the app starts, never when it logs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from .errors import ConfigError
from .events import PROJECT_ID

# The regions the official SDK lists for CES (huaweicloudsdkces.v1.region.ces_region), all of them served at
# https://ces.{region}.myhuaweicloud.com. Other clouds (Dublin, Huawei-based clouds) need an endpoint.
REGIONS: Final = (
    "af-north-1", "af-south-1", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "cn-east-2", "cn-east-3", "cn-east-4", "cn-east-5", "cn-north-1", "cn-north-11",
    "cn-north-12", "cn-north-2", "cn-north-4", "cn-north-9", "cn-south-1", "cn-south-2", "cn-south-4",
    "cn-southwest-2", "cn-southwest-3", "eu-west-0", "eu-west-101", "la-north-2", "la-south-2", "me-east-1",
    "my-kualalumpur-1", "na-mexico-1", "ru-moscow-1", "sa-brazil-1", "sa-peru-1", "tr-west-1",
)  # fmt: skip

ENV_ENDPOINT: Final = "CES_ENDPOINT"
ENV_REGION: Final = "CES_REGION"
ENV_SDK_REGION: Final = "HUAWEICLOUD_SDK_REGION"
ENV_PROJECT_IDS: Final = ("CES_PROJECT_ID", "HUAWEICLOUD_SDK_PROJECT_ID")
ENV_EVENT_SOURCE: Final = "CES_EVENT_SOURCE"
ENV_TOKEN: Final = "CES_AUTH_TOKEN"


def env_first(env: Mapping[str, str], *names: str) -> str | None:
    for n in names:
        v = env.get(n)
        if v and v.strip():
            return v.strip()
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    import ipaddress  # here, as urllib.parse below: only a handler that sends needs them

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_endpoint(
    endpoint: str | None,
    region: str | None,
    *,
    allow_insecure: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """The base URL to call: the endpoint given, else ``CES_ENDPOINT``, else the region's
    (``HUAWEICLOUD_SDK_REGION_CES_<REGION>`` when set, else ``https://ces.{region}.myhuaweicloud.com``)."""
    env = os.environ if env is None else env
    endpoint = endpoint or env_first(env, ENV_ENDPOINT)
    if not endpoint:
        region = region or env_first(env, ENV_REGION, ENV_SDK_REGION)
        if not region:
            raise ConfigError("no endpoint: set endpoint= or region= (or CES_ENDPOINT / CES_REGION)")
        override = env_first(env, "HUAWEICLOUD_SDK_REGION_CES_" + region.upper().replace("-", "_"))
        if override:
            endpoint = override
        elif region in REGIONS:
            endpoint = f"https://ces.{region}.myhuaweicloud.com"
        else:
            raise ConfigError(f"unknown region {region!r}: pass endpoint= for it (known regions: {', '.join(REGIONS)})")
    return check_endpoint(endpoint, allow_insecure=allow_insecure)


def check_endpoint(endpoint: str, *, allow_insecure: bool = False) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint.strip())
        parts.port  # noqa: B018 - a port that is not a number from 0 to 65535 raises here, not at the first send
    except ValueError as e:
        raise ConfigError(f"endpoint {endpoint!r} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"endpoint {endpoint!r} must be an http:// or https:// URL with a host")
    if parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
        raise ConfigError(
            f"endpoint {endpoint!r} is plain http to a host that is not this machine; "
            "use https, or pass allow_insecure=True if you really mean it"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"endpoint {endpoint!r} must not have a query or fragment")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def resolve_project_id(
    project_id: str | None, env: Mapping[str, str] | None = None, fallback: str | None = None
) -> str:
    env = os.environ if env is None else env
    pid = project_id or env_first(env, *ENV_PROJECT_IDS) or fallback
    if not pid:
        raise ConfigError("no project id: set project_id or CES_PROJECT_ID/HUAWEICLOUD_SDK_PROJECT_ID")
    if why := PROJECT_ID.check(pid):
        raise ConfigError(f"project id {pid!r} is not valid: {why}")
    return pid

