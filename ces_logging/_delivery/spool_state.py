"""The spool and the outage, owned by one object: where batches wait on disk, and whether the service is down.

State (under ``lock``; the batcher reads it, every sender writes it):

- ``backlog``: files may be waiting (ours, or another process's): the batcher sends the oldest one when due,
  and new batches go to disk behind them, so that the order holds. A sender sets it when it puts a batch on
  disk (``_on_disk``); the batcher clears it when the spool looks empty, but only if no batch went to disk
  since it looked (``_stored``, a count under the lock): a file a sender wrote while the batcher listed the
  directory would otherwise wait unseen until the next outage;
- ``outage``: a send failed in a way the service may recover from (429, 5xx, no connection) and the batch went
  to disk: new batches go to disk too, and one spooled file at a time (the *probe*) tries the service;
- ``probe_attempt`` and ``next_probe``: the back-off between probes. It spans batches (it is the service that is
  down, not one batch), so concurrent senders that fail at once count one step each, under the lock;
- ``broken_until``: a disk error (full, read-only) means memory only until then; what the spool already holds is
  still read and delivered.

Every file taken from the spool ends ``done`` (delivered or dropped, counted) or released back to disk; a
file's items are counted through its ``Ledger`` (``own`` or ``recovered``), so the stats invariant holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ..mapping import encode_batch
from ..spool import Spool, SpoolFile
from .backoff import backoff_delay
from .outcome import Event, Ledger
from .stats import WorkerStats

SPOOL_RETRY_S: Final = 5.0  # after a disk error (full, read-only), the spool is written again this much later


class SpoolState:
    """The spool (None: memory only) and the outage state, with a lock of its own."""

    def __init__(self, spool: Spool | None, stats: WorkerStats, say: Callable[[str, str], bool]) -> None:
        self.spool = spool
        self.stats = stats
        self.say = say
        self.lock = threading.Lock()
        self.backlog = spool is not None and spool.pending() > 0
        self._stored = 0  # batches put on disk (written or given back): see ``backlog`` above
        # Leased files a disk error kept us from giving back: still ours (our pid and token), so no one takes
        # them as stale while this process lives; given back at the next claim.
        self._unreleased: list[SpoolFile] = []
        self.broken_until = 0.0
        self.outage = False
        self.probing = False  # one spooled file in flight while the service is down
        self.probe_attempt = 0
        self.next_probe = 0.0

    def renew_locks(self) -> None:
        """A new lock, made with ``threading`` as it is now (the worker's first start; see green.py)."""
        self.lock = threading.Lock()

    def _on_disk(self) -> None:
        """A batch was put on disk: the batcher must look."""
        with self.lock:
            self._stored += 1
            self.backlog = True

    @property
    def owner(self) -> str | None:
        return self.spool.owner if self.spool is not None else None

    # --- the outage --------------------------------------------------------------------------------------------

    def failed(self, retry_after: float | None) -> float:
        """A send failed and may succeed later: the next step of the shared back-off, in seconds."""
        with self.lock:
            self.probe_attempt += 1
            attempt = self.probe_attempt
        return backoff_delay(attempt, retry_after)

    def went_down(self, delay: float) -> None:
        """A failed batch is on disk: the service is down; the next probe in ``delay`` seconds."""
        with self.lock:
            self.outage = True
            self.next_probe = time.monotonic() + delay

    def recovered(self) -> bool:
        """A batch was delivered: the back-off starts over; True when this ends an outage (wake the batcher:
        the spool drains now)."""
        with self.lock:
            self.probe_attempt = 0
            if not self.outage:
                return False
            self.outage = False
            self.next_probe = 0.0
            return True

    def try_now(self) -> None:
        """A flush or a deadline: the spool is tried now, not at the next back-off step."""
        self.next_probe = 0.0

    def due(self, stopping: bool) -> bool:
        """The batcher may send the oldest spooled file now. ``stopping`` with a deadline while the service is
        down: the files wait for the next process."""
        with self.lock:
            if not self.backlog or self.spool is None or self.probing:
                return False
            if self.outage and stopping:
                return False
            return time.monotonic() >= self.next_probe

    def probe_ended(self) -> None:
        self.probing = False

    def waiting_to_send(self) -> bool:
        """Files of ours or others that could go now (the service is up)."""
        return self.backlog and not self.outage and self.spool is not None

    # --- the disk ----------------------------------------------------------------------------------------------

    def usable(self) -> bool:
        return self.spool is not None and time.monotonic() >= self.broken_until

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A spool operation; a disk problem (full, read-only) means memory only for a while, with one line;
        the spool is tried again later, and what it already holds is still read and delivered."""
        try:
            out = fn(*args)
            self._note_skipped()
            return out
        except OSError as e:
            self.say(
                "spool-error",
                f"spool at {getattr(self.spool, 'dir', '?')} failed ({type(e).__name__}: {e.strerror or e}); "
                f"keeping events in memory and trying the disk again in {SPOOL_RETRY_S:g} s",
            )
            self.broken_until = time.monotonic() + SPOOL_RETRY_S
            return None

    def _note_skipped(self) -> None:
        """Files the spool skipped (a symlink, a FIFO, another user's, too large): counted, said once."""
        spool = self.spool
        skipped = spool.take_skipped() if spool is not None else []
        if not skipped:
            return
        with self.stats.cond:
            self.stats.spool_skipped += len(skipped)
        name, why = skipped[0]
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        self.say(
            "spool-skipped",
            f"spool at {getattr(spool, 'dir', '?')}: {name} ({why}){more} skipped, not read: not a batch this "
            "user wrote",
        )

    def write(self, batch: list[Event], ledger: Ledger) -> bool:
        """Write a batch to disk; True when it is there. The size cap may push out the oldest files: their
        items are counted as dropped (``spool_full``)."""
        spool = self.spool
        if spool is None or not ledger.spoolable or not self.usable():
            return False
        evicted = self.call(spool.write, encode_batch(batch), len(batch), ledger.owner)
        if evicted is None:
            return False
        self._count_evicted(evicted)
        ledger.spooled(len(batch))
        self._on_disk()
        return True

    def _count_evicted(self, evicted: list[SpoolFile]) -> None:
        """Spool files the size cap pushed out: their items are dropped as ``spool_full``, said once a minute."""
        spool = self.spool
        for f in evicted:
            kind = "own" if spool is not None and f.owner == spool.owner else "recovered"
            Ledger(self.stats, kind, f.owner).dropped("spool_full", f.count)
            self.say("spool_full", f"spool over its size cap: {f.count} event(s) of the oldest batch dropped")

    def park(self, batch: list[Event], ledger: Ledger, leased: SpoolFile | None, reason: str | None) -> bool:
        """Put a batch that cannot be sent now somewhere safe: back to its spool file, or into the spool.
        Failing both, drop it as ``reason`` (when given) and say so with False."""
        if not batch:
            self.done(leased)
            return True
        if leased is not None and self.spool is not None:
            if len(batch) == leased.count:
                # The cap may take it, or older files, on its way back. A disk error leaves it leased: it is
                # given back at the next claim (``_release_kept``).
                evicted = self.call(self.spool.release, leased)
                if evicted is None:
                    with self.lock:
                        self._unreleased.append(leased)
                self._count_evicted(evicted or [])
                self._on_disk()
                return True
            self.done(leased)  # part of it went (too old): write what is left as a new file
        if self.write(batch, ledger):
            return True
        if reason is not None:
            ledger.lost(reason, batch)  # "shutdown": the handler says it, in one line
        return False

    def done(self, leased: SpoolFile | None) -> None:
        if leased is not None and self.spool is not None:
            self.call(self.spool.done, leased)

    def claim(self, *, senders_idle: bool) -> tuple[list[Any] | None, Ledger, SpoolFile] | None:
        """The oldest spooled batch, leased, with its ledger (None: the spool is empty, or cannot be read now).
        An unreadable or invalid file is dropped and counted here: then the items are None. While the service
        is down, the batch is the probe: no other file is claimed until it ends (``probe_ended``).
        ``senders_idle``: no sender has a job (see ``_refresh_own_spooled``)."""
        spool = self.spool
        if spool is None:
            return None
        self._release_kept(spool)
        with self.lock:
            stored = self._stored
        claimed = self.call(spool.claim)
        if claimed is None:
            files = self.call(spool.has_files) if self.usable() else None  # None: unknown, unchanged
            if senders_idle:
                self._refresh_own_spooled()
            with self.lock:
                if files or self._unreleased:
                    self.backlog = True
                elif files is not None and self._stored == stored:  # nothing went to disk since the claim looked
                    self.backlog = False
                if not self.backlog:
                    self.outage = False
                else:
                    self.next_probe = time.monotonic() + 1.0
            return None
        leased, items, problem = claimed
        kind = "own" if leased.owner == spool.owner else "recovered"
        ledger = Ledger(self.stats, kind, leased.owner)
        if problem is not None:  # unreadable or invalid: it can never be sent
            ledger.dropped("error", leased.count)
            self.say("spool-bad-file", f"spool file {leased.path.name} dropped ({problem}): {leased.count} event(s)")
            return None, ledger, leased
        with self.lock:
            if self.outage:
                self.probing = True
        return items, ledger, leased

    def _release_kept(self, spool: Spool) -> None:
        """Give back the leased files a disk error kept (``park``); those that still fail wait for the next."""
        if not self._unreleased or not self.usable():
            return
        with self.lock:
            kept, self._unreleased = self._unreleased, []
        for leased in kept:
            evicted = self.call(spool.release, leased)
            if evicted is None:
                with self.lock:
                    self._unreleased.append(leased)
            else:
                self._count_evicted(evicted)

    def _refresh_own_spooled(self) -> None:
        """When the files this handler wrote are gone (another process delivered them), stop counting them as
        queued here: ``flush`` must not wait for what someone else already sent.

        Only while no sender has a job: a sender removes a file of ours before it counts the file's outcome (so
        that a flush which sees the batch counted finds the file gone), and a refresh in between would count it
        as gone and the sender count it again (``spooled`` below 0). Jobs are handed out by the batcher alone,
        which is the thread that claims, so none can start during the check; the next claim that finds the
        spool empty looks again."""
        spool = self.spool
        if spool is None or self.stats.spooled <= 0:
            return
        on_disk = self.call(spool.count_of_owner, spool.owner)
        if on_disk is not None and on_disk < self.stats.spooled:
            self.stats.forget_spooled(self.stats.spooled - on_disk)
