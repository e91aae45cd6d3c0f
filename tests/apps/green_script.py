"""A plain monkey-patched script (gevent or eventlet, the first argument) that logs until it is stopped.

Prints "ready" once it logs; each record is named ``greenN``. After SIGTERM or SIGINT it must end as it would
without the handler (by the signal, or KeyboardInterrupt), with what it logged delivered by the drain. Prints
the signal mask of the process (SigBlk) after the handler started, so a test can check that nothing of ours
blocked a signal."""

import signal
import sys

# Ctrl-C's default action, as from a terminal: "ignored" is inherited across exec (a test runner's workers, a
# shell's background job), and Python then installs no KeyboardInterrupt.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

LIB = sys.argv[1]
if LIB == "gevent":
    from gevent import monkey

    monkey.patch_all()
else:
    import eventlet

    eventlet.monkey_patch()

import logging  # noqa: E402
import time  # noqa: E402

import ces_logging  # noqa: E402

h = ces_logging.configure("INFO", flush_interval=60, grace_period=5)
log = logging.getLogger("green")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
for i in range(n):
    log.warning("record %d", i, extra={"ces_event_name": f"green{i % 1000}"})
time.sleep(0.2)  # the worker (a greenlet) has started and waited
with open("/proc/self/status") as f:
    print(next(line for line in f if line.startswith("SigBlk")).strip(), flush=True)
print("ready", flush=True)
while True:
    time.sleep(0.05)
