"""A pytest plugin, registered through the ``pytest11`` entry point: your suite gets ``ces_emulator`` with no
conftest.

The fixture starts an emulator on 127.0.0.1 (a free port, an in-memory store) and points the standard settings
at it for the test (``CES_ENDPOINT``, ``CES_PROJECT_ID``), so the code under test configures itself as it would
in production: ``ces_logging.configure()`` with no arguments sends to the emulator. At teardown every
``CESHandler`` that points at it is taken off its logger and closed (delivering what it holds while the
emulator still runs), so no handler outlives its test and nothing is reported lost at interpreter exit.

Disable with ``-p no:ces_logging``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .emulator import Emulator

DEFAULT_PROJECT_ID = "test-project"


class CESEmulator:
    """The fixture's value: the running ``Emulator`` with a default project.

    ``events(name, **filters)`` lists a name's stored events newest first (``project_id=`` to look at
    another project; filters as the query API's: ``event_level``, ``event_state``, ``event_source`` ...).
    Anything else (``url``, ``add_fault``, ``stats``, ``count``, ``admin`` ...) is the ``Emulator``'s own.
    """

    def __init__(self, emulator: Emulator, project_id: str = DEFAULT_PROJECT_ID) -> None:
        self.emulator = emulator
        self.project_id = project_id

    @property
    def url(self) -> str:
        return self.emulator.url

    def events(self, name: str, *, project_id: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        return self.emulator.events(project_id or self.project_id, name, **filters)

    def count(self, project_id: str | None = None) -> int:
        """Events stored for the project (the default one unless given)."""
        return self.emulator.count(project_id or self.project_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.emulator, name)

    def __repr__(self) -> str:
        return f"CESEmulator(url={self.url!r}, project_id={self.project_id!r})"


def detach_handlers(url: str) -> int:
    """Take every ``CESHandler`` that sends to ``url`` off every logger and close it; returns how many.

    Closing delivers what the handler still holds (within its grace period), so call it while the emulator
    is up."""
    from .handler import CESHandler

    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
    found: list[logging.Handler] = []
    for lg in loggers:
        for h in list(lg.handlers):
            endpoint = getattr(getattr(h, "client", None), "endpoint", None)
            if isinstance(h, CESHandler) and isinstance(endpoint, str) and endpoint.startswith(url):
                lg.removeHandler(h)
                if h not in found:
                    found.append(h)
    for h in found:
        h.close()
    return len(found)


@pytest.fixture
def ces_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[CESEmulator]:
    """A local Cloud Eye for one test, with ``CES_ENDPOINT`` and ``CES_PROJECT_ID`` pointing at it."""
    from .emulator import Emulator

    with Emulator() as emu:
        fixture = CESEmulator(emu)
        monkeypatch.setenv("CES_ENDPOINT", emu.url)
        monkeypatch.setenv("CES_PROJECT_ID", fixture.project_id)
        try:
            yield fixture
        finally:
            detach_handlers(emu.url)
