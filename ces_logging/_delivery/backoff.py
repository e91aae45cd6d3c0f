"""The wait before a retry: exponential, capped, jittered, and never shorter than the service asks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import random

BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 30.0
_MAX_DOUBLINGS: Final = 16  # past the cap long before: keeps ``2.0 ** n`` finite however long an outage lasts
RETRY_AFTER_CAP_S: Final = 300.0  # a Retry-After longer than this is a broken header, not a plan


def backoff_delay(attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): 1, 2, 4 ... capped at 30, with +-20% jitter (so that
    many processes that failed together do not retry together); ``Retry-After`` from the service wins when it
    says longer."""
    base = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))
    if rng is None:
        import random  # here: a retry is rare, and ``random`` would cost every process's import a millisecond

        jitter = random.uniform(0.8, 1.2)
    else:
        jitter = rng.uniform(0.8, 1.2)
    delay = base * jitter
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), RETRY_AFTER_CAP_S))
    return delay
