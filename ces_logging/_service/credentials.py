"""The credential chain: what to sign with when the caller passed nothing, and where it came from.

Order (the official SDK's conventions, docs/api.md, 'Authentication'): arguments; environment
(``HUAWEICLOUD_SDK_AK``/``_SK``/``_SECURITY_TOKEN``, or a token in ``CES_AUTH_TOKEN``); the profile file
(``HUAWEICLOUD_SDK_CREDENTIALS_FILE``, default ``~/.huaweicloud/credentials``, section ``[basic]``); the ECS
metadata service (temporary keys of the instance's agency). ``ResolvedAuth.source`` names the source for
``doctor``; it never holds a secret.

The rule for what is wrong and what is "not there yet": a source that is there but wrong (a malformed key, an
AK without its SK, a profile file that cannot be parsed) is a ``ConfigError`` at construction. The metadata
service is the exception: it is a network service, so whether it answers is not known without waiting, and a
construction must never wait on the network or fail for what may come later (an instance whose agency or
metadata route is not up yet, a laptop running the production settings). So when the chain finds nothing before
it, the metadata service is asked lazily, at the first request, under the request's deadline; while it gives
nothing, each request raises ``CESNoCredentialsError`` (a handler drops the batch as ``no_credentials`` and says
what to set), and it is asked again at most every ``NO_CREDENTIALS_RETRY_S``. ``CES_METADATA_URL=off`` says
there is no metadata service: nothing found is then the ``ConfigError`` at construction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .. import notice
from ..config import ENV_TOKEN, env_first
from ..errors import CESError, CESNoCredentialsError, ConfigError
from .auth import AKSKAuth, Credentials, MetadataCredentialsProvider, TokenAuth, TokenProvider

if TYPE_CHECKING:
    import requests

ENV_METADATA_URL = "CES_METADATA_URL"
METADATA_OFF = "off"  # CES_METADATA_URL=off: no metadata service here; nothing found is a ConfigError
NO_CREDENTIALS_RETRY_S = 30.0  # after the metadata service gave nothing: requests fail at once this long
_WHAT_TO_SET = (
    "pass ak/sk or token, set HUAWEICLOUD_SDK_AK/HUAWEICLOUD_SDK_SK or CES_AUTH_TOKEN, write [basic] in "
    "~/.huaweicloud/credentials, or run on an ECS with an agency"
)


class ChainMetadataProvider(MetadataCredentialsProvider):
    """The metadata service as the chain's last source, asked at the first request rather than at
    construction. Until it has given credentials once, a failure is ``CESNoCredentialsError`` (naming what to
    set), and the next ``NO_CREDENTIALS_RETRY_S`` seconds fail at once, without the network: a worker with
    nothing to sign with must not spend a request timeout on every batch. Once it has given credentials, a
    failed refresh is what it always was (a transport or auth error, retried by the worker)."""

    def __init__(self, base_url: str | None, *, session: requests.Session | None, timeout: float) -> None:
        super().__init__(base_url, session=session, timeout=timeout)
        self._got_any = False
        self._quiet_until = 0.0  # monotonic
        self._why = ""

    def _fetch(self) -> tuple[Credentials, float | None]:
        # Under the provider's lock (``_get``): threads that waited for a failed fetch fail at once after it.
        if not self._got_any and time.monotonic() < self._quiet_until:
            raise CESNoCredentialsError(self._why)
        try:
            fetched = super()._fetch()
        except CESError as e:
            if self._got_any:
                raise
            self._why = f"no credentials found: {_WHAT_TO_SET} (the metadata service at {self.base_url}: {e})"
            self._quiet_until = time.monotonic() + NO_CREDENTIALS_RETRY_S
            raise CESNoCredentialsError(self._why) from None
        self._got_any = True
        return fetched


def _profile_file(env: Mapping[str, str]) -> Path | None:
    """The profile file when there is one to read. What the environment makes unreadable (a HOME the user may
    not enter, no HOME at all, a file without read permission) counts as no file, said once on stderr: it must
    not keep the app from starting (a service user, a container running as another uid)."""
    given = env_first(env, "HUAWEICLOUD_SDK_CREDENTIALS_FILE")
    try:
        path = Path(given) if given else Path.home() / ".huaweicloud" / "credentials"
        if not path.is_file():
            return None
        with path.open("rb"):
            pass
        return path
    except (OSError, RuntimeError, KeyError) as e:  # RuntimeError, KeyError: no home directory to be found
        where = given or "~/.huaweicloud/credentials"
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        notice.say("profile-unreadable", f"profile file {where} cannot be read ({why}): skipped", interval=3600)
        return None


class ResolvedAuth(NamedTuple):  # not a dataclass: see ``Credentials``
    auth: AKSKAuth | TokenAuth | None  # None: no credentials, only for an open (local) endpoint
    source: str  # "arguments", "environment", "profile file <path>", "metadata <url>", "none"
    project_id: str | None = None  # a project id the source carried (profile file)


def resolve_auth(
    *,
    ak: str | None = None,
    sk: str | None = None,
    security_token: str | None = None,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    project_id: str | None = None,
    local_endpoint: bool = False,
    env: Mapping[str, str] | None = None,
    session: requests.Session | None = None,
) -> ResolvedAuth:
    env = os.environ if env is None else env
    if sum(x is not None for x in (ak or sk or None, token, token_provider)) > 1:
        raise ConfigError("pass one kind of credentials: ak/sk, token, or token_provider")
    if token_provider is not None:
        return ResolvedAuth(TokenAuth(token_provider), "arguments (token provider)")
    if token is not None:
        return ResolvedAuth(TokenAuth(token), "arguments (token)")
    if ak or sk:
        if not (ak and sk):
            raise ConfigError("an access key (ak) needs its secret key (sk), and the other way round")
        return ResolvedAuth(AKSKAuth(ak, sk, security_token, project_id), "arguments (ak/sk)")

    env_ak, env_sk = env_first(env, "HUAWEICLOUD_SDK_AK"), env_first(env, "HUAWEICLOUD_SDK_SK")
    if env_ak or env_sk:
        if not (env_ak and env_sk):
            raise ConfigError("HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK must be set together")
        tok = env_first(env, "HUAWEICLOUD_SDK_SECURITY_TOKEN")
        return ResolvedAuth(AKSKAuth(env_ak, env_sk, tok, project_id), "environment (HUAWEICLOUD_SDK_AK/SK)")
    env_token = env_first(env, ENV_TOKEN)
    if env_token:
        return ResolvedAuth(TokenAuth(env_token), f"environment ({ENV_TOKEN})")

    path = _profile_file(env)
    if path is not None:
        import configparser  # a profile file only; resolve_auth runs when a client is built, on the app's thread

        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as e:
            raise ConfigError(f"profile file {path} cannot be read: {type(e).__name__}") from None
        except UnicodeDecodeError as e:  # never show the bytes: the file holds secrets
            raise ConfigError(f"profile file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
        except OSError as e:
            raise ConfigError(f"profile file {path} cannot be read: {e.strerror or type(e).__name__}") from None
        if parser.has_section("basic"):
            sec = parser["basic"]
            p_ak, p_sk = sec.get("ak", "").strip(), sec.get("sk", "").strip()
            if p_ak or p_sk:
                if not (p_ak and p_sk):
                    raise ConfigError(f"profile file {path}: [basic] needs both ak and sk")
                pid = sec.get("project_id", "").strip() or None
                tok = sec.get("security_token", "").strip() or None
                return ResolvedAuth(AKSKAuth(p_ak, p_sk, tok, project_id or pid), f"profile file {path}", pid)

    meta_url = env_first(env, ENV_METADATA_URL)
    no_metadata = (meta_url or "").strip().lower() == METADATA_OFF
    if local_endpoint and (not meta_url or no_metadata):
        return ResolvedAuth(None, "none (open local endpoint)")
    if no_metadata:
        raise ConfigError(f"no credentials found: {_WHAT_TO_SET} ({ENV_METADATA_URL}={METADATA_OFF})")
    # Not asked now: see the module docstring (construction never waits on the network).
    provider = ChainMetadataProvider(meta_url, session=session, timeout=2.0)
    return ResolvedAuth(AKSKAuth(project_id=project_id, provider=provider), f"metadata {provider.base_url}")
