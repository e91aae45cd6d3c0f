"""Authentication for Cloud Eye, each scheme an auth callable of ``requests`` that plugs into any session.

- ``AKSKAuth``: SDK-HMAC-SHA256 request signing, exactly as the official SDK's ``Signer`` does it
  (docs/api.md, 'Authentication'). The canonical-request functions are public so that the emulator verifies
  with the very same code.
- ``TokenAuth``: ``X-Auth-Token`` from a fixed token or a provider (refreshed before expiry, and on 401).
- ``IAMPasswordTokenProvider``: tokens from IAM's ``POST /v3/auth/tokens`` with a password identity.

Every class here hides its secrets in ``repr``, and every credential value is checked before it can reach a
header (``clean_credential``): a value with a newline would otherwise make the HTTP stack raise an error that
quotes it.

Building any of them loads no HTTP stack: a sending handler builds its signer on the app's thread, and the
worker's POST signs through ``headers_for`` without ``requests``. So the signers are plain callables
(``requests`` takes any ``auth(request) -> request``; its ``AuthBase`` is only a base class with ``__call__``),
and the providers that fetch over HTTP import ``requests`` when they first fetch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .. import forks
from ..config import check_endpoint
from ..errors import CESAuthError, CESError, CESTransportError, ConfigError

if TYPE_CHECKING:
    import requests

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_CLOCK_SKEW_S = 15 * 60  # the gateway accepts X-Sdk-Date within 15 minutes of its clock


# --- the signing algorithm (shared with the emulator's verifier) -------------------------------------------


def _q(s: str) -> str:
    return quote(s, safe="~")


def canonical_uri(path: str) -> str:
    """The path unquoted, each segment quoted with ``safe='~'``, and a ``/`` always appended."""
    uri = "/".join(_q(seg) for seg in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Pairs sorted, key and value quoted with ``safe='~'`` (a space is %20), joined by ``&``."""
    return "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(pairs))


def encode_query(params: Mapping[str, object]) -> str:
    """A query string in the form the signer expects, so what is sent is what was signed."""
    return canonical_query((k, str(v)) for k, v in params.items() if v is not None)


def signed_header_names(headers: Iterable[str]) -> list[str]:
    """Every header whose name has no ``_``, lower-cased and sorted."""
    return sorted({h.lower() for h in headers if "_" not in h})


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed: list[str],
    body: bytes,
) -> str:
    """``headers`` maps lower-case names to values; ``query`` is the raw query string."""
    return canonical_start(method, path, query) + canonical_headers(headers, signed) + body_sha256(body)


def canonical_start(method: str, path: str, query: str) -> str:
    """The canonical request's first three lines, each with its line end: method, URI and query (a signer
    that sends to one URL keeps this)."""
    return f"{method.upper()}\n{canonical_uri(path)}\n{canonical_query(parse_qsl(query, keep_blank_values=True))}\n"


def canonical_headers(headers: Mapping[str, str], signed: list[str]) -> str:
    """The signed headers' lines (``name:value``, stripped), an empty line, and their names; each line
    with its line end. The body's hash comes after."""
    lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
    return f"{lines}\n{';'.join(signed)}\n"


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256


def signature(sk: str, sdk_date: str, canonical: str) -> str:
    string_to_sign = f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(sk.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def authorization_header(ak: str, signed: list[str], sig: str) -> str:
    return f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed)}, Signature={sig}"


def parse_authorization(value: str) -> tuple[str, list[str], str] | None:
    """(access key, signed header names, signature) from an Authorization header; None when malformed."""
    algo, _, rest = value.strip().partition(" ")
    if algo != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        k, sep, v = part.strip().partition("=")
        if sep:
            fields[k] = v
    try:
        return fields["Access"], fields["SignedHeaders"].split(";"), fields["Signature"]
    except KeyError:
        return None


_date_cache: tuple[int, str] = (-1, "")  # the current second's X-Sdk-Date (signing is per request, dates per second)


def format_sdk_date(t: float | None = None) -> str:
    global _date_cache
    if t is None:
        now = int(time.time())
        cached = _date_cache
        if cached[0] == now:
            return cached[1]
        text = datetime.fromtimestamp(now, timezone.utc).strftime(DATE_FORMAT)
        _date_cache = (now, text)  # one tuple, swapped whole: safe without a lock
        return text
    return datetime.fromtimestamp(t, timezone.utc).strftime(DATE_FORMAT)


def parse_sdk_date(value: str) -> float:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=timezone.utc).timestamp()


# --- credentials ---------------------------------------------------------------------------------------------

_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: what every AK, SK and token is made of


