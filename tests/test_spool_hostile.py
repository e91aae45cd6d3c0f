"""Issue 22: the spool as a hostile local user or a stray file would find it (real files, real HTTP).

The spool reads only regular files of this user (opened with O_NOFOLLOW | O_NONBLOCK, checked with fstat),
never more than the largest legal batch; what it skips (a FIFO, a symlink, another user's file, a huge sparse
file) is counted in ``stats.spool_skipped``, said once on stderr, never read, never counted against the size
cap. A spool_dir owned by another user is refused with one line, and delivery goes on from memory. Each test
ends with the stats invariant and ``queued`` back at 0.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from ces_logging import CESHandler, HandlerStats, notice
from ces_logging.emulator import Emulator
from ces_logging.spool import Spool

from .conftest import PROJECT, ROOT, item, wait_for

NOBODY = 65534
as_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (CI runs as root)")


def settle(h: CESHandler, timeout: float = 30.0) -> HandlerStats:
    """Flush with a deadline, then the invariant and nothing left queued."""
    assert h.flush(timeout=timeout) or h.stats.dropped > 0
    s = h.stats
    assert s.sent + s.dropped + s.queued + s.folded == s.received, s
    assert s.queued == 0, s
    return s


def plant_batches(directory: Path, batches: int = 3, per: int = 100, name: str = "spooled") -> Spool:
    """Batches as a crashed process of this user left them (written by the spool itself)."""
    sp = Spool(directory, 50 * 2**20)
    t = int(time.time() * 1000) - 60_000  # distinct times: the service stores one event per name, source, time
    for b in range(batches):
        items = [item(name, t=t - b * per - i, content=f"{name} {b}-{i}") for i in range(per)]
        sp.write(json.dumps(items).encode(), per, "crashed1")
    return sp


def oldest_name(owner: str = "evil0001", count: int = 1) -> str:
    return f"0000000000001-000001-{owner}-{count}.batch"


def handler(emu: Emulator, spool_dir: Path, name: str, **kw: object) -> CESHandler:
    return CESHandler(project_id=PROJECT, endpoint=emu.url, event_name=name, spool_dir=str(spool_dir),
                      flush_interval=0.05, timeout=3, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_a_fifo_named_like_a_batch_blocks_nothing(
    emu: Emulator, isolated_logger: logging.Logger, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A FIFO with the oldest batch name: never opened for a blocking read; the 300 spooled events and 20
    fresh records are delivered; the FIFO is skipped, counted once and said once."""
    d = tmp_path / "spool"
    plant_batches(d)
    os.mkfifo(d / oldest_name())
    h = handler(emu, d, "fifo")
    isolated_logger.addHandler(h)
    for i in range(20):
        isolated_logger.error("fresh %d", i)
    s = settle(h, 20)
    assert wait_for(lambda: h.stats.recovered_sent == 300, timeout=20), h.stats
    assert emu.count(PROJECT) == 320
    s = h.stats
    assert s.sent == 20 and s.spool_skipped == 1, s
    assert (d / oldest_name()).exists()  # left where it is, not ours to remove
    err = capfd.readouterr().err
    assert err.count("skipped, not read") == 1 and "a FIFO" in err, err
    h.close()


def test_a_symlink_to_another_file_is_never_read(
    emu: Emulator, isolated_logger: logging.Logger, tmp_path: Path
) -> None:
    """A batch replaced by a symlink to a file of valid events (a secret, or planted alarms): not sent."""
    d = tmp_path / "spool"
    sp = plant_batches(d, batches=2)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps([item("stolen", content="the root password")]))
    os.chmod(secret, 0o600)
    victim = sp.files()[0].path
    victim.unlink()
    victim.symlink_to(secret)
    h = handler(emu, d, "symlink")
    isolated_logger.addHandler(h)
    isolated_logger.error("fresh")
    settle(h, 20)
    assert wait_for(lambda: h.stats.recovered_sent == 100, timeout=20), h.stats
    assert emu.events(PROJECT, "stolen") == []
    assert h.stats.spool_skipped == 1 and h.stats.sent == 1, h.stats
    assert secret.read_text().startswith("[")  # the target untouched
    h.close()


