"""``make bench``: the numbers a user asks for, each beside its target, the floor (NullHandler) and a peer
(watchtower).

Servers run on 127.0.0.1 in their own processes: the CES emulator (a fresh one for every row that counts what
it stored), and moto's server for watchtower. A far link is a delay proxy in this process in front of an
emulator. Every row is measured in a child process of its own, so that one measurement's threads and memory do
not colour another's, and killed after a deadline (the row then says it was not measured; the run goes on).
Caller-cost rounds are interleaved and per-round ratios taken; CPU is a CPU clock
(``time.process_time`` of the client process; yappi's CPU clock for the profile), never wall time.

Rows run against whatever the package does now: an option the handler does not take yet (``storm_control``)
skips its row with a note, and a row that fails says so and the run goes on. Prints the tables and writes
benchmarks/RESULTS.md. Nothing here is asserted: speed lives here, not in the tests.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import logging.handlers
import os
import platform
import queue
import re
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = "benchproject"
AK, SK = "BENCHAK", "bench-secret-key"
REGION = "us-east-1"
MSG = "user %s failed to log in from %s"
IP = "203.0.113.7"

# Targets (issue 12; caller-cost rows of issues 13/16). Beside each row in RESULTS.md.
T_CALLER = 1.25  # CESHandler's logger.warning / NullHandler's: the caller's CPU clock, worker delivering (issue 25)
T_IMPORT = 3.0  # import ces_logging / import logging, json, threading (issue 25)
T_BURST_MIB = 40.0  # RSS growth for a 50,000-record burst, all stored
T_HEAVY_MIB = 64.0  # RSS growth for 20,000 heavy records with the service down
T_FAR_EPS, G_FAR_EPS = 4000.0, 6000.0  # events/s over +50 ms: target, goal
T_CPU_RATIO = 0.6  # CPU per delivered event / watchtower's (median of alternated pairs; issue 25)


# --- servers ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator(*extra: str) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "ces_logging", "emulator", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = p.stdout.readline()  # type: ignore[union-attr]
    m = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not m:
        p.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return p, m.group(0)


def emulator_admin(url: str, method: str, route: str, body: Any = None) -> Any:
    """An emulator admin route; the emulator runs with --ak/--sk, so its admin routes want a signature too."""
    import requests

    from ces_logging._service.auth import AKSKAuth

    data = None if body is None else json.dumps(body).encode()
    r = requests.request(
        method,
        f"{url}/_emulator/{route}",
        data=data,
        headers={"Content-Type": "application/json"} if data is not None else {},
        auth=AKSKAuth(AK, SK, project_id=PROJECT),
        timeout=10,
    )
    r.raise_for_status()
    return r.json() if r.content else None


class Emulator:
    """An emulator process for one row (AK/SK signing on), with its admin routes."""

    def __enter__(self) -> Emulator:
        self.proc, self.url = start_emulator("--ak", AK, "--sk", SK)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def admin(self, method: str, route: str, body: Any = None) -> Any:
        return emulator_admin(self.url, method, route, body)

    def stats(self) -> dict[str, int]:
        """``events_in_store``, ``events_stored`` (new), ``events_duplicate`` (a record sent again), ..."""
        return {k: int(v) for k, v in self.admin("GET", "stats").items()}

    def stored(self) -> int:
        return settled(lambda: self.stats()["events_in_store"])


def start_moto() -> tuple[subprocess.Popen[bytes], str] | None:
    try:
        import moto  # noqa: F401
        import watchtower  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, url
        except OSError:
            time.sleep(0.1)
    p.kill()
    return None


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that holds every chunk of the upstream's answers ``delay`` seconds before
    passing it on: each request/response round trip gets ``delay`` longer, as over a far link.

    It knows nothing of HTTP, so keep-alive, pipelining and any number of concurrent connections stay correct:
    each client connection gets its own upstream connection and three threads (requests go straight through;
    answers are read as they come, stamped, and written in order once their time is due). ``gate`` cleared
    holds requests (not answers) back, so a backlog can pile up behind it and then be released at once."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.connections = 0
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        with self._lock:
            socks, self._socks = [self._listener, *self._socks], []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while True:  # ends when close() closes the listener
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self.upstream, timeout=30)
            except OSError:
                return
            upstream.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._socks += [client, upstream]
                self.connections += 1
            answers: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
            for target, args in (
                (self._requests, (client, upstream)),
                (self._read_answers, (upstream, answers)),
                (self._write_answers, (answers, client, upstream)),
            ):
                threading.Thread(target=target, args=args, daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):  # ends at the client's EOF or a closed socket
                self.gate.wait(60)
                upstream.sendall(data)
            upstream.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _read_answers(self, upstream: socket.socket, answers: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        try:
            while data := upstream.recv(65536):
                answers.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        finally:
            answers.put((time.monotonic() + self.delay, b""))  # the writer always gets its end

    def _write_answers(
        self, answers: queue.SimpleQueue[tuple[float, bytes]], client: socket.socket, upstream: socket.socket
    ) -> None:
        try:
            while True:  # ends at the reader's end marker
                due, data = answers.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


# --- watchtower ------------------------------------------------------------------------------------------------


def aws_env(moto_url: str) -> None:
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": moto_url,
        }
    )


def watchtower_handler(moto_url: str, stream: str) -> logging.Handler:
    import boto3
    import watchtower

    aws_env(moto_url)
    client = boto3.client("logs", region_name=REGION, endpoint_url=moto_url)
    return watchtower.CloudWatchLogHandler(log_group_name="bench", log_stream_name=stream, boto3_client=client)


def watchtower_stored(moto_url: str, stream: str) -> int:
    import boto3

    aws_env(moto_url)
    client = boto3.client("logs", region_name=REGION, endpoint_url=moto_url)
    n, token = 0, None
    for _ in range(1000):
        kw: dict[str, Any] = {"logGroupName": "bench", "logStreamName": stream, "startFromHead": True}
        if token:
            kw["nextToken"] = token
        r = client.get_log_events(**kw)
        n += len(r["events"])
        if not r["events"] or r.get("nextForwardToken") == token:
            break
        token = r.get("nextForwardToken")
    return n


def settled(count: Callable[[], int], tries: int = 20) -> int:
    """A server's count once it stops growing (a server may still be storing the last batch)."""
    last = -1
    for _ in range(tries):
        n = int(count())
        if n == last:
            return n
        last = n
        time.sleep(0.2)
    return last


