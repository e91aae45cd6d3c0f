"""The HTTP stack comes where it is needed: not when a sending handler is built, not with the worker's lean POST.

Building a handler that will send checks its configuration on the app's thread (a cold start, a ``manage.py``
command), and that must not cost the ~100 ms of ``requests``, ``urllib3`` and the email package. It does load
the lean POST's ``socket`` and ``ssl``, a few milliseconds: a thread of ours never imports (forks.py).
The worker's POST (``transport.FastPost``) needs none of ``requests`` either; a query, the CLI, a session or
auth object of the caller's own import it at their first use, once, whatever the number of threads asking.

Behaviour, not time: the modules in ``sys.modules`` of a fresh interpreter, with real HTTP to the emulator.
The time is a row of ``make bench`` (the import row).
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
import requests

from ces_logging._service import client as client_module
from ces_logging._service import deadline, transport
from ces_logging._service.client import CESClient
from ces_logging.emulator import Emulator

from .conftest import AK, PROJECT, ROOT, SK, item, wait_for

# Never loaded by building a sending handler (``json``, ``socket`` and ``ssl`` are: by ``import ces_logging``,
# the multiprocessing hook of ``lifecycle`` and the client, which imports what the worker's POST needs).
NOT_AT_BUILD = ("requests", "urllib3", "http.client", "email", "charset_normalizer", "idna", "certifi")
# Never loaded by the worker's first delivery over the lean path to an http endpoint.
NOT_AT_LEAN_SEND = ("requests", "urllib3", "http.client", "email", "charset_normalizer", "idna", "certifi")


def run_fresh(code: str, timeout: float = 60) -> dict[str, Any]:
    """``code`` in a fresh interpreter without proxy variables (with one, the settings are ``requests``'
    to resolve); its last line of output read as a Python literal."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize(
    "credentials",
    [
        "ak='AKEXAMPLE', sk='SKEXAMPLE'",
        "ak='AKEXAMPLE', sk='SKEXAMPLE', security_token='STEXAMPLE'",
        "token='TOKENEXAMPLE'",
        "token_provider=Provider()",
    ],
)
def test_building_a_sending_handler_loads_no_http_stack(credentials: str) -> None:
    out = run_fresh(
        f"""
        import sys
        from ces_logging import CESHandler

        class Provider:
            def token(self): return "TOKENEXAMPLE"
            def invalidate(self): pass

        h = CESHandler(project_id="p", endpoint="http://127.0.0.1:9", {credentials}, handle_sigterm=False)
        assert h.client is not None and h.client.auth is not None
        print({{"loaded": sorted(m for m in {NOT_AT_BUILD!r} if m in sys.modules)}})
        h.close(grace_period=0)
        """
    )
    assert out["loaded"] == []


def test_construction_checks_stay_at_construction() -> None:
    """What is wrong is said when the handler is built, as before, and still without the HTTP stack."""
    out = run_fresh(
        f"""
        import sys
        from ces_logging import CESHandler, ConfigError
        said = []
        for kwargs in (dict(ak="AK"), dict(ak="A K", sk="S"), dict(token="a\\nb"), dict(ak="A", sk="S", token="T"),
                       dict(ak="A", sk="S", timeout=0), dict(ak="A", sk="S", endpoint="http://example.com"),
                       dict(ak="A", sk="S", endpoint="http://127.0.0.1:99999"),
                       dict(ak="A", sk="S", endpoint="http://127.0.0.1:port")):
            kwargs.setdefault("endpoint", "http://127.0.0.1:9")
            try:
                CESHandler(project_id="p", handle_sigterm=False, **kwargs)
            except ConfigError as e:
                said.append(type(e).__name__)
        print({{"said": said, "loaded": sorted(m for m in {NOT_AT_BUILD!r} if m in sys.modules)}})
        """
    )
    assert out["said"] == ["ConfigError"] * 8
    assert out["loaded"] == []


