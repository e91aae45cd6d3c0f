"""``make bench``: the numbers a user asks for, beside the floor (NullHandler) and a peer (watchtower).

Servers run in their own processes on 127.0.0.1: the CES emulator, and moto's server for watchtower.
Caller-cost rounds are interleaved and medians taken; everything else is measured in a child process of its
own so that one measurement's threads and memory do not colour another's. Prints a table and writes
benchmarks/RESULTS.md. Nothing here is asserted: speed lives here, not in the tests.
"""

from __future__ import annotations

import cProfile
import json
import logging
import logging.handlers
import os
import platform
import pstats
import queue
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = "benchproject"
AK, SK = "BENCHAK", "bench-secret-key"
REGION = "us-east-1"


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
        raise RuntimeError(f"emulator did not start: {line!r}")
    return p, m.group(0)


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


def settled(count: Any, tries: int = 20) -> int:
    """A server's count once it stops growing (moto may still be storing the last batch)."""
    last = -1
    for _ in range(tries):
        n = int(count())
        if n == last:
            return n
        last = n
        time.sleep(0.2)
    return last


def ces_stored(url: str) -> int:
    import requests

    return int(requests.get(f"{url}/_emulator/stats", timeout=10).json().get("events_in_store", 0))


# --- 1. caller cost ----------------------------------------------------------------------------------------------


def caller_cost(emu_url: str, moto_url: str | None, rounds: int = 15, n: int = 2000) -> dict[str, float]:
    from ces_logging import CESHandler

    handlers: dict[str, logging.Handler] = {"NullHandler (floor)": logging.NullHandler()}
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    qh = logging.handlers.QueueHandler(q)
    listener = logging.handlers.QueueListener(q, logging.NullHandler())
    listener.start()
    handlers["stdlib QueueHandler"] = qh
    ces = CESHandler(project_id=PROJECT, endpoint=emu_url, ak=AK, sk=SK, queue_size=100_000)
    handlers["CESHandler"] = ces
    # storm control on: the app's thread computes the group's key (the folding is the worker's)
    handlers['CESHandler storm_control="10/5s"'] = CESHandler(
        project_id=PROJECT, endpoint=emu_url, ak=AK, sk=SK, queue_size=100_000, storm_control="10/5s"
    )
    if moto_url:
        handlers["watchtower"] = watchtower_handler(moto_url, "caller")
    loggers = {}
    for name, h in handlers.items():
        lg = logging.getLogger(f"bench.{name}")
        lg.propagate = False
        lg.setLevel(logging.INFO)
        lg.addHandler(h)
        loggers[name] = lg
    samples: dict[str, list[float]] = {k: [] for k in handlers}
    ip = "203.0.113.7"
    for _ in range(rounds):
        for name, lg in loggers.items():
            warning = lg.warning
            t0 = time.perf_counter_ns()
            for i in range(n):
                warning("user %s failed to log in from %s", i, ip)
            samples[name].append((time.perf_counter_ns() - t0) / n / 1000)
            handlers[name].flush()  # delivery goes on between rounds, not inside the timed loop
    listener.stop()
    for h in handlers.values():
        h.close()
    return {k: statistics.median(v) for k, v in samples.items()}


# --- child-process measurements -------------------------------------------------------------------------------------


