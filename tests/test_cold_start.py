"""Cold start: which modules ``import ces_logging`` loads, and when the heavy ones come.

Every process pays its imports when it starts (a ``manage.py`` command, a CLI call, a serverless cold start).
The HTTP stack (requests, urllib3, ssl, http.client), python-json-logger, and the modules of the typed model
(dataclasses, which loads inspect) come when first needed. These tests check behaviour (the set of modules in
``sys.modules``, in a fresh interpreter), not time: the time is a row of ``make bench``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT, run_python

# Never loaded by the import, nor by a configure() that finds nothing configured.
HEAVY = (
    "requests",
    "urllib3",
    "ssl",
    "http.client",
    "certifi",
    "charset_normalizer",
    "idna",
    "pythonjsonlogger",
    "email.utils",
    "dataclasses",
    "inspect",
    "multiprocessing",
    "subprocess",
    "socket",
    "asyncio",
    "sqlite3",
    "secrets",
    "hashlib",
    "random",
)

PROBE = """
import json, sys
def loaded():
    return sorted(m for m in {heavy!r} if m in sys.modules)
before = set(sys.modules)
import ces_logging
after_import = set(sys.modules)
out = {{"import": loaded()}}
{more}
print(json.dumps(out))
"""


def probe(more: str = "", **env: str) -> dict[str, list[str]]:
    r = run_python(PROBE.format(heavy=HEAVY, more=more), **env)
    assert r.returncode == 0, r.stderr
    out: dict[str, list[str]] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_import_loads_no_http_tls_json_logger_or_introspection() -> None:
    out = probe()
    assert out["import"] == []


# Small, but every process pays them: loaded by a handler that sends (its SIGTERM handler, context records),
# never by the import or an inactive configure(). (What the worker's threads use is imported by the module or
# when the handler is built, never by those threads: forks.py.)
FOR_A_SENDING_HANDLER = ("signal", "contextvars", "math")


def test_import_leaves_what_only_a_sending_handler_needs() -> None:
    more = f"""
out["small"] = sorted(m for m in {FOR_A_SENDING_HANDLER!r} if m in sys.modules)
import logging
ces_logging.configure()
logging.getLogger("app").error("counted, not sent")
out["inactive"] = sorted(m for m in {FOR_A_SENDING_HANDLER!r} if m in sys.modules)
"""
    out = probe(more)
    assert out["small"] == []
    assert out["inactive"] == []


# Not loaded by building a handler that sends either (a cold start builds one): the typed model's dataclasses
# come with ``handler.stats`` or a query, ``requests`` with a query or a proxy, configparser with a profile file,
# and multiprocessing (with subprocess and pickle) only with the app's own use of it (lifecycle's hook).
NOT_FOR_A_SENDING_HANDLER = (
    "requests",
    "urllib3",
    "http.client",
    "dataclasses",
    "inspect",
    "configparser",
    "multiprocessing",
    "subprocess",
    "pickle",
)


def test_building_a_sending_handler_loads_no_requests_dataclasses_or_multiprocessing() -> None:
    r = run_python(
        f"""
import json, sys
from ces_logging import CESHandler
h = CESHandler(project_id="p", endpoint="http://127.0.0.1:9", ak="ak", sk="sk", handle_sigterm=True)
built = sorted(m for m in {NOT_FOR_A_SENDING_HANDLER!r} if m in sys.modules)
h.stats
print(json.dumps({{"built": built, "stats": "dataclasses" in sys.modules}}))
h.close(grace_period=0)
"""
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["built"] == []
    assert out["stats"]  # the model loads when first asked for


def test_an_inactive_configure_loads_nothing_more() -> None:
    out = probe(
        """
import logging
ces_logging.configure()
out["configure"] = sorted(set(sys.modules) - after_import)
logging.getLogger("app").error("counted, not sent")
out["emit"] = sorted(set(sys.modules) - after_import)
"""
    )
    assert out["import"] == []
    assert out["configure"] == []
    assert out["emit"] == []


def test_the_lazily_exported_names_load_on_first_use() -> None:
    out = probe(
        """
names = ("AKSKAuth", "CESClient", "EventRecord", "HandlerStats", "CustomEvent", "Dimension", "TokenAuth",
         "IAMPasswordTokenProvider", "MetadataCredentialsProvider", "EventDetailPage", "ReportedEvent")
assert set(names) <= set(dir(ces_logging))
out["before_use"] = loaded()
client = ces_logging.CESClient
from ces_logging import *  # every name of __all__ resolves
from ces_logging.events import EventRecord  # the old addresses still work
from ces_logging.handler import HandlerStats
assert EventRecord is ces_logging.EventRecord and HandlerStats is ces_logging.HandlerStats
assert client.__name__ == "CESClient" and client.__module__ == "ces_logging._service.client"
out["after_use"] = loaded()
"""
    )
    assert out["before_use"] == []
    assert "dataclasses" in out["after_use"]
    assert not {"requests", "urllib3", "ssl"} & set(out["after_use"])  # the HTTP stack: at the first request


def test_json_content_loads_python_json_logger_with_its_first_record() -> None:
    """python-json-logger comes with the first JSON record, on the worker's side or the app's, never before."""
    out = probe(
        """
import logging
h = ces_logging.CESHandler(project_id="p1", endpoint="http://127.0.0.1:9", json_content=True,
                           handle_sigterm=False, grace_period=0)
out["built"] = sorted(m for m in ("pythonjsonlogger",) if m in sys.modules)
lg = logging.getLogger("j"); lg.propagate = False; lg.addHandler(h)
lg.error("one")
out["first_record"] = sorted(m for m in ("pythonjsonlogger",) if m in sys.modules)
h.close(grace_period=0)
"""
    )
    assert out["built"] == []
    assert out["first_record"] == ["pythonjsonlogger"]


def test_cli_help_loads_no_http_stack() -> None:
    code = (
        "import runpy, sys\n"
        "sys.argv = ['ces-logging', '--help']\n"
        "try:\n"
        "    runpy.run_module('ces_logging', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage: ces-logging" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "LOADED []"