def test_the_lean_first_send_loads_no_requests_and_a_query_loads_it(emu_aksk: Emulator) -> None:
    """Expected: the worker's first delivery over ``FastPost`` (our own session, our signer, no proxy) loads
    no ``requests``: the POST is the standard library's sockets, the environment's settings are read without
    it when no proxy variable is set. The first query goes over ``requests``: it is imported then, and works."""
    out = run_fresh(
        f"""
        import logging, sys
        from ces_logging import CESHandler

        def loaded(names):
            return sorted(m for m in names if m in sys.modules)

        h = CESHandler(project_id={PROJECT!r}, endpoint={emu_aksk.url!r}, ak={AK!r}, sk={SK!r},
                       handle_sigterm=False, event_name="lazyHttp")
        out = {{"built": loaded({NOT_AT_BUILD!r})}}
        log = logging.getLogger("lazy.http")
        log.propagate = False
        log.addHandler(h)
        log.error("one record over the lean path")
        out["flushed"] = h.flush(timeout=20)
        s = h.stats
        out["stats"] = (s.received, s.sent, s.dropped, s.queued, s.folded)
        out["lean"] = h.client._fast is not None
        out["sent"] = loaded({NOT_AT_LEAN_SEND!r})
        page = h.client.event_detail("lazyHttp")
        out["queried"] = [e.detail.get("content") for e in page.event_info]
        out["after_query"] = loaded(("requests", "urllib3"))
        log.removeHandler(h)
        h.close(grace_period=0)
        print(out)
        """
    )
    assert out["built"] == []
    assert out["flushed"] is True and out["lean"] is True
    received, sent, dropped, queued, folded = out["stats"]
    assert sent + dropped + queued + folded == received and queued == 0
    assert received == sent == 1
    assert out["sent"] == []
    assert emu_aksk.count(PROJECT) == 1  # it reached the emulator, over real HTTP
    assert out["queried"] == ["one record over the lean path"]
    assert out["after_query"] == ["requests", "urllib3"]


def test_a_session_of_the_callers_own_is_used_as_given(emu: Emulator) -> None:
    s = requests.Session()
    with CESClient(PROJECT, endpoint=emu.url, session=s) as c:
        assert c.session is s and c._fast is None  # the hot POST goes over the caller's session
        assert c.report_events([item("givenSession")])
        assert c._adapter is s.get_adapter(emu.url)
        assert [e.event_id for e in c.event_detail("givenSession").event_info]
    assert emu.count(PROJECT) == 1


