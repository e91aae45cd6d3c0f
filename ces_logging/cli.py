"""``ces-logging``: try Cloud Eye events from a terminal, check a set-up, look at events.

Exit codes: 0 fine, 1 the service or the set-up said no, 2 usage. Expected failures are one line on stderr,
never a traceback; no secret is ever printed (only where credentials came from).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import urlsplit

from . import __version__
from .config import REGIONS, is_loopback
from .errors import CESAuthError, CESError, CESTransportError, ConfigError
from .events import EVENT_NAME, EVENT_TYPE_CUSTOM, LEVELS, STATES, SUB_EVENT_TYPES, now_ms

if TYPE_CHECKING:  # the HTTP stack loads for a command that talks to the service, not for --help
    from ._service.client import CESClient
    from .model import EventRecord

EXAMPLES = {
    "emulator": "ces-logging emulator --port 8765 --db ces.db",
    "send": 'ces-logging send --name diskFull --level Major --content "disk /data 95% full" --dimension host=web1',
    "events": "ces-logging events diskFull --since 1h --level Major",
    "tail": "ces-logging tail diskFull --interval 5",
    "doctor": "ces-logging doctor",
}
_COLOURS = {"Critical": "\033[1;31m", "Major": "\033[31m", "Minor": "\033[33m", "Info": "\033[32m"}
SKEW_WARN_S = 5 * 60


class UsageError(Exception):
    pass


def _fail(message: str, code: int = 1) -> NoReturn:
    sys.stderr.write(f"ces-logging: {message}\n")
    raise SystemExit(code)


def parse_time(value: str, now: datetime | None = None) -> int:
    """``1h``, ``30m``, ``2d``, ``45s`` ago, an ISO time (local when it has no zone) or ms since the epoch."""
    now = now or datetime.now(timezone.utc)
    v = value.strip()
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if len(v) > 1 and v[-1] in units and v[:-1].replace(".", "", 1).isdigit():
        return int((now - timedelta(**{units[v[-1]]: float(v[:-1])})).timestamp() * 1000)
    if v.isdigit():
        return int(v)
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read time {value!r}: use 1h, 30m, 2d, an ISO time or ms since epoch") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time, as a person means it
    return int(dt.timestamp() * 1000)


def _client(args: argparse.Namespace) -> CESClient:
    from ._service.client import CESClient

    return CESClient(
        args.project_id,
        region=args.region,
        endpoint=args.endpoint,
        timeout=args.timeout,
        allow_insecure=args.allow_insecure,
    )


def _check_name(args: argparse.Namespace) -> None:
    """A query for a name the service cannot hold is a usage error, found before any request: custom
    event names follow the report rule; system event names only have the documented length."""
    if args.type == EVENT_TYPE_CUSTOM:
        why = EVENT_NAME.check(args.name)
    else:
        why = None if 1 <= len(args.name) <= 64 else "must be 1 to 64 characters"
    if why:
        raise UsageError(f"event name {args.name!r}: {why}")


# --- emulator ------------------------------------------------------------------------------------------------


def cmd_emulator(args: argparse.Namespace) -> int:
    import sqlite3

    from .emulator import Emulator

    if bool(args.ak) != bool(args.sk):
        raise UsageError("--ak and --sk go together: the emulator needs both to verify signatures")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        emu = Emulator(
            args.host,
            args.port,
            args.db,
            ak=args.ak,
            sk=args.sk,
            security_token=args.security_token,
            token=args.token,
            metadata=args.metadata,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            verbose=args.verbose,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
        )
    except sqlite3.Error as e:
        _fail(f"cannot open the database {args.db!r}: {e} (is its folder there and writable?)")
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            _fail(f"port {args.port} on {args.host} is in use: pick another with --port (0 picks a free one)")
        if e.filename is not None or isinstance(e, FileNotFoundError | PermissionError):
            _fail(f"cannot read {e.filename or 'a TLS file'}: {e.strerror or e}")
        _fail(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}")

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"CES emulator serving {emu.url}  (db: {args.db})", flush=True)
    schemes = []
    if args.ak:
        schemes.append("AK/SK signatures" + (" with a security token" if args.security_token else ""))
    if args.token:
        schemes.append("X-Auth-Token")
    if args.metadata:
        schemes.append(f"temporary keys from the metadata stand-in (CES_METADATA_URL={emu.local_url})")
    if schemes:
        print(f"authentication: {' or '.join(schemes)} required (admin routes too)", flush=True)
    else:
        print("authentication: none (open, for local development)", flush=True)
    if emu.exposure_warning:
        sys.stderr.write(emu.exposure_warning + "\n")
        sys.stderr.flush()
    print(f"try: CES_ENDPOINT={emu.local_url} CES_PROJECT_ID=demo ces-logging send --name hello --content hi",
          flush=True)  # fmt: skip
    print(f"console: {emu.local_url}/  (open it in a browser: the events, newest first)", flush=True)
    if emu.local_url.startswith("http://") and not is_loopback(urlsplit(emu.local_url).hostname or ""):
        print("(plain http to another host: the client refuses it unless allow_insecure=True; "
              "serve https with --tls-cert)", flush=True)  # fmt: skip
    elif args.host in ("0.0.0.0", "::", ""):
        scheme, port = emu.local_url.split("://")[0], emu.local_url.rsplit(":", 1)[1]
        note = " (plain http to another host: clients there need allow_insecure=True)" if scheme == "http" else ""
        print(f"from other machines: {scheme}://<this machine's address>:{port}{note}", flush=True)
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        print("emulator stopped", flush=True)
    return 0


# --- send ------------------------------------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    dims = []
    for d in args.dimension or []:
        name, sep, value = d.partition("=")
        if not sep:
            raise UsageError(f"--dimension {d!r}: use name=value")
        dims.append({"name": name, "value": value})
    state = args.state or {"Critical": "incident", "Major": "incident", "Minor": "warning"}.get(args.level, "normal")
    detail: dict[str, Any] = {
        "content": args.content,
        "event_level": args.level,
        "event_state": state,
        "event_type": "EVENT.CUSTOM",
        "sub_event_type": "SUB_EVENT.CUSTOM",
    }
    for key in ("resource_id", "resource_name", "event_user", "group_id"):
        if getattr(args, key):
            detail[key] = getattr(args, key)
    if dims:
        detail["dimensions"] = dims
    event = {"event_name": args.name, "event_source": args.source, "time": now_ms(), "detail": detail}
    with _client(args) as c:
        out = c.report_events([event])
    print(out[0].event_id)
    return 0


# --- events and tail ---------------------------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    f: dict[str, Any] = {
        "event_type": args.type,
        "sub_event_type": args.sub_type,
        "event_level": args.level,
        "event_state": args.state,
        "event_source": args.source,
        "event_user": args.user,
    }
    return {k: v for k, v in f.items() if v is not None}


class Table:
    """Rows of events for a person: local time, level (coloured on a terminal), state, source, resource,
    content cut to the terminal's width."""

    def __init__(self, out: TextIO, colour: bool, width: int) -> None:
        self.out = out
        self.colour = colour
        self.width = width
        self.header_done = False

    def row(self, e: EventRecord) -> None:
        if not self.header_done:
            self.out.write(f"{'time':<23}  {'level':<8} {'state':<8} {'source':<18} {'resource':<20} content\n")
            self.header_done = True
        t = datetime.fromtimestamp(e.time / 1000).isoformat(sep=" ", timespec="milliseconds")
        level = f"{e.level:<8}"
        if self.colour and e.level in _COLOURS:
            level = f"{_COLOURS[e.level]}{level}\033[0m"
        resource = str(e.detail.get("resource_name") or e.detail.get("resource_id") or "")[:20]
        head = f"{t:<23}  {level} {e.state:<8} {e.event_source[:18]:<18} {resource:<20} "
        content = " ".join(e.content.split())  # one line a row
        room = max(20, self.width - (len(head) - (len(level) - 8)))
        if self.width and len(content) > room:  # cut to the terminal's width; piped output keeps it all
            content = content[: room - 1] + "…"
        self.out.write(head + content + "\n")
        self.out.flush()


