"""One exception type for everything the service or the network can say, with subclasses by kind.

The service answers errors in three body shapes (docs/api.md, 'Errors'); ``CESError.from_response`` reads all three.
Retry policy is the caller's; ``is_retryable`` and ``retry_after`` give it what it needs to decide.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, Final


class ConfigError(ValueError):
    """Bad configuration, raised at construction time (never at log time)."""


class CESError(Exception):
    """An error from Cloud Eye or on the way to it. Never carries a secret: only status, the service's error
    code and message, and the request id."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        head = " ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text

    @staticmethod
    def from_response(status: int, body: bytes, headers: Any) -> CESError:
        code, message = parse_error_body(body)
        request_id = headers.get("X-Request-Id") if headers is not None else None
        retry_after = parse_retry_after(headers.get("Retry-After")) if headers is not None else None
        cls = error_class_for(status)
        return cls(
            one_line(message) if message else f"HTTP {status}",
            status=status,
            code=code,
            request_id=request_id,
            retry_after=retry_after,
        )


class CESAuthError(CESError):
    """401 or 403: the credentials were refused, or the caller may not do this."""


class CESNoCredentialsError(CESAuthError):
    """The credential chain found nothing but a possible ECS metadata service, and that gave no credentials
    (unreachable, too slow, no agency). Raised at a request, never at construction: a machine whose metadata
    service is not there yet must not keep the app from starting. A handler counts what it cannot send as
    ``no_credentials``; the message names what to set."""


class CESThrottledError(CESError):
    """429: too many requests. Back off (``retry_after`` when the service said how long)."""

    retryable = True


class CESValidationError(CESError):
    """400, 404, 413 and other 4xx: the request itself is wrong; sending it again will not help."""


class CESServerError(CESError):
    """408 and 5xx: the service failed; the same request may succeed later."""

    retryable = True


class CESEndpointError(CESError):
    """The endpoint answered in a way that says the configuration is wrong, not that the service is down: a
    redirect (3xx: a signed request is never followed elsewhere), or a TLS certificate that does not verify
    (wrong host name, expired, unknown CA). Sending again will not help: the worker drops such a batch at once
    (``config``) with one line that names the problem."""

    retryable = False


class CESTransportError(CESError):
    """No answer: connection refused or reset, DNS, TLS, timeout. The request may or may not have landed."""

    retryable = True


class CESCertificateError(CESEndpointError, CESTransportError):
    """The server's TLS certificate did not verify: a transport error in ``requests``' words (``SSLError``), but
    a permanent one."""

    retryable = False


def error_class_for(status: int) -> type[CESError]:
    if status in (401, 403):
        return CESAuthError
    if status == 429:
        return CESThrottledError
    if status == 408 or status >= 500:
        return CESServerError
    return CESValidationError


def is_retryable(err: BaseException) -> bool:
    """408, 429, 5xx and transport errors are worth another try; the rest are not."""
    return isinstance(err, CESError) and err.retryable


MESSAGE_LIMIT = 300


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Text from an answer as one line for a person (a gateway's HTML error page has dozens), cut at ``limit``
    characters: every run of white space, line breaks included, becomes one space, and any other character a
    terminal would act on (an escape sequence in a hostile answer) a ``?``."""
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) from any of the service's three error shapes; raw text, on one line and cut, when it is
    not JSON."""
    text = body[: 64 * 1024].decode("utf-8", "replace").strip()
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None, one_line(text) or None
    if not isinstance(data, dict):
        return None, one_line(text) or None
    # 1. {"error_code": "ces.0014", "error_msg": "..."}
    if "error_code" in data or "error_msg" in data:
        return _str(data.get("error_code")), _str(data.get("error_msg"))
    msg = data.get("message")
    # 3. {"http_code": "403", "message": {"details": "...", "code": "403"}}
    if isinstance(msg, dict):
        return _str(msg.get("code")), _str(msg.get("details"))
    # 2. {"code": 400, "element": "Bad Request", "message": "...", "details": {"details": "...", "code": ...}}
    details = data.get("details")
    if isinstance(details, dict):
        detail_msg = _str(details.get("details"))
        message = _str(msg)
        if detail_msg and message and detail_msg != message:
            message = f"{message}: {detail_msg}"
        return _str(details.get("code")) or _str(data.get("code")), message or detail_msg
    return _str(data.get("code")), _str(msg)


def _str(v: object) -> str | None:
    return None if v is None else str(v)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    when = _http_date(value)
    return None if when is None else max(0.0, when - time.time())


# An HTTP date has three forms (RFC 9110, section 5.6.7), all in UTC: "Sun, 06 Nov 1994 08:49:37 GMT" (the one
# to send), "Sunday, 06-Nov-94 08:49:37 GMT" and "Sun Nov  6 08:49:37 1994". Parsed here, with arithmetic only:
# a Retry-After header is read on a worker thread, and a thread of ours never imports a module (forks.py), as
# the email package's parser would at its first use.
_MONTHS: Final = {
    m: i
    for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)
}
_IMF_OR_RFC850: Final = (
    r"[A-Za-z]+, (\d{1,2})[ -]([A-Za-z]{3})[ -](\d{2}|\d{4}) (\d{2}):(\d{2}):(\d{2}) (?:GMT|UTC|\+0000)"
)
_ASCTIME: Final = r"[A-Za-z]{3} ([A-Za-z]{3}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})"


