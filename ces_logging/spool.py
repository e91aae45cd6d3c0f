"""A durable on-disk spool for batches that cannot be delivered now.

One file per batch, written atomically (a temporary file renamed into place), holding the batch's items as
they will be sent: their times were assigned once, so a batch sent twice (a crash between the send and the
delete) stores each event once. A sender takes a file by renaming it to a lease, so two processes never send
the same file. A lease names its holder by pid *and* a random token of the holding process, and its age is its
modification time (set when taken): it is taken back when the pid is gone, when the pid is this process's but
the token is not (a container restarted with the same pid, often 1), or when it is older than
``LEASE_MAX_AGE_S`` (a pid reused by some other program).

File names sort oldest first: ``{ms:013d}-{seq:06d}-{owner}-{n}.batch`` where ``owner`` says which handler
instance wrote it (so its counters can tell its own records from those a crashed process left) and ``n`` is the
number of items (so the size cap can count what it drops without reading the file).

The directory: one that does not exist is created private (0700). An existing one is used as it is (its mode is
the user's), unless others may write to it (``/tmp``, say): then a private subdirectory ``ces_logging-{uid}``
inside it holds the files, so that nobody else can plant or remove batches. A directory owned by another user
(not root) is refused (``PermissionError``): its owner could remove our batches, plant events, or swap our
subdirectory for one of its own. The directory's identity (device, inode) is checked again before each scan.

What is read: only regular files of this user with one link, at most ``MAX_FILE_BYTES`` (the largest body the
API takes: no legal batch is larger). Each is opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked again with
``fstat`` after opening, so a symlink (to a secret file), a FIFO (a read that blocks for ever), a device, a
hard link or a huge sparse file put under a batch's name is never read, never counted against the size cap
(which would evict real batches) and never evicted by it: it is *skipped*, left where it is, and reported once
through ``take_skipped``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pathlib import Path

from . import forks
from .events import MAX_BODY_BYTES, MAX_EVENTS_PER_REQUEST

SUFFIX: Final = ".batch"
LEASE: Final = ".lease-"
LEASE_MAX_AGE_S: Final = 600.0  # no send holds a lease this long (requests time out far sooner)
MAX_FILE_BYTES: Final = MAX_BODY_BYTES  # a batch file is a request's body: none larger can be legal
MAX_SKIPPED: Final = 1000  # names remembered as skipped (each is reported once)
RESCAN_S: Final = 1.0  # a write far below the cap trusts the last scan's total this long (see ``write``)
_OPEN_FLAGS: Final = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


def _token() -> str:
    """Eight random hex digits (what ``secrets.token_hex(4)`` gives, without importing ``secrets``, which loads
    hashlib and OpenSSL at import)."""
    return os.urandom(4).hex()


_process_token = _token()  # this process (renewed after fork): a lease's holder beside its pid


class SpoolFile:
    """One batch file: its path, the handler instance that wrote it, its event count and its size."""

    __slots__ = ("count", "owner", "path", "size")

    def __init__(self, path: Path, owner: str, count: int, size: int) -> None:
        self.path = path
        self.owner = owner
        self.count = count
        self.size = size

    def __repr__(self) -> str:
        return f"SpoolFile({self.path.name!r}, count={self.count}, size={self.size})"


def _parse(name: str) -> tuple[str, int] | None:
    """(owner, count) from a spool file's name; None for names that are not ours."""
    name = name.split(LEASE, 1)[0]
    if not name.endswith(SUFFIX):
        return None
    parts = name[: -len(SUFFIX)].split("-")
    if len(parts) != 4 or not parts[3].isdigit() or not 1 <= int(parts[3]) <= MAX_EVENTS_PER_REQUEST:
        return None
    return parts[2], int(parts[3])


def _this_user() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def foreign(st: os.stat_result) -> str | None:
    """Why a file is not a batch this user wrote (from its ``lstat``/``fstat``), or None when it may be one."""
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a file"
        return kind
    uid = _this_user()
    if uid is not None and st.st_uid != uid:
        return f"owned by uid {st.st_uid}"
    if st.st_nlink != 1:
        return "a hard link"
    if st.st_size > MAX_FILE_BYTES:
        return f"{st.st_size} bytes, more than any batch"
    return None