def test_a_symlink_swapped_in_after_the_scan_is_not_read(tmp_path: Path) -> None:
    """The race: the scan saw a regular file, a symlink took its place before the read. The open itself
    refuses to follow (O_NOFOLLOW): the file is put back, skipped, and the next batch is claimed."""
    d = tmp_path / "spool"
    sp = plant_batches(d, batches=2)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps([item("stolen")]))
    first = sp.files()[0].path
    real_files = sp.files

    def racing_files(include_leased: bool = False) -> list:  # type: ignore[type-arg]
        out = real_files(include_leased=include_leased)
        if first.exists() and not first.is_symlink():
            first.unlink()
            first.symlink_to(secret)
        return out

    sp.files = racing_files  # type: ignore[method-assign]
    claimed = sp.claim()
    assert claimed is not None
    _, items, problem = claimed
    assert problem is None and len(items) == 100 and all(i["event_name"] == "spooled" for i in items)
    assert first.is_symlink()  # put back under its name, never read
    assert [name for name, _ in sp.take_skipped()] == [first.name]


def test_a_huge_sparse_file_neither_evicts_nor_is_read(
    emu: Emulator, isolated_logger: logging.Logger, tmp_path: Path
) -> None:
    """A 1 GiB sparse file with the newest name: the size cap does not count it (the 300 real events stay and
    are delivered), and it is never read (larger than any legal batch)."""
    d = tmp_path / "spool"
    plant_batches(d)
    with open(d / "9999999999999-999999-evil0002-100.batch", "wb") as f:
        f.truncate(1 << 30)
    h = handler(emu, d, "sparse", spool_max_bytes=2 * 2**20)
    isolated_logger.addHandler(h)
    emu.add_fault(seconds=600.0, status=503)
    for i in range(50):  # writes to the spool run the size cap
        isolated_logger.error("during %d", i)
    assert wait_for(lambda: h.stats.spooled == 50, timeout=20), h.stats
    emu.clear_faults()
    settle(h, 30)
    assert wait_for(lambda: h.stats.recovered_sent == 300, timeout=20), h.stats
    s = h.stats
    assert s.sent == 50 and not s.dropped_by_reason and s.recovered_dropped == {} and s.spool_skipped == 1, s
    assert emu.count(PROJECT) == 350
    h.close()