# --- 1. caller cost ----------------------------------------------------------------------------------------------


def ces_handler(url: str, **kw: Any) -> logging.Handler:
    """A CESHandler for the emulator. ``queue_size`` is a hint (room for a run's records, so that no row but
    the burst measures drops): a handler that no longer takes it gets its defaults."""
    from ces_logging import CESHandler

    try:
        return CESHandler(project_id=PROJECT, endpoint=url, ak=AK, sk=SK, **kw)
    except TypeError:
        if "queue_size" not in kw:
            raise
        kw.pop("queue_size")
        return CESHandler(project_id=PROJECT, endpoint=url, ak=AK, sk=SK, **kw)


ASCTIME_FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class FormatOnly(logging.Handler):
    """Formats each record and keeps nothing: what a formatter costs at the call, whoever calls it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


class KeepOnly(logging.Handler):
    """Keeps what CESHandler keeps of a plain record (the message formatted, a tuple, a deque append) and does
    nothing else: no check, no bound, no worker. What any handler that keeps the message costs at the call, the
    floor under CESHandler's row."""

    def __init__(self) -> None:
        super().__init__()
        self.items: collections.deque[tuple[Any, ...]] = collections.deque()

    def handle(self, record: logging.LogRecord) -> bool:
        d = record.__dict__
        self.items.append((d["created"], d["levelno"], d["name"], d["msg"] % d["args"], None, False, None))
        return True


DELIVERING = ("CESHandler", "stdlib QueueHandler", "watchtower")  # handlers with a thread that delivers


def _spread(xs: list[float]) -> tuple[float, float]:
    """The 10th and 90th percentiles: the spread of a row's rounds without its single worst and best."""
    if len(xs) < 3:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return q[0], q[-1]


def caller_cost(emu_url: str, moto_url: str | None, rounds: int = 21, n: int = 2000) -> dict[str, Any]:
    """µs per ``logger.warning`` call for each handler, rounds interleaved, with the worker delivering to the
    live service during the timed loop, as it is in an app: before a delivering handler's timed loop, ``n``
    records are logged untimed, so its worker has a backlog to send through the whole loop (the loop's own
    records join it); after its round the handler is flushed, so the next handler's round starts quiet. The
    floor (NullHandler) has nothing to deliver.

    Two clocks per loop. The calling thread's CPU clock (``time.thread_time``): what the call costs the thread
    that logs, the figure with the target. Wall time: on a GIL interpreter it also holds the worker's CPU for
    the records it delivers meanwhile (row 5 measures that CPU per event), and the machine's other load; shown
    beside it. Each ratio is per round against the floor measured in the same round; median and spread (10th
    to 90th percentile of the rounds)."""
    from ces_logging.errors import ConfigError

    handlers: dict[str, logging.Handler] = {"NullHandler (floor)": logging.NullHandler()}
    notes: dict[str, str] = {}
    fmt_floor = FormatOnly()
    fmt_floor.setFormatter(logging.Formatter(ASCTIME_FMT))
    handlers["a handler that only formats, Formatter with asctime (reference)"] = fmt_floor
    handlers["a handler that only keeps the message: format, tuple, append (reference)"] = KeepOnly()
    handlers["CESHandler, defaults"] = ces_handler(emu_url)
    fmt = ces_handler(emu_url)
    fmt.setFormatter(logging.Formatter(ASCTIME_FMT))
    handlers["CESHandler + Formatter with asctime"] = fmt
    handlers["CESHandler, json_content=True"] = ces_handler(emu_url, json_content=True)
    storm = 'CESHandler, storm_control="10/5s"'
    try:
        handlers[storm] = ces_handler(emu_url, storm_control="10/5s")
    except (TypeError, ConfigError) as e:
        notes[storm] = f"skipped: the handler does not take it yet ({type(e).__name__})"
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(q, logging.NullHandler())
    listener.start()
    handlers["stdlib QueueHandler (+ listener to NullHandler)"] = logging.handlers.QueueHandler(q)
    if moto_url:
        handlers["watchtower, delivering to moto"] = watchtower_handler(moto_url, "caller")
    loggers = {}
    for name, h in handlers.items():
        lg = logging.getLogger(f"bench.caller.{len(loggers)}")
        lg.propagate = False
        lg.setLevel(logging.INFO)
        lg.addHandler(h)
        loggers[name] = lg
        if name.startswith(DELIVERING):  # the thread, the connection (and watchtower's stream) exist already
            lg.warning("warm-up")
            _flush(h)
    cpu: dict[str, list[float]] = {k: [] for k in handlers}
    wall: dict[str, list[float]] = {k: [] for k in handlers}
    for _ in range(rounds):
        for name, lg in loggers.items():
            warning = lg.warning
            if name.startswith(DELIVERING):
                for i in range(n):  # the backlog the worker delivers while the loop below runs
                    warning(MSG, i, IP)
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            for i in range(n):
                warning(MSG, i, IP)
            c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
            cpu[name].append((c1 - c0) / n / 1000)
            wall[name].append((t1 - t0) / n / 1000)
            _flush(handlers[name])
    listener.stop()
    stats = {}
    for name, h in handlers.items():
        if name.startswith("CESHandler"):
            s = h.stats  # type: ignore[attr-defined]
            stats[name] = dict(s.dropped_by_reason)
        h.close()
    out: dict[str, Any] = {"rounds": rounds, "n": n, "notes": notes, "drops": stats}
    for clock, samples in (("cpu", cpu), ("wall", wall)):
        floor = samples["NullHandler (floor)"]
        ratios = {k: [a / b for a, b in zip(v, floor, strict=True)] for k, v in samples.items()}
        out[clock] = {k: statistics.median(v) for k, v in samples.items()}
        out[clock + "_ratio"] = {k: statistics.median(v) for k, v in ratios.items()}
        out[clock + "_spread"] = {k: _spread(v) for k, v in ratios.items()}
    return out


def _flush(h: logging.Handler) -> None:
    if isinstance(h, KeepOnly):
        h.items.clear()
    elif isinstance(h, logging.handlers.QueueHandler):
        deadline = time.monotonic() + 60
        while not h.queue.empty() and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.001)
    elif type(h).__name__ == "CESHandler":
        h.flush(timeout=60)  # type: ignore[call-arg]
    else:
        h.flush()


# --- cold start --------------------------------------------------------------------------------------------------