class _Slow:
    """A factory of ours made slow (a sleep releases the GIL): threads that race a first use overlap in it."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        time.sleep(0.05)
        return self.real(*args, **kwargs)


def _race(n: int, fn: Any) -> list[Any]:
    """``fn()`` in ``n`` threads let go at once; their answers (an exception fails the test)."""
    barrier = threading.Barrier(n)
    answers: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            answers[i] = fn()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    return answers


def test_threads_racing_the_first_query_build_one_session(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = _Slow(deadline.new_session)
    monkeypatch.setattr(deadline, "new_session", slow)
    with CESClient(PROJECT, endpoint=emu.url) as c:
        assert c._session is None  # nothing made at construction

        def first_query() -> int:
            c.list_events()  # over requests: the session is made at its first use
            return id(c.session)

        sessions = _race(6, first_query)
        assert slow.calls == 1
        assert len(set(sessions)) == 1 and sessions[0] == id(c.session)


def test_threads_racing_the_first_send_build_one_lean_transport(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = _Slow(transport.FastPost)
    monkeypatch.setattr(transport, "FastPost", slow)
    monkeypatch.setattr(client_module, "_no_proxy_configured", lambda: True)  # the lean path, whatever the machine
    with CESClient(PROJECT, endpoint=emu.url) as c:
        assert c._wire_state is None  # nothing resolved at construction
        times = itertools.count(int(time.time() * 1000))  # one time each: the same event twice is stored once

        def first_send() -> int:
            body = json.dumps([item("race", t=next(times))]).encode()
            status, _ = c.send_events_body(body)
            assert status == 201
            return id(c._fast)

        fasts = _race(6, first_send)
        assert slow.calls == 1
        assert len(set(fasts)) == 1 and c._fast is not None and fasts[0] == id(c._fast)
        assert c._session is None  # the lean path made no requests session
    assert emu.count(PROJECT) == 6


def test_the_build_lock_is_made_again_once_gevent_patched_threading(emu: Emulator) -> None:
    """A lock made before ``monkey.patch_all()`` is a real one, which a greenlet must not wait on: the client's
    build lock is made again with the patched ``threading``, and greenlets racing the first query share one
    session."""
    pytest.importorskip("gevent")
    out = run_fresh(
        f"""
        import ces_logging._service.client as cm
        c = cm.CESClient({PROJECT!r}, endpoint={emu.url!r})
        before = c._locks()
        from gevent import monkey
        monkey.patch_all()
        import gevent, threading
        after = c._locks()
        def first_query():
            c.list_events()
            return id(c.session)
        jobs = [gevent.spawn(first_query) for _ in range(5)]
        gevent.joinall(jobs, timeout=20)
        print({{"renewed": after is not before and c._locks() is after,
                "patched_kind": type(after.session) is type(threading.RLock()),
                "sessions": len({{j.value for j in jobs}}), "ok": all(j.successful() for j in jobs)}})
        """
    )
    assert out == {"renewed": True, "patched_kind": True, "sessions": 1, "ok": True}


@pytest.mark.parametrize(
    ("env", "verify"),
    [
        ({}, True),
        ({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, True),
        ({"CURL_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, True),
        ({"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, False),
        ({"CURL_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}, "/some/bundle.pem"),
        ({"HTTPS_PROXY": "http://user:pw@127.0.0.1:3128", "NO_PROXY": "example.com"}, True),
        ({"https_proxy": "socks5://127.0.0.1:1080"}, True),
        ({"no_proxy": "localhost"}, True),
    ],
)
def test_the_settings_read_without_requests_are_what_requests_reads(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], verify: bool | str
) -> None:
    """The environment's proxies and CA bundle, resolved at the first request: without ``requests`` when no
    proxy variable is set, and then the same answer as ``Session.merge_environment_settings``."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    endpoint = "https://ces.example.com"
    expected = requests.Session().merge_environment_settings(endpoint, {}, False, verify, None)
    with CESClient(PROJECT, endpoint=endpoint, ak=AK, sk=SK, verify=verify) as c:
        wire = c._wire()
        assert wire.proxies == expected["proxies"]
        assert wire.verify == expected["verify"]
        assert (c._session is None) is client_module._no_proxy_configured()  # requests only for a proxy
        assert (c._session is None) is not any(k.lower().endswith("_proxy") for k in env)


def test_the_signers_are_auth_objects_for_requests(emu_aksk: Emulator) -> None:
    """Plain callables now, not ``AuthBase`` subclasses: ``requests`` takes any ``auth(request) -> request``,
    per call and as a session's ``auth``."""
    from ces_logging import AKSKAuth, TokenAuth

    url = f"{emu_aksk.url}/V1.0/{PROJECT}/events"
    body = json.dumps([item("signedByRequests")]).encode()
    headers = {"Content-Type": "application/json"}
    r = requests.post(url, data=body, headers=headers, auth=AKSKAuth(AK, SK, project_id=PROJECT), timeout=10)
    assert r.status_code == 201, r.text
    with requests.Session() as s:
        s.auth = AKSKAuth(AK, SK, project_id=PROJECT)
        assert s.get(f"{emu_aksk.url}/V1.0/{PROJECT}/events", timeout=10).status_code == 200
        s.auth = TokenAuth("a-token")  # not what this emulator takes: refused, so the header was sent
        refused = s.post(url, data=body, headers=headers, timeout=10)
        assert refused.status_code == 401 and refused.request.headers["X-Auth-Token"] == "a-token"
    assert emu_aksk.count(PROJECT) == 1