def child(measurement: str, **kw: Any) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, __file__, "--child", measurement, json.dumps(kw)], capture_output=True, text=True, timeout=600
    )
    if r.returncode != 0:
        raise RuntimeError(f"child {measurement} failed: {r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def child_cpu(kind: str, url: str, records: int) -> dict[str, Any]:
    """Log ``records`` records, flush, and report this process's CPU (user+sys)."""
    if kind == "ces":
        from ces_logging import CESHandler

        h: logging.Handler = CESHandler(project_id=PROJECT, endpoint=url, ak=AK, sk=SK, queue_size=records)
    else:
        h = watchtower_handler(url, f"cpu{os.getpid()}")
    lg = logging.getLogger(f"cpu{os.getpid()}")  # an event name of its own: runs never share a key
    lg.propagate = False
    lg.addHandler(h)
    t = os.times()
    for i in range(records):
        lg.warning("user %s failed to log in from %s", i, "203.0.113.7")
    if kind == "ces":
        ok = h.flush(timeout=120)  # type: ignore[call-arg]
    else:
        h.flush()
        ok = True
    t2 = os.times()
    h.close()
    return {"cpu": (t2.user - t.user) + (t2.system - t.system), "ok": ok, "stream": f"cpu{os.getpid()}"}


def child_e2e(url: str, records: int, threads: int) -> dict[str, Any]:
    from ces_logging import CESHandler

    h = CESHandler(project_id=PROJECT, endpoint=url, ak=AK, sk=SK, queue_size=records)
    lg = logging.getLogger("e2e")
    lg.propagate = False
    lg.addHandler(h)
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
    ok = h.flush(timeout=300)
    total = time.perf_counter() - t0
    s = h.stats
    h.close()
    return {"logged_s": logged, "total_s": total, "ok": ok, "sent": s.sent, "dropped": s.dropped}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_memory(records: int) -> dict[str, Any]:
    from ces_logging import (
        CESHandler,
        emulator,  # noqa: F401 - imported before the baseline, like the rest
    )

    before = _rss_kib("VmRSS")
    h = CESHandler(project_id=PROJECT, endpoint=f"http://127.0.0.1:{free_port()}", timeout=1, grace_period=0)
    lg = logging.getLogger("mem")
    lg.propagate = False
    lg.addHandler(h)
    for i in range(records):
        lg.error("user %s failed to log in from %s", i, "203.0.113.7")
    after = _rss_kib("VmHWM")  # the peak since the process started, read after the burst
    s = h.stats
    return {"rss_growth_mib": (after - before) / 1024, "queued": s.queued, "received": s.received,
            "dropped": s.dropped_by_reason}  # fmt: skip


def child_profile(url: str, records: int) -> dict[str, Any]:
    """Where the worker's time goes, per batch of 100: build, JSON, signing, HTTP."""
    from ces_logging import CESHandler
    from ces_logging.worker import Worker

    h = CESHandler(project_id=PROJECT, endpoint=url, ak=AK, sk=SK, queue_size=records, flush_interval=60)
    prof = cProfile.Profile()
    original = Worker._run

    def profiled(self: Worker) -> None:
        prof.runcall(original, self)

    Worker._run = profiled  # type: ignore[method-assign]
    lg = logging.getLogger("prof")
    lg.propagate = False
    lg.addHandler(h)
    for i in range(records):
        lg.error("user %s failed to log in from %s", i, "203.0.113.7")
    h.flush(timeout=120)
    h.close()
    st = pstats.Stats(prof)
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]

    def cum(pred: Any) -> float:
        return sum(v[3] for k, v in raw.items() if pred(k))

    batches = max(1, h.stats.batches)
    parts = {
        "build events (format, sanitise, time)": cum(lambda k: k[2] == "__call__" and k[0].endswith("handler.py")),
        "JSON encoding": cum(lambda k: k[2] == "dumps" and "json" in k[0]),
        "AK/SK signing": cum(lambda k: k[2] == "__call__" and k[0].endswith("auth.py")),
        "HTTP (prepare + send + read)": cum(lambda k: k[2] == "_send_once"),
    }
    total = cum(lambda k: k[2] == "_send_with_retries") + parts["build events (format, sanitise, time)"]
    return {
        "per_batch_ms": {k: v / batches * 1000 for k, v in parts.items()},
        "total_per_batch_ms": total / batches * 1000,
        "batches": batches,
    }


def child_send_path(url: str, n: int) -> dict[str, Any]:
    """CPU per POST: requests.Session.post vs the client's prepared-request path."""
    import requests

    from ces_logging import CESClient
    from ces_logging.auth import AKSKAuth

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
            s.post(f"{url}/V1.0/{PROJECT}/events", data=body.encode(), auth=auth,
                   headers={"Content-Type": "application/json"}, timeout=10).raise_for_status()  # fmt: skip
        res["Session.post"] = (time.process_time() - t) / n * 1000
    return res