IMPORT_PROBE = (
    "import sys, time\n"
    "n = len(sys.modules)\n"
    "t = time.perf_counter()\n"
    "{code}\n"
    "took = time.perf_counter() - t\n"
    "print(took, len(sys.modules) - n)\n"
)


def import_time(code: str) -> tuple[float, int]:
    """Seconds ``code`` takes in a fresh interpreter (the interpreter's own start-up not counted), and the
    modules it loaded. Bytecode caches are written (as an installed package has them): the environment's
    PYTHONDONTWRITEBYTECODE is dropped for these runs, and one untimed run comes first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CES_", "HUAWEICLOUD_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(HERE.parent)
    r = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE.format(code=code)], capture_output=True, text=True, env=env, timeout=60
    )
    if r.returncode != 0:
        raise RuntimeError(f"{code!r} failed: {r.stderr[-500:]}")
    took, modules = r.stdout.split()
    return float(took), int(modules)


def process_time_wall(args: list[str]) -> float:
    """Wall seconds of a whole process (start-up included), as a person running a command waits for it."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(HERE.parent)
    t = time.perf_counter()
    subprocess.run(args, capture_output=True, env=env, timeout=60, check=True)
    return time.perf_counter() - t


# --- child-process measurements -------------------------------------------------------------------------------------


def child(measurement: str, timeout: float = 240, **kw: Any) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; killed (and the row marked not measured) after ``timeout``."""
    r = subprocess.run(
        [sys.executable, __file__, "--child", measurement, json.dumps(kw)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise RuntimeError(f"child {measurement} failed: {r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss_baseline() -> int:
    """RSS now (KiB), with the peak reset to it where Linux allows (so VmHWM later is this run's peak)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_growth_mib(before_kib: int) -> float:
    return (_status_kib("VmHWM") - before_kib) / 1024


def stats_dict(h: logging.Handler) -> dict[str, Any]:
    s = h.stats  # type: ignore[attr-defined]
    return {
        "received": s.received,
        "sent": s.sent,
        "dropped": s.dropped,
        "queued": s.queued,
        "retries": s.retries,
        "batches": s.batches,
        "dropped_by_reason": dict(s.dropped_by_reason),
    }


def quiet_logger(name: str, h: logging.Handler) -> logging.Logger:
    lg = logging.getLogger(name)
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    lg.addHandler(h)
    return lg


def child_cpu(kind: str, url: str, records: int) -> dict[str, Any]:
    """Log ``records`` records, flush, and report this process's CPU (all its threads, user+sys).

    One record is logged and flushed first, outside the clock, by both handlers: the worker thread, the
    connection and (for watchtower) the log stream exist before the clock starts. watchtower silently drops
    what is logged while it creates its stream, so without this its count would depend on timing."""
    stream = f"cpu{os.getpid()}"  # an event name (and stream) of its own: runs never share a key
    h = ces_handler(url, queue_size=records) if kind == "ces" else watchtower_handler(url, stream)
    lg = quiet_logger(stream, h)

    def flush() -> bool:
        if kind == "ces":
            return bool(h.flush(timeout=120))  # type: ignore[call-arg]
        h.flush()
        return True

    lg.warning("warm-up")
    flush()
    t = time.process_time()
    for i in range(records):
        lg.warning(MSG, i, IP)
    ok = flush()
    cpu = time.process_time() - t
    h.close()
    return {"cpu": cpu, "ok": ok, "stream": stream}


def child_burst(url: str, records: int) -> dict[str, Any]:
    """Default settings; ``records`` warnings in a tight loop; peak RSS growth, timings, what was dropped."""
    h = ces_handler(url)
    lg = quiet_logger("burst", h)
    before = rss_baseline()
    t0 = time.perf_counter()
    for i in range(records):
        lg.warning(MSG, i, IP)
    logged = time.perf_counter() - t0
    ok = h.flush(timeout=120)  # type: ignore[call-arg]
    delivered = time.perf_counter() - t0
    growth = peak_growth_mib(before)
    s = stats_dict(h)
    h.close()
    return {"logged_s": logged, "delivered_s": delivered, "flushed": ok, "rss_growth_mib": growth, **s}


def _fail_with_big_local(lg: logging.Logger, i: int) -> None:
    blob = "x" * 100_000 + str(i)  # a 100 KB local of this frame, its own each call
    try:
        raise ValueError(f"request {i} failed ({len(blob)} bytes in hand)")
    except ValueError:
        lg.exception("request %d failed", i)


def child_heavy(url: str, records: int) -> dict[str, Any]:
    """Service down: ``records`` ``log.exception()`` from a frame holding a 100 KB local, then ``records``
    errors with a 100 KB argument. Peak RSS growth after each half; every record accounted for."""
    h = ces_handler(url)
    lg = quiet_logger("heavy", h)
    before = rss_baseline()
    t0 = time.perf_counter()
    for i in range(records):
        _fail_with_big_local(lg, i)
    after_exc = peak_growth_mib(before)
    for i in range(records):
        lg.error("payload rejected: %s", "y" * 100_000 + str(i))
    logged = time.perf_counter() - t0
    after_args = peak_growth_mib(before)
    open_stats = stats_dict(h)
    h.close(grace_period=0)  # type: ignore[call-arg]
    t1, deadline = time.monotonic(), time.monotonic() + 30
    while h.stats.queued and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)  # close() may return before the worker has let go of what it held
    return {
        "settle_s": time.monotonic() - t1,
        "rss_after_exceptions_mib": after_exc,
        "rss_growth_mib": after_args,
        "logged_s": logged,
        "open": open_stats,
        "closed": stats_dict(h),
    }


def child_far(url: str, records: int) -> dict[str, Any]:
    """A backlog of ``records`` logged while the proxy holds requests back; then (``go`` on stdin, the gate
    open) the time until all are delivered. Talks to the parent by lines on stdin/stdout."""
    h = ces_handler(url)
    lg = quiet_logger("far", h)
    for i in range(records):
        lg.warning(MSG, i, IP)
    print("LOGGED", flush=True)
    ready, _, _ = select.select([sys.stdin], [], [], 60)
    if ready:
        sys.stdin.readline()
    t0 = time.perf_counter()
    ok = h.flush(timeout=120)  # type: ignore[call-arg]
    took = time.perf_counter() - t0
    s = stats_dict(h)
    h.close()
    return {"delivery_s": took, "flushed": ok, **s}