def _check_owner(path: Path, st: os.stat_result) -> None:
    """A directory owned by another user (root aside) is refused: its owner could remove or plant files."""
    uid = _this_user()
    if uid is not None and st.st_uid not in (uid, 0):
        raise PermissionError(
            f"{path} is owned by uid {st.st_uid}, not by this user ({uid}) or root: refused (its owner could "
            "remove our batches or plant events)"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def check_items(items: object) -> str | None:
    """What is wrong with a spool file's content, or None when it is a batch this package wrote."""
    if not isinstance(items, list):
        return "not a list of events"
    if not items:
        return "empty"
    for it in items:
        if not (
            isinstance(it, dict)
            and isinstance(it.get("event_name"), str)
            and isinstance(it.get("event_source"), str)
            and isinstance(it.get("time"), int)
            and not isinstance(it.get("time"), bool)
            and isinstance(it.get("detail"), dict)
        ):
            return "an item is not an event"
    return None


def private_dir(directory: Path) -> Path:
    """Where the files go (see the module docstring); creates what is missing. Raises ``OSError``."""
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{directory} is not a directory")
    _check_owner(directory, st)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        sub = directory / f"ces_logging-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        sub.mkdir(mode=0o700, exist_ok=True)
        sst = sub.lstat()
        if not stat.S_ISDIR(sst.st_mode) or (hasattr(os, "getuid") and sst.st_uid != os.getuid()):
            raise PermissionError(f"{sub} exists and is not this user's private directory")
        if sst.st_mode & 0o077:
            os.chmod(sub, 0o700)  # ours: it is only ever made by this package
        return sub
    return directory


class Spool:
    """Batches on disk, oldest first. Every method raises ``OSError`` on a disk problem; the worker turns that
    into a line and keeps going from memory, reading what is on disk all the same."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        from pathlib import Path  # only a handler with a spool needs it: not every process that imports us

        self.requested = Path(directory)
        self.max_bytes = max_bytes
        self.owner = _token()  # this handler instance
        self._seq = 0
        self._lock = threading.Lock()
        self.dir = private_dir(self.requested)
        st = self.dir.stat()
        self._identity = (st.st_dev, st.st_ino)
        self._skipped: dict[str, str] = {}  # name -> why, for every name skipped so far (bounded)
        self._unreported: list[tuple[str, str]] = []
        self._skip_lock = threading.Lock()  # not ``_lock``: a scan runs under it (``write``)
        self._total = 0  # bytes on disk at the last scan (``_make_room``), plus this instance's writes since
        self._scanned = -RESCAN_S  # monotonic time of that scan

    def __repr__(self) -> str:
        return f"Spool({str(self.dir)!r}, max_bytes={self.max_bytes})"

    def _check_dir(self) -> None:
        """The directory is still the one checked at construction: never one put in its place (``OSError``)."""
        st = self.dir.stat()
        if (st.st_dev, st.st_ino) != self._identity or not stat.S_ISDIR(st.st_mode):
            raise PermissionError(f"{self.dir} was replaced by another directory or file: not used")
        _check_owner(self.dir, st)

    def _skip(self, name: str, why: str) -> None:
        with self._skip_lock:
            if name in self._skipped or len(self._skipped) >= MAX_SKIPPED:
                return
            self._skipped[name] = why
            self._unreported.append((name, why))

    def take_skipped(self) -> list[tuple[str, str]]:
        """Files skipped since the last call, as (name, why): each name once."""
        with self._skip_lock:
            out, self._unreported = self._unreported, []
        return out

    def renew_owner(self) -> None:
        """After fork: the child writes files of its own."""
        self.owner = _token()
        self._lock = threading.Lock()
        self._skip_lock = threading.Lock()

    # --- writing -----------------------------------------------------------------------------------------

    def write(self, data: bytes, count: int, owner: str | None = None) -> list[SpoolFile]:
        """Store a batch of ``count`` events, ``data`` being the JSON array a request would carry
        (``mapping.encode_batch``), as ``owner``'s, by default this instance's; returns the files the size cap
        pushed out to make room (their items are lost)."""
        with self._lock:
            self._seq += 1
            who = owner or self.owner
            name = f"{int(time.time() * 1000):013d}-{self._seq:06d}-{who}-{count}{SUFFIX}"
        tmp = self.dir / f".tmp-{os.getpid()}-{_token()}"
        with self._lock:  # room and write together: two threads must not both take the same room
            # A burst spilling to disk writes a file every few ms: scanning the directory for each would cost
            # O(files) a write. Far below the cap, the last scan's total plus what was written since is used
            # (another process's writes are seen at the next scan, within ``RESCAN_S``).
            now = time.monotonic()
            if self._total + len(data) <= self.max_bytes // 2 and now - self._scanned < RESCAN_S:
                evicted = []
            else:
                evicted = self._make_room(len(data))
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.dir / name)
                self._total += len(data)
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        return evicted

    def _make_room(self, incoming: int, before: str | None = None) -> list[SpoolFile]:
        """Remove the oldest files until what is on disk plus ``incoming`` fits the cap (only those older than
        the file named ``before``, when given). Leased files count (a failed send brings them back) but are
        not removed (they are being sent): while one is out, a write may go over the cap by it, and its
        ``release`` restores the cap."""
        files = self.files(include_leased=True)
        total = sum(f.size for f in files)
        self._total, self._scanned = total, time.monotonic()
        evicted = []
        for f in files:  # oldest first
            if total + incoming <= self.max_bytes or (before is not None and f.path.name >= before):
                break
            if LEASE in f.path.name:
                continue
            with contextlib.suppress(FileNotFoundError):  # another process may have taken it
                f.path.unlink()
                evicted.append(f)
                total -= f.size
        self._total = total
        return evicted

    # --- reading -----------------------------------------------------------------------------------------

    def files(self, *, include_leased: bool = False) -> list[SpoolFile]:
        """The batch files, oldest first: only regular files of this user (``foreign``); others are skipped."""
        self._check_dir()
        out = []
        with os.scandir(self.dir) as it:
            for entry in it:
                name = entry.name
                if LEASE in name and not include_leased:
                    continue
                parsed = _parse(name)
                if parsed is None:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                why = foreign(st)
                if why is not None:
                    self._skip(name, why)
                    continue
                out.append(SpoolFile(self.dir / name, parsed[0], parsed[1], st.st_size))
        out.sort(key=lambda f: f.path.name)
        return out

    def pending(self) -> int:
        """How many items wait on disk (leased ones included)."""
        try:
            return sum(f.count for f in self.files(include_leased=True))
        except OSError:
            return 0

    def has_files(self) -> bool:
        """Batches not leased by anyone (or leases that are stale and can be taken back)."""
        self.reclaim_stale_leases()
        return bool(self.files())

    def count_of_owner(self, owner: str) -> int:
        """Items of ``owner``'s files still on disk, leased or not."""
        return sum(f.count for f in self.files(include_leased=True) if f.owner == owner)

    def _stale(self, holder: str, mtime: float) -> bool:
        pid_text, _, token = holder.partition("-")
        if not pid_text.isdigit():
            return time.time() - mtime > LEASE_MAX_AGE_S
        pid = int(pid_text)
        if not _pid_alive(pid):
            return True
        if pid == os.getpid():
            return token != _process_token  # an earlier process with our pid (a restarted container)
        return time.time() - mtime > LEASE_MAX_AGE_S

    def reclaim_stale_leases(self) -> int:
        """Leases whose holder is gone (or was an earlier process with this pid, or is too old) go back."""
        n = 0
        for f in self.files(include_leased=True):
            p = f.path
            if LEASE not in p.name:
                continue
            base, _, holder = p.name.partition(LEASE)
            try:
                mtime = p.lstat().st_mtime
            except FileNotFoundError:
                continue
            if self._stale(holder, mtime):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(p, self.dir / base)
                    n += 1
        return n

    def claim(self) -> tuple[SpoolFile, list[dict[str, Any]], str | None] | None:
        """Lease the oldest batch (a rename, atomic: only one process gets it) and read it: (file, items,
        problem). A file that cannot be read or is not a batch comes with its problem and is already deleted:
        the caller counts its items as dropped and goes on with the next."""
        for f in self.files():
            leased = f.path.with_name(f"{f.path.name}{LEASE}{os.getpid()}-{_process_token}")
            try:
                os.replace(f.path, leased)  # atomic; fails if another process renamed it first
            except FileNotFoundError:
                continue
            lf = SpoolFile(leased, f.owner, f.count, f.size)
            items: Any = None
            try:
                items = json.loads(self._read(leased))
                problem = check_items(items)
            except _Foreign as e:  # swapped in between the scan and the rename: not ours, put back, skipped
                with contextlib.suppress(OSError):
                    os.replace(leased, f.path)
                self._skip(f.path.name, str(e))
                continue
            except (OSError, ValueError, RecursionError) as e:
                problem = f"unreadable: {type(e).__name__}"
            if problem is not None:
                self.done(lf)
                return lf, [], problem
            return lf, items, None
        return None

    @staticmethod
    def _read(path: Path) -> bytes:
        """A leased file's bytes: opened without following a symlink and without blocking on a FIFO, then
        checked by ``fstat`` (what was opened is what is read), at most ``MAX_FILE_BYTES``."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENXIO, errno.EMLINK):  # a symlink; a FIFO's other end absent
                raise _Foreign("a symlink" if e.errno != errno.ENXIO else "a FIFO") from None
            raise
        try:
            why = foreign(os.fstat(fd))
            if why is not None:
                raise _Foreign(why)
            with contextlib.suppress(OSError):
                os.utime(fd)  # the lease's age starts now
            parts = []
            total = 0
            while total <= MAX_FILE_BYTES:
                chunk = os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - total))
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
            if total > MAX_FILE_BYTES:
                raise _Foreign("larger than any batch")
            return b"".join(parts)
        finally:
            os.close(fd)

    def done(self, f: SpoolFile) -> None:
        with contextlib.suppress(FileNotFoundError):
            f.path.unlink()

    def release(self, f: SpoolFile) -> list[SpoolFile]:
        """Give a leased batch back (its send failed; it waits for the next try), within the cap: files older
        than it go first to make room, and if it still does not fit (newer batches were written while it was
        out), it goes itself, the oldest left. Returns what went (the caller counts it), ``f`` included."""
        base = f.path.name.split(LEASE, 1)[0]
        with self._lock:
            evicted = self._make_room(0, before=base)
            total = sum(g.size for g in self.files(include_leased=True))
            if total > self.max_bytes:
                self.done(f)
                return [*evicted, f]
            with contextlib.suppress(FileNotFoundError):
                os.replace(f.path, f.path.with_name(base))
        return evicted


class _Foreign(Exception):
    """A file under a batch's name that this user did not write as one (its text says why)."""


def reset_after_fork() -> None:
    """A new process holds leases under a token of its own (a lease's holder is its pid and this token)."""
    global _process_token
    _process_token = _token()


forks.on_new_process(reset_after_fork)