def test_a_sigterm_during_another_clients_first_query_still_delivers(emu: Emulator) -> None:
    """The main thread is building another client's session (running ``requests``' module code, slowed here to
    4 s) when SIGTERM lands: our drain runs on that thread and waits for the worker, whose sends must need
    nothing the interrupted thread holds (the client's own locks, no import under them, its wire made when the
    worker started). Every record is stored and the process ends by SIGTERM, as it would have without us."""
    code = textwrap.dedent(
        f"""
        import logging, os, signal, sys, threading, time
        from ces_logging import CESHandler, CESClient
        h = CESHandler(project_id={PROJECT!r}, endpoint={emu.url!r}, ak={AK!r}, sk={SK!r}, grace_period=5.0)
        log = logging.getLogger("app"); log.propagate = False; log.addHandler(h)
        import importlib.abc, importlib.util
        real = importlib.util.find_spec("requests")
        class SlowLoader(importlib.abc.Loader):  # a slow first import of requests: its module's code, not the
            def create_module(self, spec):        # finding (a finder runs under the global import lock)
                return None
            def exec_module(self, module):
                time.sleep(4)
                real.loader.exec_module(module)
        class SlowFinder:
            def find_spec(self, name, path=None, target=None):
                if name != "requests":
                    return None
                return importlib.util.spec_from_file_location(
                    name, real.origin, loader=SlowLoader(),
                    submodule_search_locations=real.submodule_search_locations)
        sys.meta_path.insert(0, SlowFinder())
        def app_thread():
            time.sleep(0.3)
            for i in range(5):
                log.warning("record %d", i)
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=app_thread, daemon=True).start()
        other = CESClient({PROJECT!r}, endpoint={emu.url!r}, token="t")
        other.session  # the main thread, in another client's first session when SIGTERM lands
        time.sleep(10)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == -signal.SIGTERM, r.stderr
    assert wait_for(lambda: emu.count(PROJECT) == 5), r.stderr
    assert "not delivered" not in r.stderr


def test_the_worker_imports_nothing_of_its_own(emu: Emulator) -> None:
    """A thread of ours never imports a module for the first time (forks.py: a fork during that import leaves
    the child waiting for ever on its lock). What the first send, its retry and the close need is loaded by
    the time the handler is built; an import on the app's own thread (the first record starts the worker) is
    not ours to avoid. Every first import (``import``, ``importlib.import_module``, from C) asks the finders
    in ``sys.meta_path``: the first one notes its name and thread, and finds nothing. The 503 says when to
    come back as an HTTP date, which the send thread parses."""
    import email.utils

    emu.add_fault(count=1, status=503, retry_after=email.utils.formatdate(time.time() + 1, usegmt=True))
    out = run_fresh(
        f"""
        import logging, sys, threading
        from ces_logging import CESHandler
        h = CESHandler(project_id={PROJECT!r}, endpoint={emu.url!r}, ak={AK!r}, sk={SK!r}, handle_sigterm=False)
        log = logging.getLogger("w"); log.propagate = False; log.addHandler(h)
        off_main = []

        class Watch:
            @staticmethod
            def find_spec(name, path=None, target=None):
                if threading.current_thread() is not threading.main_thread():
                    off_main.append((name, threading.current_thread().name))
                return None

        sys.meta_path.insert(0, Watch)
        for i in range(3):
            log.error("record %d", i)
        ok = h.flush(timeout=20)  # a 503 with Retry-After in a second, the retry, then 201
        sent = h.stats.sent
        h.close()
        print({{"ok": ok, "sent": sent, "off_main": sorted(set(off_main))}})
        """
    )
    assert out["ok"] and out["sent"] == 3
    assert out["off_main"] == []
    assert emu.count(PROJECT) == 3