def child_e2e(url: str, records: int, threads: int) -> dict[str, Any]:
    h = ces_handler(url, queue_size=records)
    lg = quiet_logger("e2e", h)
    per = records // threads

    def work(k: int) -> None:
        for i in range(per):
            lg.error("thread %d record %d", k, i)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    logged = time.perf_counter() - t0
    ok = h.flush(timeout=120)  # type: ignore[call-arg]
    total = time.perf_counter() - t0
    s = stats_dict(h)
    h.close()
    return {"logged_s": logged, "total_s": total, "ok": ok, **s}


def child_memory(records: int) -> dict[str, Any]:
    """Small records with the service down (a closed port): what a long outage costs in memory."""
    h = ces_handler(f"http://127.0.0.1:{free_port()}", timeout=1, grace_period=0)
    lg = quiet_logger("mem", h)
    before = rss_baseline()
    for i in range(records):
        lg.error(MSG, i, IP)
    growth = peak_growth_mib(before)
    s = stats_dict(h)
    h.close()
    return {"rss_growth_mib": growth, **s}


# The parts of the worker's CPU, by the module a call goes into. Time is charged to the part whose code is
# running: a call from one part into another (the transport calling the signer) moves to the callee's part.
BUILD, ENCODE, SIGN, TRANSPORT = (
    "build (EventBuilder: format, sanitise, time, key)",
    "encode (json of the request body)",
    "sign (AK/SK)",
    "transport (client, requests/urllib3, http.client, sockets; reading the answer)",
)
REST = "the rest: queue, batching, counters, waits, profiler"
_TRANSPORT_PKGS = ("requests", "urllib3", "http", "email", "idna", "charset_normalizer", "certifi")


def _part(mod: str, name: str) -> str | None:
    mod = mod.replace(os.sep, "/")
    if mod.endswith("ces_logging/_service/auth.py"):
        return SIGN
    if "/json/" in mod or (mod.endswith("ces_logging/layout.py") and name == "encode_batch"):
        return ENCODE
    if mod.endswith(
        (
            "ces_logging/handler.py",
            "ces_logging/prepare.py",
            "ces_logging/mapping.py",
            "ces_logging/layout.py",
            "ces_logging/events.py",
        )
    ):
        return None if name.startswith(("CESHandler.", "_drain")) else BUILD
    if mod.endswith(
        (
            "ces_logging/_service/client.py",
            "ces_logging/_service/transport.py",
            "/socket.py",
            "/ssl.py",
            "/selectors.py",
        )
    ) or any(f"/{p}/" in mod for p in _TRANSPORT_PKGS):
        return TRANSPORT
    return None


def _edge_part(parent_mod: str, mine: str | None, child_mod: str, child_name: str) -> str | None:
    """The part a call goes into, seen from its caller: the transport decoding the answer's JSON is transport;
    the worker's own calls of ``events.py`` (is this event still fresh?) are bookkeeping, not building."""
    theirs = _part(child_mod, child_name)
    if mine == TRANSPORT and theirs == ENCODE:
        return TRANSPORT
    if theirs == BUILD and mine is None and parent_mod.replace(os.sep, "/").endswith("ces_logging/worker.py"):
        return None if child_mod.replace(os.sep, "/").endswith("ces_logging/events.py") else BUILD
    return theirs


def child_profile(url: str, records: int) -> dict[str, Any]:
    """Where the worker threads' CPU goes: first unprofiled (the process's CPU clock less the main thread's),
    then under yappi with its CPU clock (every thread but the main one), split into parts by :func:`_part`."""
    import yappi

    h = ces_handler(url, queue_size=records)
    lg = quiet_logger("plain", h)
    process, main = time.process_time(), time.thread_time()
    for i in range(records):
        lg.warning(MSG, i, IP)
    h.flush(timeout=120)  # type: ignore[call-arg]
    # The process's CPU less this (the main) thread's: every other thread's, short-lived ones included.
    main = time.thread_time() - main
    others = (time.process_time() - process) - main
    plain_us = others / max(1, h.stats.sent) * 1e6  # type: ignore[attr-defined]
    caller_us = main / records * 1e6
    h.close()

    h = ces_handler(url, queue_size=records)
    lg = quiet_logger("prof", h)
    yappi.set_clock_type("cpu")
    yappi.start(builtins=False, profile_threads=True)  # before the first emit: the worker starts under it
    for i in range(records):
        lg.warning(MSG, i, IP)
    h.flush(timeout=120)  # type: ignore[call-arg]
    yappi.stop()
    sent = max(1, h.stats.sent)  # type: ignore[attr-defined]
    h.close()
    incoming = dict.fromkeys((BUILD, ENCODE, SIGN, TRANSPORT), 0.0)
    outgoing = dict(incoming)
    total = 0.0
    own: dict[str, float] = {}
    rest_by_module: dict[str, float] = {}  # own time of code in no part, by file (a hint, not exact)
    threads = [t for t in yappi.get_thread_stats() if t.name != "_MainThread"]
    for t in threads:
        total += t.ttot  # the thread's CPU clock: functions still running at stop (the loop) are in it too
        for f in yappi.get_func_stats(filter={"ctx_id": t.id}):
            key = f"{f.name} ({Path(f.module).name}:{f.lineno})"
            own[key] = own.get(key, 0.0) + f.tsub
            mine = _part(f.module, f.name)
            m = f.module.replace(os.sep, "/")
            if mine is None and ("/ces_logging/" in m or m.endswith(("/threading.py", "/queue.py"))):
                mod = Path(f.module).name
                rest_by_module[mod] = rest_by_module.get(mod, 0.0) + f.tsub
            for c in f.children:
                theirs = _edge_part(f.module, mine, c.module, c.name)
                if theirs == mine:
                    continue
                if theirs is not None:
                    incoming[theirs] += c.ttot
                if mine is not None:
                    outgoing[mine] += c.ttot
    parts = {p: max(0.0, incoming[p] - outgoing[p]) for p in incoming}
    parts[REST] = max(0.0, total - sum(parts.values()))
    top = sorted(own.items(), key=lambda kv: -kv[1])[:10]
    return {
        "share": {k: v / total for k, v in parts.items()},
        "profiled_us_per_event": total / sent * 1e6,
        "plain_us_per_event": plain_us,
        "caller_us_per_record": caller_us,
        "top_self": [(k, v / total) for k, v in top],
        "rest_by_module": [(k, v / total) for k, v in sorted(rest_by_module.items(), key=lambda kv: -kv[1])[:6]],
        "threads": len(threads),
    }


