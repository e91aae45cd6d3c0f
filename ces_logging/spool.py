"""A durable on-disk spool for batches that cannot be delivered now.

One file per batch, written atomically (a temporary file renamed into place), holding the batch's items as
they will be sent: their times were assigned once, so a batch sent twice (a crash between the send and the
delete) stores each event once. A sender takes a file by renaming it to a lease that names its process, so two
processes never send the same file; a lease whose process is gone is taken back.

File names sort oldest first: ``{ms:013d}-{seq:06d}-{owner}-{n}.batch`` where ``owner`` says which handler
instance wrote it (so its counters can tell its own records from those a crashed process left) and ``n`` is the
number of items (so the size cap can count what it drops without reading the file).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUFFIX = ".batch"
LEASE = ".lease-"


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    owner: str
    count: int
    size: int


def _parse(path: Path) -> tuple[str, int] | None:
    """(owner, count) from a spool file's name; None for names that are not ours."""
    name = path.name.split(LEASE, 1)[0]
    if not name.endswith(SUFFIX):
        return None
    parts = name[: -len(SUFFIX)].split("-")
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    return parts[2], int(parts[3])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    """Batches on disk, oldest first. Every method raises ``OSError`` on a disk problem; the worker turns that
    into a warning and keeps going from memory."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.owner = secrets.token_hex(4)  # this handler instance
        self._seq = 0
        self._lock = threading.Lock()
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.dir, 0o700)

    def __repr__(self) -> str:
        return f"Spool({str(self.dir)!r}, max_bytes={self.max_bytes})"

    def renew_owner(self) -> None:
        """After fork: the child writes files of its own."""
        self.owner = secrets.token_hex(4)
        self._lock = threading.Lock()

    # --- writing -----------------------------------------------------------------------------------------

    def write(self, items: list[dict[str, Any]], owner: str | None = None) -> list[SpoolFile]:
        """Store a batch (as ``owner``'s, by default this instance's); returns the files the size cap pushed
        out to make room (their items are lost)."""
        data = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with self._lock:
            self._seq += 1
            who = owner or self.owner
            name = f"{int(time.time() * 1000):013d}-{self._seq:06d}-{who}-{len(items)}{SUFFIX}"
        evicted = self._make_room(len(data))
        tmp = self.dir / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / name)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return evicted

    def _make_room(self, incoming: int) -> list[SpoolFile]:
        files = self.files(include_leased=False)
        total = sum(f.size for f in files)
        evicted = []
        for f in files:  # oldest first
            if total + incoming <= self.max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):  # another process may have taken it
                f.path.unlink()
                evicted.append(f)
                total -= f.size
        return evicted

    # --- reading -----------------------------------------------------------------------------------------

    def files(self, *, include_leased: bool = False) -> list[SpoolFile]:
        out = []
        for p in self.dir.iterdir():
            if LEASE in p.name and not include_leased:
                continue
            parsed = _parse(p)
            if parsed is None:
                continue
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                continue
            out.append(SpoolFile(p, parsed[0], parsed[1], size))
        out.sort(key=lambda f: f.path.name)
        return out

    def pending(self) -> int:
        """How many items wait on disk (leased ones included)."""
        try:
            return sum(f.count for f in self.files(include_leased=True))
        except OSError:
            return 0

    def reclaim_stale_leases(self) -> int:
        """Leases of processes that are gone go back to the queue."""
        n = 0
        for p in self.dir.iterdir():
            if LEASE not in p.name:
                continue
            base, _, holder = p.name.partition(LEASE)
            pid = holder.split("-")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(p, self.dir / base)
                    n += 1
        return n

    def claim(self) -> tuple[SpoolFile, list[dict[str, Any]]] | None:
        """Lease the oldest batch (a rename, atomic: only one process gets it) and read it."""
        for f in self.files():
            leased = f.path.with_name(f"{f.path.name}{LEASE}{os.getpid()}-{self.owner}")
            try:
                os.replace(f.path, leased)  # atomic; fails if another process renamed it first
            except FileNotFoundError:
                continue
            try:
                items = json.loads(leased.read_bytes())
            except (OSError, ValueError):
                items = None
            lf = SpoolFile(leased, f.owner, f.count, f.size)
            if not isinstance(items, list):  # a torn or foreign file: it cannot be sent
                self.done(lf)
                return lf, []
            return lf, items
        return None

    def done(self, f: SpoolFile) -> None:
        with contextlib.suppress(FileNotFoundError):
            f.path.unlink()

    def release(self, f: SpoolFile) -> None:
        """Give a leased batch back (its send failed; it waits for the next try)."""
        base = f.path.name.split(LEASE, 1)[0]
        with contextlib.suppress(FileNotFoundError):
            os.replace(f.path, f.path.with_name(base))