def test_a_directory_swapped_in_after_construction_is_not_used(
    emu: Emulator, isolated_logger: logging.Logger, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The spool directory renamed away and another put in its place (with a batch of planted events): the
    spool stops (one line), the planted batch is never read, records are delivered from memory."""
    d = tmp_path / "spool"
    h = handler(emu, d, "swapped")
    isolated_logger.addHandler(h)
    d.rename(tmp_path / "moved")
    plant_batches(d, batches=1, name="planted")
    emu.add_fault(count=1, status=503)  # a failed send would go to the spool: it must not
    for i in range(10):
        isolated_logger.error("memory %d", i)
    s = settle(h, 20)
    assert s.sent == 10 and s.spooled == 0, s
    assert emu.events(PROJECT, "planted") == []
    assert "was replaced" in capfd.readouterr().err
    h.close()


@as_root
def test_files_of_another_user_are_skipped(emu: Emulator, isolated_logger: logging.Logger, tmp_path: Path) -> None:
    """A batch file owned by another user (with valid events) is skipped; this user's are delivered."""
    d = tmp_path / "spool"
    sp = plant_batches(d, batches=2)
    planted = d / oldest_name("evil0003", 1)
    planted.write_text(json.dumps([item("planted", event_level="Critical")]))
    os.chown(planted, NOBODY, NOBODY)
    assert len(sp.files()) == 2
    h = handler(emu, d, "foreign")
    isolated_logger.addHandler(h)
    isolated_logger.error("fresh")
    settle(h, 20)
    assert wait_for(lambda: h.stats.recovered_sent == 200, timeout=20), h.stats
    assert emu.events(PROJECT, "planted") == [] and h.stats.spool_skipped == 1, h.stats
    h.close()


@as_root
@pytest.mark.parametrize("which", ["spool_dir", "subdirectory"])
def test_a_directory_owned_by_another_user_is_refused(
    emu: Emulator,
    isolated_logger: logging.Logger,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    """spool_dir owned by another user (0755), or the private subdirectory made by another user inside a
    sticky /tmp-like directory: refused with one line on stderr, records delivered from memory, and nothing
    planted there is read."""
    monkeypatch.setattr(notice, "_last", {})  # the line is said once a minute per process: this one's own
    d = tmp_path / "shared"
    d.mkdir()
    if which == "spool_dir":
        os.chown(d, NOBODY, NOBODY)
        os.chmod(d, 0o755)
        where = d
    else:
        os.chmod(d, 0o1777)
        where = d / f"ces_logging-{os.getuid()}"
        where.mkdir(mode=0o700)
        os.chown(where, NOBODY, NOBODY)
    planted = where / oldest_name()
    planted.write_text(json.dumps([item("planted", event_level="Critical")]))
    h = handler(emu, d, "refused")
    assert h.spool is None
    isolated_logger.addHandler(h)
    emu.add_fault(count=1, status=503)
    for i in range(5):
        isolated_logger.error("memory %d", i)
    s = settle(h, 20)
    assert s.sent == 5 and s.spooled == 0, s
    assert emu.events(PROJECT, "planted") == []
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "unusable" in line]
    assert len(lines) == 1 and ("owned by uid" in lines[0] or "private directory" in lines[0]), err
    h.close()


@as_root
def test_another_user_through_setpriv(emu: Emulator) -> None:
    """A real second user: a process running as nobody (setpriv) is given a world-writable spool_dir owned by
    a third user, with a batch planted in it. It refuses the directory (one line), delivers from memory, and
    the planted batch is not sent."""
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv")
    base = Path(tempfile.mkdtemp(prefix="ces-i22-"))  # pytest's tmp_path is not reachable by another user
    try:
        os.chmod(base, 0o755)
        d = base / "shared"
        d.mkdir()
        os.chown(d, NOBODY - 1, NOBODY - 1)
        os.chmod(d, 0o777)
        planted = d / oldest_name()
        planted.write_text(json.dumps([item("planted", event_level="Critical")]))
        os.chown(planted, NOBODY - 1, NOBODY - 1)
        os.chmod(planted, 0o644)
        code = textwrap.dedent(f"""
            import logging, os, ces_logging
            assert os.geteuid() == {NOBODY}
            h = ces_logging.CESHandler(project_id="{PROJECT}", endpoint="{emu.url}", event_name="nobody",
                                       spool_dir="{d}", flush_interval=0.05, timeout=3)
            log = logging.getLogger("x"); log.propagate = False; log.addHandler(h)
            for i in range(7):
                log.error("as nobody %d", i)
            assert h.flush(timeout=20)
            s = h.stats
            assert s.sent == 7 and s.queued == 0 and s.sent + s.dropped + s.queued + s.folded == s.received, s
            assert h.spool is None
            h.close()
            print("OK")
        """)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_"))}
        env.update(PYTHONPATH=str(ROOT), HOME=str(base), HUAWEICLOUD_SDK_CREDENTIALS_FILE=str(base / "none"))
        setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable]
        probe = subprocess.run(
            [*setpriv, "-c", "import ces_logging"], capture_output=True, timeout=60, env=env, cwd="/"
        )
        if probe.returncode != 0:
            pytest.skip(f"this interpreter or the project cannot be read by another user: {probe.stderr[-300:]!r}")
        p = subprocess.run([*setpriv, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd="/")
        assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]
        lines = [line for line in p.stderr.splitlines() if "spool" in line]
        assert len(lines) == 1 and "owned by uid" in lines[0], p.stderr
        assert emu.events(PROJECT, "planted") == []
        assert wait_for(lambda: emu.count(PROJECT) == 7, timeout=5)
        assert planted.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