def child_send_path(url: str, n: int) -> dict[str, Any]:
    """CPU per POST: requests.Session.post vs the client's own path."""
    import requests

    from ces_logging import CESClient
    from ces_logging._service.auth import AKSKAuth

    body = json.dumps([{"event_name": "p", "event_source": "a.b", "time": int(time.time() * 1000), "detail": {}}])
    c = CESClient(PROJECT, endpoint=url, ak=AK, sk=SK)
    s = requests.Session()
    auth = AKSKAuth(AK, SK, project_id=PROJECT)
    res = {}
    for _ in range(2):
        t = time.process_time()
        for _ in range(n):
            c.post_events_body(body.encode())
        res["client path"] = (time.process_time() - t) / n * 1000
        t = time.process_time()
        for _ in range(n):
            s.post(
                f"{url}/V1.0/{PROJECT}/events",
                data=body.encode(),
                auth=auth,
                headers={"Content-Type": "application/json"},
                timeout=10,
            ).raise_for_status()
        res["Session.post"] = (time.process_time() - t) / n * 1000
    return res


CHILDREN: dict[str, Callable[..., dict[str, Any]]] = {
    "caller": caller_cost,
    "cpu": child_cpu,
    "burst": child_burst,
    "heavy": child_heavy,
    "far": child_far,
    "e2e": child_e2e,
    "memory": child_memory,
    "profile": child_profile,
    "send": child_send_path,
}


# --- the rows ------------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def invariant(s: dict[str, Any]) -> str:
    holds = s["sent"] + s["dropped"] + s["queued"] == s["received"]
    return "holds" if holds else "**broken**"


def reasons(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items())) or "none"


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.summary: list[tuple[str, str, str, str]] = []  # row, measured, target, verdict

    def out(self, s: str = "") -> None:
        print(s, flush=True)
        self.lines.append(s)

    def target(self, row: str, measured: str, target: str, ok: bool | None) -> None:
        self.summary.append((row, measured, target, "n/a" if ok is None else verdict(ok)))

    def section(self, title: str, body: Callable[[], None]) -> None:
        self.out(f"\n## {title}\n")
        t = time.monotonic()
        try:
            body()
        except Exception as e:
            self.out(f"Not measured: {type(e).__name__}: {str(e)[-1500:]}")
            traceback.print_exc()
        self.out(f"\n({time.monotonic() - t:.0f} s)")


def row_caller(r: Report, emu_url: str, moto_url: str | None) -> None:
    res = child("caller", timeout=400, emu_url=emu_url, moto_url=moto_url)  # a fresh process, as every row
    r.out(
        f'`logger.warning("{MSG}", i, ip)`: {res["rounds"]} interleaved rounds of {res["n"]:,} calls per handler, '
        "each with its worker delivering to the live service during the timed loop: a backlog of as many "
        "records is logged untimed just before the loop, so the worker sends through the whole loop (and the "
        "loop's own records after it); the handler is flushed after its round. The floor has nothing to "
        "deliver. CPU is the calling thread's CPU clock (`time.thread_time`): what the call costs the thread "
        "that logs. Wall time also holds, on a GIL interpreter, the worker's CPU for what it delivers "
        "meanwhile (row 5 measures that per event) and the machine's other load. Ratios are per round against "
        "the floor of the same round: the median, and the spread from the 10th to the 90th percentile.\n"
    )
    r.out(
        "| handler | CPU µs per call | CPU ratio (spread) | wall µs per call | wall ratio (spread) | target |\n"
        "|---|---:|---:|---:|---:|---|"
    )
    for k, v in res["cpu"].items():
        tgt = f"CPU <= {T_CALLER}x" if k == "CESHandler, defaults" else "reference"
        lo, hi = res["cpu_spread"][k]
        wlo, whi = res["wall_spread"][k]
        r.out(
            f"| {k} | {v:.2f} | {res['cpu_ratio'][k]:.2f}x ({lo:.2f}-{hi:.2f}) | {res['wall'][k]:.2f} | "
            f"{res['wall_ratio'][k]:.2f}x ({wlo:.2f}-{whi:.2f}) | {tgt} |"
        )
    for k, note in res["notes"].items():
        r.out(f"| {k} | - | - | - | - | {note} |")
    drops = {k: v for k, v in res["drops"].items() if v}
    if drops:
        r.out("\nDropped during the rounds (by reason): " + "; ".join(f"{k}: {reasons(v)}" for k, v in drops.items()))
    key = "CESHandler, defaults"
    ratio = res["cpu_ratio"][key]
    lo, hi = res["cpu_spread"][key]
    wlo, whi = res["wall_spread"][key]
    r.target(
        "Caller cost of logger.warning (defaults) / NullHandler, worker delivering: caller's CPU clock (wall)",
        f"{ratio:.2f}x ({lo:.2f}-{hi:.2f}); wall {res['wall_ratio'][key]:.2f}x ({wlo:.2f}-{whi:.2f})",
        f"CPU <= {T_CALLER}x",
        ratio <= T_CALLER,
    )