def _http_date(value: str) -> float | None:
    """Seconds since the epoch of an HTTP date in any of its three forms; None when it is none of them."""
    if m := re.fullmatch(_IMF_OR_RFC850, value):
        day, mon, year, hh, mm, ss = m.groups()
    elif m := re.fullmatch(_ASCTIME, value):
        mon, day, hh, mm, ss, year = m.groups()
    else:
        return None
    month = _MONTHS.get(mon.lower())
    y, d, h, mi, s = int(year), int(day), int(hh), int(mm), int(ss)
    if len(year) == 2:  # a two-digit year more than 50 years ahead is the last century's (RFC 9110)
        now = time.gmtime().tm_year
        y += now - now % 100
        if y > now + 50:
            y -= 100
    if month is None or not (1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60):
        return None
    # days from 1970-01-01 to y-month-d in the proleptic Gregorian calendar (a March-based year)
    yy = y - (month <= 2)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return float(days * 86400 + h * 3600 + mi * 60 + s)


_USERINFO = re.compile(r"(?<=//)[^/\s@]+@")  # user:password@ in a URL (a proxy's, say)
_SECRET_HEADERS = ("authorization", "proxy-authorization", "x-auth-token", "x-security-token")


def transport_error_text(exc: BaseException, headers: Any = None, limit: int = 300) -> str:
    """What a transport failure may say in a ``CESTransportError``: the exception's type, and its text only
    when that text cannot hold a header value.

    A header value that the HTTP stack refuses (a token with a newline) comes back inside the exception's
    text (``Invalid header value b'...'``): for those only the type is told. For the rest, the values of the
    credential headers of the request (``headers``) and any ``user:password@`` of a URL are blanked out.
    """
    name = type(exc).__name__
    if "header" in name.lower() or not _is_transport_exception(exc):
        return name  # InvalidHeader, http.client's bare ValueError, UnicodeEncodeError of a header, ...
    text = str(exc)
    for value in _secret_values(headers):
        text = text.replace(value, "***")
        text = text.replace(repr(value)[1:-1], "***")
    text = _USERINFO.sub("***@", text)
    if len(text) > limit:
        text = text[:limit] + "..."
    if isinstance(exc, TransportFailure):
        return text or name  # its text already names the failure (Timeout, SSLError, ConnectionError)
    return f"{name}: {text}" if text else name


class TransportFailure(Exception):
    """An exchange of ``transport.FastPost`` failed before an answer (refused, reset, TLS, the total deadline).
    Its text names the failure and carries the operating system's words, never a header value or the body."""


class CertificateFailure(TransportFailure):
    """The server's certificate did not verify (its text: OpenSSL's words, "certificate has expired")."""


def _is_transport_exception(exc: BaseException) -> bool:
    if isinstance(exc, TransportFailure):
        return True
    # Not imported here: errors stays importable without the HTTP stack, and a thread of ours never imports
    # (forks.py). Not loaded means the exception cannot be one of its.
    requests = sys.modules.get("requests")
    return requests is not None and isinstance(exc, requests.RequestException) and not isinstance(exc, ValueError)


def _secret_values(headers: Any) -> Iterable[str]:
    if headers is None:
        return []
    out = []
    for k, v in headers.items():
        if str(k).lower() in _SECRET_HEADERS and v:
            text = v.decode("latin-1", "replace") if isinstance(v, bytes) else str(v)
            out.append(text)
            out.extend(p for p in re.split(r"[\s,=]+", text) if len(p) >= 8)  # Authorization's parts
    return sorted(set(out), key=len, reverse=True)