def clean_credential(name: str, value: str) -> str:
    """``value`` without surrounding white space (``open(path).read()`` leaves a newline), or ``ConfigError``
    when what is left cannot travel in a header. The message names the field, never the value."""
    if not isinstance(value, str):
        raise ConfigError(f"the {name} must be a string, got {type(value).__name__}")
    v = value.strip()
    if not v:
        raise ConfigError(f"the {name} is empty")
    if not _HEADER_SAFE.fullmatch(v):
        raise ConfigError(
            f"the {name} has white space, control or non-ASCII characters in it (it cannot be sent in a "
            "header); check how it was copied"
        )
    return v


def _header_safe(value: str | None) -> bool:
    return value is None or bool(_HEADER_SAFE.fullmatch(value))


class Credentials:
    """An AK/SK pair, with a security token and an expiry for temporary keys; read-only, compared by value.

    A plain class, not a dataclass: ``dataclasses`` loads ``inspect`` (with ``ast`` and ``dis``), some ten
    milliseconds of every cold start that builds a handler. It copies, pickles and matches as the frozen
    dataclass it replaced did."""

    __slots__ = ("__weakref__", "ak", "expires_at", "security_token", "sk")
    __match_args__ = ("ak", "sk", "security_token", "expires_at")
    ak: str
    sk: str
    security_token: str | None
    expires_at: float | None  # epoch seconds

    def __init__(self, ak: str, sk: str, security_token: str | None = None, expires_at: float | None = None) -> None:
        for name, value in (("ak", ak), ("sk", sk), ("security_token", security_token), ("expires_at", expires_at)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Credentials are read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Credentials are read-only: cannot delete {name!r}")

    def _key(self) -> tuple[str, str, str | None, float | None]:
        return (self.ak, self.sk, self.security_token, self.expires_at)

    def __reduce__(self) -> tuple[type[Credentials], tuple[str, str, str | None, float | None]]:
        return (Credentials, self._key())  # copy and pickle build a new one (assignment is refused)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, Credentials) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        tok = ", security_token=***" if self.security_token else ""
        return f"Credentials(ak={self.ak!r}, sk=***{tok}, expires_at={self.expires_at!r})"


class CredentialsProvider(Protocol):
    def credentials(self) -> Credentials: ...

    def invalidate(self) -> None: ...


class StaticCredentials:
    def __init__(self, creds: Credentials) -> None:
        self._creds = creds

    def credentials(self) -> Credentials:
        return self._creds

    def invalidate(self) -> None:
        """Nothing to refresh: fixed keys stay what they are."""

    def __repr__(self) -> str:
        return f"StaticCredentials({self._creds!r})"


_PROVIDERS: weakref.WeakSet[RefreshingProvider] = weakref.WeakSet()


def _renew_locks_after_fork() -> None:
    """A fork while a worker waits on a token or key fetch copies the held lock into the child, whose worker
    would then wait for ever: every provider gets a new lock (and fetches again) in the child."""
    for p in list(_PROVIDERS):
        p._lock = threading.Lock()


forks.on_new_process(_renew_locks_after_fork)


class RefreshingProvider:
    """Caches a value with an expiry; fetches a new one ``refresh_before`` seconds ahead of it, or after
    ``invalidate()``. Thread-safe: one fetch at a time, the others wait for it."""

    def __init__(self, refresh_before: float) -> None:
        self._refresh_before = refresh_before
        self._lock = threading.Lock()
        _PROVIDERS.add(self)
        self._value: Any = None
        self._expires_at: float | None = None

    def _fetch(self) -> tuple[Any, float | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _get(self) -> Any:
        with self._lock:
            fresh = self._value is not None and (
                self._expires_at is None or time.time() < self._expires_at - self._refresh_before
            )
            if not fresh:
                self._value, self._expires_at = self._fetch()
            return self._value

    def invalidate(self) -> None:
        with self._lock:
            self._value = None


def _fetch_session(given: requests.Session | None, pool_maxsize: int) -> requests.Session:
    """The session a provider fetches with: the caller's, or one of ours with the total deadline, made at the
    first fetch (under the provider's lock: one per provider)."""
    if given is not None:
        return given
    from .deadline import new_session  # requests: at the first fetch, not when the provider is built

    return new_session(pool_maxsize)


def _iso_to_epoch(value: str) -> float:
    v = value.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


DEFAULT_METADATA_URL = "http://169.254.169.254"
METADATA_PATH = "/openstack/latest/securitykey"


class MetadataCredentialsProvider(RefreshingProvider):
    """Temporary AK/SK/security token of the ECS agency, from the instance metadata service.

    ``base_url`` defaults to ``CES_METADATA_URL`` (so tests can point it at a local server) and then to the
    link-local address. Keys are fetched again 10 minutes before ``expires_at``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        session: requests.Session | None = None,
        timeout: float = 3.0,
        refresh_before: float = 600.0,
    ) -> None:
        super().__init__(refresh_before)
        import requests  # noqa: F401 - fetched with on the worker's thread, imported on this one (forks.py)

        self.base_url = (base_url or DEFAULT_METADATA_URL).rstrip("/")
        self._session = session  # None: ours, made at the first fetch
        self._timeout = timeout

    def _fetch(self) -> tuple[Credentials, float | None]:
        import requests

        from .deadline import total_deadline

        url = self.base_url + METADATA_PATH
        self._session = _fetch_session(self._session, 2)
        try:
            with total_deadline(self._timeout):  # the whole answer within the timeout, not each byte of it
                r = self._session.get(url, timeout=self._timeout)
        except (requests.RequestException, ValueError) as e:
            raise CESTransportError(f"metadata service at {self.base_url} unreachable: {type(e).__name__}") from None
        if r.status_code != 200:
            raise CESAuthError(f"metadata service answered HTTP {r.status_code}", status=r.status_code)
        try:
            c = r.json()["credential"]
            expires = _iso_to_epoch(c["expires_at"]) if c.get("expires_at") else None
            tok = c.get("securitytoken")
            creds = Credentials(c["access"].strip(), c["secret"].strip(), tok.strip() if tok else None, expires)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CESAuthError("metadata service answered without a usable credential") from None
        if not (_header_safe(creds.ak) and _header_safe(creds.sk) and _header_safe(creds.security_token)):
            raise CESAuthError("metadata service answered a credential with characters a header cannot carry")
        return creds, expires

    def credentials(self) -> Credentials:
        creds: Credentials = self._get()
        return creds

    def __repr__(self) -> str:
        return f"MetadataCredentialsProvider(base_url={self.base_url!r})"


class AKSKAuth:
    """Signs each request with SDK-HMAC-SHA256 (the official SDK's scheme): an auth object for ``requests``
    (``session.auth = ...``) as well as for ``CESClient``."""

    def __init__(
        self,
        ak: str | None = None,
        sk: str | None = None,
        security_token: str | None = None,
        project_id: str | None = None,
        *,
        provider: CredentialsProvider | None = None,
    ) -> None:
        if provider is None:
            if not ak or not sk:
                raise ConfigError("AK/SK signing needs both an access key (ak) and a secret key (sk)")
            ak, sk = clean_credential("ak", ak), clean_credential("sk", sk)
            if security_token is not None:
                security_token = clean_credential("security_token", security_token)
            provider = StaticCredentials(Credentials(ak, sk, security_token))
        self.provider = provider
        self.project_id = project_id
        self._checked: Credentials | None = None  # the last credentials found header-safe
        self._starts: dict[tuple[str, str, str], str] = {}  # canonical_start per (method, path, query)

    def __repr__(self) -> str:
        return f"AKSKAuth(provider={self.provider!r}, project_id={self.project_id!r})"

    def refresh(self) -> None:
        self.provider.invalidate()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        parts = urlsplit(r.url or "")
        body = r.body if isinstance(r.body, bytes) else (r.body or "").encode()
        r.headers.update(self.headers_for(r.method or "GET", parts.netloc, parts.path, parts.query, r.headers, body))
        return r

    def headers_for(
        self, method: str, netloc: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        """The headers signing adds to a request whose own ``headers`` are given (``Content-Type`` is signed
        when there): ``X-Sdk-Date``, ``Host``, ``X-Project-Id``, ``X-Security-Token`` and ``Authorization``.
        ``__call__`` and the client's hot POST both sign through here; the URL's part of the canonical request
        is kept per URL (the worker signs the same one every time)."""
        creds = self.provider.credentials()
        if creds is not self._checked:  # a provider's (or a caller's own) keys: checked once per object
            if not (_header_safe(creds.ak) and _header_safe(creds.sk) and _header_safe(creds.security_token)):
                raise CESAuthError("the credentials hold characters a header cannot carry (white space?)")
            self._checked = creds
        date = format_sdk_date()
        added = {"X-Sdk-Date": date, "Host": netloc}
        present = {"host": netloc, "x-sdk-date": date}
        for name in ("Content-Type", "X-Project-Id", "X-Security-Token"):  # signed when the request has them
            value = headers.get(name)
            if value is not None:
                present[name.lower()] = str(value)
        if self.project_id:
            added["X-Project-Id"] = present["x-project-id"] = self.project_id
        if creds.security_token:
            added["X-Security-Token"] = present["x-security-token"] = creds.security_token
        signed = signed_header_names(present)
        key = (method, path, query)
        start = self._starts.get(key)
        if start is None:
            start = canonical_start(method, path, query)
            if len(self._starts) < 64:
                self._starts[key] = start
        canonical = start + canonical_headers(present, signed) + body_sha256(body)
        sig = signature(creds.sk, date, canonical)
        added["Authorization"] = authorization_header(creds.ak, signed, sig)
        return added


# --- tokens ------------------------------------------------------------------------------------------------


class TokenProvider(Protocol):
    def token(self) -> str: ...

    def invalidate(self) -> None: ...


class TokenAuth:
    """``X-Auth-Token`` from a fixed token or from a provider (asked before each request: it caches): an auth
    object for ``requests`` as well as for ``CESClient``."""

    def __init__(self, token: str | TokenProvider) -> None:
        if isinstance(token, str):
            self._token: str | None = clean_credential("token", token)
            self.provider: TokenProvider | None = None
        else:
            self._token = None
            self.provider = token

    def __repr__(self) -> str:
        return f"TokenAuth(provider={self.provider!r})" if self.provider else "TokenAuth(token=***)"

    def refresh(self) -> None:
        if self.provider is not None:
            self.provider.invalidate()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.update(self.headers_for())
        return r

    def headers_for(self, *_: object) -> dict[str, str]:
        """The header this scheme adds (``AKSKAuth.headers_for``'s form; a token does not depend on the
        request)."""
        if self.provider is None:
            return {"X-Auth-Token": str(self._token)}
        tok = self.provider.token()
        if not _header_safe(tok):
            raise CESAuthError("the token provider gave a token with characters a header cannot carry")
        return {"X-Auth-Token": tok}


class IAMPasswordTokenProvider(RefreshingProvider):
    """IAM tokens for a user name and password: fetched on first use, cached, fetched again one hour before
    ``expires_at`` (tokens live 24 h) or after a 401. Thread-safe.

    The password travels in the request body, so ``iam_endpoint`` must be https unless it is this machine
    (``allow_insecure=True`` overrides, as for the CES endpoint). ``timeout`` bounds the whole exchange."""

    def __init__(
        self,
        username: str,
        password: str,
        domain: str,
        *,
        region: str | None = None,
        project_id: str | None = None,
        iam_endpoint: str | None = None,
        timeout: float = 10.0,
        refresh_before: float = 3600.0,
        session: requests.Session | None = None,
        allow_insecure: bool = False,
    ) -> None:
        super().__init__(refresh_before)
        if not (username and password and domain):
            raise ConfigError("IAM password tokens need username, password and domain")
        if not (region or project_id):
            raise ConfigError("IAM password tokens need a region (project name) or a project_id for the scope")
        if iam_endpoint is None:
            if not region:
                raise ConfigError("set iam_endpoint or region for IAM password tokens")
            iam_endpoint = f"https://iam.{region}.myhuaweicloud.com"
        self.username = username
        self._password = password
        self.domain = domain
        self.region = region
        self.project_id = project_id
        # The password travels in the body: plain http only to this machine, as for the CES endpoint.
        self.iam_endpoint = check_endpoint(iam_endpoint, allow_insecure=allow_insecure)
        self._timeout = timeout
        self._session = session  # None: ours, made at the first fetch
        import requests  # noqa: F401 - fetched with on the worker's thread, imported on this one (forks.py)

    def __repr__(self) -> str:
        return (
            f"IAMPasswordTokenProvider(username={self.username!r}, password=***, domain={self.domain!r}, "
            f"iam_endpoint={self.iam_endpoint!r})"
        )

    def _fetch(self) -> tuple[str, float | None]:
        import requests

        from .deadline import total_deadline

        self._session = _fetch_session(self._session, 2)
        scope = {"project": {"id": self.project_id} if self.project_id else {"name": self.region}}
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.username,
                            "password": self._password,
                            "domain": {"name": self.domain},
                        }
                    },
                },
                "scope": scope,
            }
        }
        try:
            with total_deadline(self._timeout):  # the whole answer within the timeout, not each byte of it
                r = self._session.post(
                    self.iam_endpoint + "/v3/auth/tokens",
                    data=json.dumps(body),
                    headers={"Content-Type": "application/json;charset=utf8"},
                    timeout=self._timeout,
                )
        except (requests.RequestException, ValueError) as e:
            raise CESTransportError(f"IAM at {self.iam_endpoint} unreachable: {type(e).__name__}") from None
        if r.status_code != 201:
            raise CESError.from_response(r.status_code, r.content, r.headers)
        token = (r.headers.get("X-Subject-Token") or "").strip()
        if not token:
            raise CESAuthError("IAM answered 201 without an X-Subject-Token header", status=201)
        if not _header_safe(token):
            raise CESAuthError("IAM answered a token with characters a header cannot carry", status=201)
        try:
            expires: float | None = _iso_to_epoch(r.json()["token"]["expires_at"])
        except (ValueError, KeyError, TypeError):
            expires = time.time() + 3600  # unknown expiry: the safe reading is a short life
        return token, expires

    def token(self) -> str:
        tok: str = self._get()
        return tok