def row_import(r: Report, runs: int = 7) -> None:
    base = "import logging, json, threading"
    cases = {
        f"`{base}` (floor)": base,
        "`import ces_logging`": "import ces_logging",
        "`import ces_logging; ces_logging.configure()`, nothing configured": (
            "import ces_logging, contextlib, io\nwith contextlib.redirect_stderr(io.StringIO()):\n"
            "    ces_logging.configure()"
        ),
        # No target: what a process that will send pays before its first record (the HTTP stack comes with the
        # worker's first send, or a query).
        "`import ces_logging` + a sending handler built (AK/SK, http endpoint)": (
            "from ces_logging import CESHandler\n"
            "CESHandler(project_id='p', endpoint='http://127.0.0.1:9', ak='A', sk='S', grace_period=0)"
        ),
    }
    try:
        import watchtower  # noqa: F401

        cases["`import watchtower` (reference)"] = "import watchtower"
    except ImportError:
        pass
    for code in cases.values():
        import_time(code)  # untimed: writes the bytecode caches
    times: dict[str, list[float]] = {k: [] for k in cases}
    modules: dict[str, int] = {}
    for _ in range(runs):  # interleaved: a busy moment slows every case of a run alike
        for k, code in cases.items():
            took, modules[k] = import_time(code)
            times[k].append(took)
    floor_key = next(iter(cases))
    floor = statistics.median(times[floor_key])
    r.out(
        f"Each line in a fresh interpreter, {runs} runs interleaved: the time of the statement alone "
        "(`time.perf_counter` around it; the interpreter's start-up is not in it) and the modules it loaded, "
        "with bytecode caches written as an installed package has them. The ratio is the median over the "
        "floor's median.\n"
    )
    r.out("| statement | ms (median) | min-max | modules loaded | ratio to the floor |\n|---|---:|---:|---:|---:|")
    for k, ts in times.items():
        med = statistics.median(ts)
        r.out(
            f"| {k} | {med * 1000:.1f} | {min(ts) * 1000:.1f}-{max(ts) * 1000:.1f} | {modules[k]} | "
            f"{med / floor:.2f}x |"
        )
    cli = [sys.executable, "-m", "ces_logging", "--help"]
    bare = [sys.executable, "-c", "import argparse"]
    process_time_wall(cli)
    walls: dict[str, list[float]] = {"cli": [], "bare": []}
    for _ in range(runs):
        walls["cli"].append(process_time_wall(cli))
        walls["bare"].append(process_time_wall(bare))
    r.out(
        f"\n`ces-logging --help` as a whole process (start-up included): "
        f"{statistics.median(walls['cli']) * 1000:.0f} ms (median of {runs}); a bare interpreter that imports "
        f"argparse: {statistics.median(walls['bare']) * 1000:.0f} ms."
    )
    ratio = statistics.median(times["`import ces_logging`"]) / floor
    r.target(
        "import ces_logging / import logging, json, threading (median of 7 fresh interpreters)",
        f"{ratio:.2f}x ({statistics.median(times['`import ces_logging`']) * 1000:.1f} ms)",
        f"<= {T_IMPORT:g}x",
        ratio <= T_IMPORT,
    )


def row_burst(r: Report, records: int = 50_000) -> None:
    with Emulator() as emu:
        b = child("burst", url=emu.url, records=records)
        stored = emu.stored()
        dup = emu.stats().get("events_duplicate", 0)
    r.out(
        f"Default settings, emulator up; {records:,} `logger.warning` calls in a tight loop in a fresh process. "
        "Stored is the emulator's count; RSS growth is the process's peak (VmHWM) over its RSS before the loop.\n"
    )
    r.out(
        "| stored (emulator) | dropped by reason | RSS growth (MiB) | logging took (s) | all delivered after (s) "
        "| invariant |\n|---:|---|---:|---:|---:|---|"
    )
    r.out(
        f"| {stored:,} of {records:,} | {reasons(b['dropped_by_reason'])} | {b['rss_growth_mib']:.1f} | "
        f"{b['logged_s']:.2f} | {b['delivered_s']:.2f}{'' if b['flushed'] else ' (flush timed out)'} | "
        f"{invariant(b)} |"
    )
    if dup:
        r.out(f"\nThe emulator saw {dup:,} item(s) a second time (retries of requests that had landed).")
    ok = stored == records and b["rss_growth_mib"] <= T_BURST_MIB
    r.target(
        f"Burst of {records:,}: stored, RSS growth",
        f"{stored:,} stored, +{b['rss_growth_mib']:.1f} MiB",
        f"all stored, <= {T_BURST_MIB:.0f} MiB",
        ok,
    )


def row_heavy(r: Report, records: int = 10_000) -> None:
    with Emulator() as emu:
        emu.admin("POST", "faults", {"status": 503, "seconds": 600})  # every report refused: the service is down
        hv = child("heavy", url=emu.url, records=records)
        refused = emu.stats().get("faults_served", 0)
    o, c = hv["open"], hv["closed"]
    r.out(
        f"Service down (the emulator answers 503 to every report). In a fresh process: {records:,} "
        "`log.exception()` calls, each from a frame holding its own 100 KB local, then "
        f'{records:,} `log.error("payload rejected: %s", arg)` with a 100 KB argument of its own.\n'
    )
    r.out(
        "| peak RSS growth after the exceptions (MiB) | after both halves (MiB) | logging took (s) |\n|---:|---:|---:|"
    )
    r.out(f"| {hv['rss_after_exceptions_mib']:.1f} | {hv['rss_growth_mib']:.1f} | {hv['logged_s']:.2f} |")
    r.out("\n| when | received | sent | dropped (by reason) | queued | invariant |\n|---|---:|---:|---|---:|---|")
    for label, s in (("before close", o), ("after close(grace_period=0), settled", c)):
        r.out(
            f"| {label} | {s['received']:,} | {s['sent']:,} | {s['dropped']:,} ({reasons(s['dropped_by_reason'])})"
            f" | {s['queued']:,} | {invariant(s)} |"
        )
    r.out(
        f"\nThe emulator refused {refused:,} request(s) meanwhile. After `close(grace_period=0)` returned, "
        f"`queued` took {hv['settle_s']:.2f} s to reach {c['queued']:,}."
    )
    ok = hv["rss_growth_mib"] <= T_HEAVY_MIB and invariant(o) == invariant(c) == "holds" and c["queued"] == 0
    r.target(
        f"Heavy records under an outage ({2 * records:,}): RSS growth, accounted",
        f"+{hv['rss_growth_mib']:.1f} MiB, invariant {invariant(o)}",
        f"<= {T_HEAVY_MIB:.0f} MiB, all accounted",
        ok,
    )