def run_child(kind: str, kw: dict[str, Any]) -> None:
    fn = {"cpu": child_cpu, "e2e": child_e2e, "memory": child_memory, "profile": child_profile,
          "send": child_send_path}[kind]  # fmt: skip
    print(json.dumps(fn(**kw)))


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
    emu, emu_url = start_emulator("--ak", AK, "--sk", SK)
    moto = start_moto()
    moto_url = moto[1] if moto else None
    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    try:
        out(f"# ces_logging benchmarks\n\nMachine: {cpu_model()}, {os.cpu_count()} cores; Python "
            f"{platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")  # fmt: skip
        out("Servers in their own processes on 127.0.0.1: CES emulator (AK/SK signing on), moto for watchtower.")
        if not moto:
            out("watchtower/moto not installed: `pip install -e '.[bench]'` adds them.")

        cost = caller_cost(emu_url, moto_url)
        floor = cost["NullHandler (floor)"]
        out('\n## 1. Caller cost of one `logger.warning("user %s failed to log in from %s", i, ip)`\n')
        out("15 interleaved rounds of 2,000 calls, median; delivery goes on between rounds.\n")
        out("| handler | µs per call | ratio to floor |\n|---|---:|---:|")
        for k, v in cost.items():
            out(f"| {k} | {v:.2f} | {v / floor:.2f}x |")

        n, runs = 20_000, 3
        ces_runs: list[tuple[float, int]] = []
        wt_runs: list[tuple[float, int]] = []
        for _ in range(runs):  # interleaved, medians: one run's noise does not decide the ratio
            stored_before = ces_stored(emu_url)
            c = child("cpu", kind="ces", url=emu_url, records=n)
            ces_runs.append((c["cpu"], ces_stored(emu_url) - stored_before))
            if moto_url:
                w = child("cpu", kind="watchtower", url=moto_url, records=n)
                wt_runs.append((w["cpu"], settled(lambda w=w: watchtower_stored(moto_url, w["stream"]))))
        out("\n## 2. Client CPU per delivered event (user+sys of the logging process / events stored)\n")
        out(f"{n:,} records logged then flushed, in a fresh process; {runs} interleaved runs, median.\n")
        out("| handler | CPU ms total | events stored | µs CPU per event |\n|---|---:|---:|---:|")

        def row(label: str, rs: list[tuple[float, int]]) -> float:
            per = statistics.median(cpu / max(1, got) for cpu, got in rs)
            cpu = statistics.median(r[0] for r in rs)
            got = min(r[1] for r in rs)
            out(f"| {label} | {cpu * 1000:.0f} | {got:,} (fewest of {len(rs)}) | {per * 1e6:.1f} |")
            return per

        ces_per = row("CESHandler (100 events a request)", ces_runs)
        cpu_ratio: float | None = None
        if wt_runs:
            wt_per = row("watchtower (up to 10,000 a request)", wt_runs)
            cpu_ratio = ces_per / wt_per
            out(f"\nCESHandler / watchtower CPU per event: **{cpu_ratio:.2f}**")

        send = child("send", url=emu_url, n=300)
        out("\n## 3. Send path: CPU per POST of a ready JSON body (300 POSTs, signed)\n")
        out("| path | ms CPU per POST |\n|---|---:|")
        for k, v in send.items():
            out(f"| {k} | {v:.3f} |")
        out(f"\nclient path / Session.post: **{send['client path'] / send['Session.post']:.2f}**")

        e2e = child("e2e", url=emu_url, records=100_000, threads=4)
        out("\n## 4. End to end: 100,000 records from 4 threads, first record to last stored\n")
        out("| records | threads | logging done (s) | all stored (s) | events/s delivered | dropped |")
        out("|---:|---:|---:|---:|---:|---:|")
        out(f"| 100,000 | 4 | {e2e['logged_s']:.2f} | {e2e['total_s']:.2f} | "
            f"{e2e['sent'] / e2e['total_s']:,.0f} | {e2e['dropped']} |")  # fmt: skip

        mem = child("memory", records=200_000)
        out("\n## 5. Memory with the service down: 200,000 records, default queue (10,000)\n")
        out("| peak RSS growth (MiB) | queued | dropped |\n|---:|---:|---|")
        out(f"| {mem['rss_growth_mib']:.1f} | {mem['queued']:,} | {mem['dropped']} |")

        prof = child("profile", url=emu_url, records=20_000)
        out("\n## 6. Where the worker's time goes (cProfile, per batch of 100; profiling inflates all parts)\n")
        out("| part | ms per batch |\n|---|---:|")
        for k, v in prof["per_batch_ms"].items():
            out(f"| {k} | {v:.2f} |")
        out(f"| worker total | {prof['total_per_batch_ms']:.2f} |")
        caller_ratio = cost["CESHandler"] / floor
        parts = prof["per_batch_ms"]
        biggest = max(parts, key=parts.get)
        out("\n## Reading\n")
        out(f"- Caller cost: CESHandler is {caller_ratio:.2f}x the floor; target 2.0x: "
            + ("met." if caller_ratio <= 2.0 else f"missed by {caller_ratio / 2.0 - 1:.0%}."))  # fmt: skip
        if cpu_ratio is not None:
            verdict = "met." if cpu_ratio < 1.0 else f"missed by {cpu_ratio - 1:.0%}."
            out(
                f"- CPU per delivered event: {cpu_ratio:.2f}x watchtower; target below 1.0: {verdict} The figure "
                "moves by about 0.3 from run to run on this 2-core machine (the server shares the cores)."
            )
        out(
            f"- The worker's largest part is {biggest.split(' (')[0]} ({parts[biggest]:.2f} ms a batch under "
            "the profiler): the HTTP round trip through requests/urllib3 (about 0.4 ms of CPU a POST, section 3) "
            "costs more than building, encoding and signing 100 events together. The next step down is a leaner "
            "transport for the one POST the worker makes (http.client on a kept-alive connection), not the "
            "event code."
        )
        out(f"\nTotal run time: {time.time() - started:.0f} s.")
    finally:
        emu.terminate()
        if moto:
            moto[0].terminate()
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.path.insert(0, str(HERE.parent))
        run_child(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