def _emit(args: argparse.Namespace, table: Table) -> Callable[[EventRecord], None]:
    def emit(e: EventRecord) -> None:
        if args.json:
            d = {"event_id": e.event_id, "event_name": e.event_name, "event_source": e.event_source,
                 "time": e.time, "detail": e.detail}  # fmt: skip
            sys.stdout.write(json.dumps(d, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            table.row(e)

    return emit


def _table() -> Table:
    tty = sys.stdout.isatty()
    return Table(sys.stdout, tty and not os.environ.get("NO_COLOR"), shutil.get_terminal_size().columns if tty else 0)


def cmd_events(args: argparse.Namespace) -> int:
    _check_name(args)
    start = parse_time(args.since) if args.since else None
    end = parse_time(args.until) if args.until else None
    emit = _emit(args, _table())
    progress = sys.stderr.isatty()
    shown = offset = pages = 0
    with _client(args) as c:
        while args.limit is None or shown < args.limit:
            want = 100 if args.limit is None else min(100, args.limit - shown)
            page = c.event_detail(args.name, start_time=start, end_time=end, start=offset, limit=want, **_filters(args))
            pages += 1
            for e in page.event_info:
                emit(e)
            shown += len(page.event_info)
            offset += len(page.event_info)
            goal = page.total if args.limit is None else min(args.limit, page.total)
            done = not page.event_info or shown >= goal
            if pages > 1 or not done:  # more than one page: say how far along it is
                if progress:  # a terminal: one line, rewritten in place
                    sys.stderr.write(f"\r{shown}/{goal} events" + ("\n" if done else ""))
                    sys.stderr.flush()
                elif done:  # a pipe or a file: the count once, no carriage returns in a log
                    sys.stderr.write(f"{shown}/{goal} events\n")
            if done:
                break
    if shown == 0 and not args.json:
        sys.stderr.write(f"no {args.name} events match\n")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    _check_name(args)
    emit = _emit(args, _table())
    since = parse_time(args.since) if args.since else now_ms()
    at_since: set[str] = set()  # ids already shown whose time is ``since`` (``from`` is inclusive)
    count = 0
    with _client(args) as c:
        try:
            while True:
                new = [e for e in c.iter_event_detail(args.name, start_time=since, **_filters(args))
                       if not (e.time == since and e.event_id in at_since)]  # fmt: skip
                for e in sorted(new, key=lambda e: (e.time, e.event_id)):
                    emit(e)
                    if e.time > since:
                        since, at_since = e.time, set()
                    at_since.add(e.event_id)
                    count += 1
                    if args.count and count >= args.count:
                        return 0
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


# --- doctor -------------------------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    problems: list[str] = []

    def line(ok: bool | None, what: str, detail: str = "") -> None:
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
        print(f"[{mark}] {what}" + (f": {detail}" if detail else ""))

    try:
        c = _client(args)
    except ConfigError as e:
        line(False, "configuration", str(e))
        return 1
    line(True, "endpoint", c.endpoint)
    line(True, "project id", c.project_id)
    line(True, "credentials", c.auth_source)
    t0 = time.time()
    try:
        resp = c.probe()
        reached, status, headers = True, resp.status_code, resp.headers
    except CESTransportError as e:
        reached, status, headers = False, None, None
        line(False, "reachability", f"{e}")
        problems.append("check the endpoint and that this machine can reach it (proxy, firewall, DNS)")
    except CESError as e:
        reached, status, headers = True, e.status, None
        if isinstance(e, CESAuthError):
            line(False, "authentication", str(e))
            problems.append(
                "the credentials were refused: check the AK/SK pair (or token) and that the clock is right; "
                "an AK is locked for 5 minutes after 5 failures in a row"
            )
        else:
            line(False, "query", str(e))
            problems.append("the service refused a harmless query: check the project id and the endpoint")
    rtt = (time.time() - t0) * 1000
    if reached and status is not None and status < 400:
        line(True, "reachability", f"HTTP {status} in {rtt:.0f} ms")
        line(True, "authentication", "accepted" if c.auth is not None else "none sent (open endpoint)")
    server = c.server_time(headers)
    skew = None if server is None else time.time() - server  # + : this machine is ahead
    if skew is not None:
        ok = abs(skew) <= SKEW_WARN_S
        line(ok if ok else None, "clock", f"{skew:+.0f} s against the server's Date header")
        if not ok:
            problems.append(
                f"this machine's clock is {abs(skew) / 60:.0f} min off the server's: fix it (NTP); "
                "signatures fail at 15 min"
            )
    line(True, "handler defaults", _handler_defaults())
    if problems:
        print()
        for p in problems:
            print(f"fix: {p}")
        return 1
    return 0


def _handler_defaults() -> str:
    from .options import Options

    try:
        d = Options().with_env()  # what a handler given no options would use here
    except ConfigError:  # said by the checks above
        d = Options()
    return (
        f"batch {d.batch_size}, every {d.flush_interval:g} s, queue {d.queue_size}, "
        f"grace {d.grace_period:g} s, timeout {d.timeout:g} s, event source {d.event_source}"
    )


# --- parser ----------------------------------------------------------------------------------------------------


def _global_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    g = p.add_argument_group("connection (before or after the command)")
    g.add_argument("--endpoint", default=d(None), help="service URL (default: CES_ENDPOINT, or the region's)")
    g.add_argument(
        "--region", default=d(None), help=f"region, e.g. cn-north-4 (default: CES_REGION); one of {len(REGIONS)} known"
    )
    g.add_argument(
        "--project-id", default=d(None), help="project id (default: CES_PROJECT_ID / HUAWEICLOUD_SDK_PROJECT_ID)"
    )
    g.add_argument("--timeout", type=float, default=d(10.0), help="seconds per request (default 10)")
    g.add_argument(
        "--allow-insecure",
        action="store_true",
        default=d(False),
        help="allow a plain http:// endpoint on another host (credentials travel unencrypted)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ces-logging",
        description="Huawei Cloud Eye custom events from the terminal.",
        epilog="Settings not given here come from CES_ENDPOINT, CES_REGION, CES_PROJECT_ID and the credential "
        "chain (HUAWEICLOUD_SDK_AK/_SK, CES_AUTH_TOKEN, ~/.huaweicloud/credentials, ECS metadata).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # The global options work before the command (``ces-logging --region x send``) and after it: the main
    # parser holds the defaults, and each command's copy defaults to SUPPRESS so it never overwrites them.
    _global_options(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, parents: Sequence[argparse.ArgumentParser] = (common,)) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help_, description=help_, parents=list(parents), epilog=f"example: {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip

    e = add("emulator", "run a local Cloud Eye event service", parents=())
    e.add_argument("--host", default="127.0.0.1")
    e.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    e.add_argument("--db", default=":memory:", help="SQLite file (default: in memory)")
    e.add_argument("--ak", help="require AK/SK signatures with this access key ...")
    e.add_argument("--sk", help="... and this secret key")
    e.add_argument("--security-token", help="make --ak a temporary key that needs this token")
    e.add_argument("--token", help="accept X-Auth-Token with this value")
    e.add_argument("--metadata", action="store_true", help="also serve a stand-in ECS metadata service")
    e.add_argument("--tls-cert", help="serve https with this certificate (PEM) ...")
    e.add_argument("--tls-key", help="... and this private key (PEM)")
    e.add_argument("--verbose", action="store_true", help="log every request to stderr")
    e.add_argument("--max-connections", type=int, default=256, help="served at once; 503 beyond (default 256)")
    e.add_argument("--idle-timeout", type=float, default=60.0, help="close a connection idle this long (s)")
    e.set_defaults(func=cmd_emulator)

    s = add("send", "report one custom event and print its event_id")
    s.add_argument("--name", required=True, help="event name (a letter, then letters, digits, _)")
    s.add_argument("--level", choices=LEVELS, default="Info")
    s.add_argument("--state", choices=STATES, help="default: from the level")
    s.add_argument("--content", default="", help="what happened (up to 4096 characters)")
    s.add_argument("--source", default="app.cli", help="service.item (default app.cli)")
    s.add_argument("--resource-id")
    s.add_argument("--resource-name")
    s.add_argument("--user", dest="event_user")
    s.add_argument("--group-id")
    s.add_argument("--dimension", action="append", metavar="NAME=VALUE", help="up to 4")
    s.set_defaults(func=cmd_send)

    for name, help_ in (("events", "list an event name's occurrences, newest first"),
                        ("tail", "follow an event name's new occurrences until Ctrl-C")):  # fmt: skip
        q = add(name, help_)
        q.add_argument("name", help="event name")
        q.add_argument("--type", default="EVENT.CUSTOM", choices=("EVENT.CUSTOM", "EVENT.SYS"))
        q.add_argument("--sub-type", choices=SUB_EVENT_TYPES)
        q.add_argument("--level", choices=LEVELS)
        q.add_argument("--state", choices=STATES)
        q.add_argument("--source")
        q.add_argument("--user")
        q.add_argument("--since", help="1h, 30m, 2d, an ISO time or ms")
        q.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        if name == "events":
            q.add_argument("--until", help="as --since")
            q.add_argument("--limit", type=int, help="at most this many (default: all)")
            q.set_defaults(func=cmd_events)
        else:
            q.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
            q.add_argument("--count", type=int, help="stop after this many events")
            q.set_defaults(func=cmd_tail)

    d = add("doctor", "check endpoint, credentials, reachability and clock")
    d.set_defaults(func=cmd_doctor)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except UsageError as e:
        _fail(str(e), 2)
    except ConfigError as e:  # the set-up said no (README: exit 1), not a mistake in the command line
        _fail(str(e), 1)
    except CESError as e:
        _fail(str(e), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