def row_far(r: Report, records: int = 10_000, delay: float = 0.05) -> None:
    with Emulator() as emu:
        proxy = DelayProxy(emu.port, delay)
        try:
            proxy.gate.clear()
            p = subprocess.Popen(
                [sys.executable, __file__, "--child", "far", json.dumps({"url": proxy.url, "records": records})],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            line = p.stdout.readline()  # type: ignore[union-attr]  # "LOGGED", or "" when the child died
            proxy.gate.set()
            if line.strip() == "LOGGED":
                p.stdin.write("go\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
            try:
                out, err = p.communicate(timeout=240)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise
            if p.returncode != 0:
                raise RuntimeError(f"child far failed: {err[-2000:]}")
            f = json.loads(out.strip().splitlines()[-1])
        finally:
            proxy.close()
        st = emu.stats()
        stored = emu.stored()
    eps = f["sent"] / f["delivery_s"] if f["delivery_s"] > 0 else 0.0
    dup = st.get("events_duplicate", 0)
    r.out(
        f"A delay proxy in front of the emulator holds every chunk of the answers {delay * 1000:.0f} ms (each "
        f"round trip +{delay * 1000:.0f} ms). {records:,} records are logged while the proxy holds requests "
        "back; the clock starts when it lets them through and stops when `flush()` returns.\n"
    )
    r.out(
        "| stored (emulator) | sent again (duplicates) | connections | delivery (s) | events/s | dropped | "
        "invariant |\n|---:|---:|---:|---:|---:|---|---|"
    )
    r.out(
        f"| {stored:,} of {records:,} | {dup:,} | {proxy.connections} | {f['delivery_s']:.2f}"
        f"{'' if f['flushed'] else ' (flush timed out)'} | {eps:,.0f} | {reasons(f['dropped_by_reason'])} | "
        f"{invariant(f)} |"
    )
    ok = eps >= T_FAR_EPS and stored == records and dup == 0
    r.target(
        f"Far link (+{delay * 1000:.0f} ms), {records:,}-record backlog",
        f"{eps:,.0f} events/s, {stored:,} stored once" if dup == 0 else f"{eps:,.0f} events/s, {dup:,} sent twice",
        f">= {T_FAR_EPS:,.0f}/s (goal {G_FAR_EPS:,.0f}), each stored once",
        ok,
    )


def row_cpu(r: Report, emu_url: str, moto_url: str | None, records: int = 20_000, pairs: int = 7) -> None:
    ces: list[tuple[float, int]] = []
    wt: list[tuple[float, int]] = []
    for k in range(pairs):  # alternated, and which goes first alternates too
        order = ["ces", "wt"] if k % 2 == 0 else ["wt", "ces"]
        for kind in order:
            if kind == "ces":
                before = ces_stored(emu_url)
                c = child("cpu", kind="ces", url=emu_url, records=records)
                ces.append((c["cpu"], settled(lambda: ces_stored(emu_url)) - before - 1))  # less the warm-up
            elif moto_url:
                w = child("cpu", kind="watchtower", url=moto_url, records=records)
                wt.append((w["cpu"], settled(lambda w=w: watchtower_stored(moto_url, w["stream"])) - 1))
    r.out(
        f"{records:,} `logger.warning` records logged then flushed, in a fresh process per run; CPU is "
        "`time.process_time()` of that process (all its threads, user+sys; the server's CPU is not in it), "
        "from the first call until flush returns, divided by the events the server stored. One warm-up record, "
        "logged and flushed before the clock starts, gives both handlers their thread, connection and stream "
        f"(watchtower drops what is logged while it creates a stream). {pairs} alternated pairs; the ratio is the "
        "median of the pairs' ratios.\n"
    )
    r.out(
        "| handler | CPU ms per run: median (min-max) | events stored (fewest) | µs CPU per stored event (median) |\n"
        "|---|---:|---:|---:|"
    )

    def line(label: str, rs: list[tuple[float, int]]) -> list[float]:
        per = [cpu / max(1, got) for cpu, got in rs]
        r.out(
            f"| {label} | {statistics.median(x[0] for x in rs) * 1000:.0f} ({min(x[0] for x in rs) * 1000:.0f}-"
            f"{max(x[0] for x in rs) * 1000:.0f}) | {min(x[1] for x in rs):,} | "
            f"{statistics.median(per) * 1e6:.1f} |"
        )
        return per

    ces_per = line("CESHandler (100 events a request)", ces)
    if not wt:
        r.out("\nwatchtower/moto not installed: no ratio.")
        r.target("CPU per delivered event / watchtower", "not measured", f"<= {T_CPU_RATIO}x", None)
        return
    wt_per = line("watchtower (up to 10,000 a request)", wt)
    ratios = [a / b for a, b in zip(ces_per, wt_per, strict=True)]
    med = statistics.median(ratios)
    r.out(
        f"\nCESHandler / watchtower CPU per event, per pair: {', '.join(f'{x:.2f}' for x in ratios)}; "
        f"median **{med:.2f}**."
    )
    r.target(
        "CPU per delivered event / watchtower (median of pairs)",
        f"{med:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
        f"<= {T_CPU_RATIO}x",
        med <= T_CPU_RATIO,
    )


def row_profile(r: Report, emu_url: str, records: int = 20_000) -> None:
    prof = child("profile", url=emu_url, records=records)
    plain = prof["plain_us_per_event"]
    r.out(
        f"{records:,} `logger.warning` records delivered, twice in one fresh process: first unprofiled, reading "
        "the CPU clock of every thread but the main one (the process's less the main thread's); then under "
        "yappi with its CPU clock over the worker thread(s) "
        f"({prof['threads']}). A part is the CPU of the code in it: a call from one part into another is charged to "
        "the callee (signing inside the transport's request counts as signing). The shares come from the "
        "profiled run; µs are the shares of the unprofiled worker CPU.\n"
    )
    r.out(
        f"Worker CPU per delivered event: {plain:.1f} µs unprofiled, {prof['profiled_us_per_event']:.1f} µs "
        "under the profiler. For scale, the main thread (the logging calls, emit included) used "
        f"{prof['caller_us_per_record']:.1f} µs per record.\n"
    )
    r.out("| part | share | ≈ µs CPU per event |\n|---|---:|---:|")
    for k, v in prof["share"].items():
        r.out(f"| {k} | {v:.0%} | {v * plain:.1f} |")
    r.out(
        '\nThe package\'s other modules and threading, by file (their own CPU; a hint at what "the rest" is): '
        + ", ".join(f"`{k}` {v:.0%}" for k, v in prof["rest_by_module"])
        + "."
    )
    r.out("\nThe ten functions with the most CPU of their own (share of the worker's, profiled):\n")
    r.out("| function | own share |\n|---|---:|")
    for k, v in prof["top_self"]:
        r.out(f"| `{k}` | {v:.1%} |")
    named = {k: v for k, v in prof["share"].items() if k != REST}
    big = max(named, key=lambda k: named[k])
    split = ", ".join(f"{k.split(' (')[0]} {v:.0%}" for k, v in named.items())
    r.target("Worker CPU split (yappi, CPU clock)", split, f"shown (largest: {big.split(' (')[0]})", None)


def row_send(r: Report, emu_url: str) -> None:
    send = child("send", url=emu_url, n=300)
    r.out("300 POSTs of a ready one-event JSON body, signed; `time.process_time()`.\n")
    r.out("| path | ms CPU per POST |\n|---|---:|")
    for k, v in send.items():
        r.out(f"| {k} | {v:.3f} |")
    r.out(f"\nclient path / Session.post: **{send['client path'] / send['Session.post']:.2f}**")


def row_e2e(r: Report, emu_url: str) -> None:
    e = child("e2e", url=emu_url, records=100_000, threads=4)
    r.out("| records | threads | logging done (s) | all stored (s) | events/s delivered | dropped |")
    r.out("|---:|---:|---:|---:|---:|---|")
    r.out(
        f"| 100,000 | 4 | {e['logged_s']:.2f} | {e['total_s']:.2f} | {e['sent'] / e['total_s']:,.0f} | "
        f"{reasons(e['dropped_by_reason'])} |"
    )


def row_memory(r: Report) -> None:
    m = child("memory", records=200_000)
    r.out("| peak RSS growth (MiB) | queued | dropped |\n|---:|---:|---|")
    r.out(f"| {m['rss_growth_mib']:.1f} | {m['queued']:,} | {reasons(m['dropped_by_reason'])} |")


def ces_stored(url: str) -> int:
    return int(emulator_admin(url, "GET", "stats").get("events_in_store", 0))


HOW_TO_READ = """## How to read the rows

The machine has 2 cores shared with the servers (and, on a developer's machine, with whatever else runs):
absolute µs and events/s move by 10-30 % from run to run; ratios measured side by side in the same run
(interleaved rounds, alternated pairs) are the numbers to compare.

0. Cold start: `import ces_logging` <= 3x `import logging, json, threading`, median of 7 fresh interpreters.
   Every process pays it when it starts (a CLI call, a `manage.py` command, a serverless cold start). The line
   "a sending handler built" has no target: what a process that will send pays before its first record (the
   HTTP stack comes later: the worker's lean POST loads sockets and TLS at its first send, a query `requests`).
1. Caller cost: what one `logger.warning` costs the app's thread while the worker delivers. Target: CESHandler
   with defaults <= 1.25x the NullHandler on the caller's CPU clock. The wall column is what a CPU-bound app
   on a GIL interpreter sees: the call and the worker's share of the GIL for the records it delivers meanwhile.
   The other CESHandler rows show what an option adds at the call (a formatter, JSON content, storm control);
   "a handler that only formats" is what the formatter costs anyone who calls it.
2. Burst: 50,000 records logged faster than any service takes them. Met when all 50,000 are stored (nothing
   dropped as `queue_full`) and the process grew by <= 40 MiB: the queue holds a burst, in bounded memory.
   "all delivered after" is how long the backlog took to drain.
3. Heavy records under an outage: met when RSS grew by <= 64 MiB (the queue is bounded by size, and a queued
   record keeps no traceback, frame or argument alive) and `sent + dropped + queued == received` holds both
   while the service is down and after close, with `queued` reaching 0.
4. Far link: one request in flight delivers at most a batch per round trip (100 events / ~55 ms, about
   1,800 events/s); >= 4,000 events/s needs several requests in flight. "connections" is how many the handler
   opened through the proxy; "sent again" must be 0 and stored must be 10,000 (each record stored once).
5. CPU per delivered event: the client process's CPU clock over what the server stored, CESHandler over
   watchtower, per alternated pair; the median is the figure (target <= 0.6x), the spread is the noise.
6. Worker CPU split: a tracing profiler charges every Python call, so code made of many small calls (building
   events) looks bigger under it than it is; the shares say where to look, the µs column scales them to the
   worker's unprofiled CPU. "the rest" includes the profiler's own cost in the worker's loop.
7-9. Reference rows, no target: the send path against `Session.post`, throughput from 4 threads with the
   service close by, and a long outage with small records.
"""


# --- the report ----------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    started = time.time()
    r = Report()
    moto = start_moto()
    moto_url = moto[1] if moto else None
    try:
        with Emulator() as emu:
            r.out(
                f"# ces_logging benchmarks\n\nMachine: {cpu_model()}, {os.cpu_count()} cores; Python "
                f"{platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n"
                "Servers in their own processes on 127.0.0.1: the CES emulator (AK/SK signing on; a fresh one for "
                "each row that counts what it stored) and moto for watchtower. The summary comes first; each "
                "section says how its row was measured."
            )
            if not moto:
                r.out("watchtower/moto not installed: `pip install -e '.[bench]'` adds them.")
            r.out("\n<!-- SUMMARY -->")
            r.section("0. Cold start: the import", lambda: row_import(r))
            r.section("1. Caller cost of one `logger.warning`", lambda: row_caller(r, emu.url, moto_url))
            r.section("2. Burst: 50,000 warnings, default settings, service up", lambda: row_burst(r))
            r.section("3. Heavy records under an outage", lambda: row_heavy(r))
            r.section("4. Far link: a 10,000-record backlog over +50 ms", lambda: row_far(r))
            r.section("5. Client CPU per delivered event, against watchtower", lambda: row_cpu(r, emu.url, moto_url))
            r.section("6. Where the worker's CPU goes (yappi, CPU clock)", lambda: row_profile(r, emu.url))
            r.section("7. Send path: CPU per POST of a ready JSON body", lambda: row_send(r, emu.url))
            r.section(
                "8. End to end: 100,000 records from 4 threads, first record to last stored",
                lambda: row_e2e(r, emu.url),
            )
            r.section("9. Memory with the service down: 200,000 small records, default settings", lambda: row_memory(r))
    finally:
        if moto:
            moto[0].terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                moto[0].wait(10)
    summary = [
        "## Summary: each row beside its target\n",
        "| row | measured | target | verdict |",
        "|---|---|---|---|",
    ] + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in r.summary]
    print("\n" + "\n".join(summary))
    took = f"\n{HOW_TO_READ}\nTotal run time: {time.time() - started:.0f} s."
    print(took)
    i = r.lines.index("\n<!-- SUMMARY -->")
    lines = [*r.lines[:i], "", *summary, *r.lines[i + 1 :], took]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.path.insert(0, str(HERE.parent))
        print(json.dumps(CHILDREN[sys.argv[2]](**json.loads(sys.argv[3]))))
    else:
        main()
