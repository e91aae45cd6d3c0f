"""Quickstart: log at every level, read the events back from Cloud Eye (here: the local emulator).

Run with `make demo`. Against the real service, drop the emulator and set CES_REGION, CES_PROJECT_ID and
HUAWEICLOUD_SDK_AK / HUAWEICLOUD_SDK_SK instead.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import datetime
from pathlib import Path

import ces_logging
from ces_logging.emulator import Emulator

PROJECT = "0123456789abcdef0123456789abcdef"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Emulator(db=str(Path(tmp) / "ces.db")) as emu:
        print(f"emulator: {emu.url} (open, no credentials needed)\n")

        # The one line an app needs (endpoint and project usually come from CES_ENDPOINT / CES_PROJECT_ID):
        handler = ces_logging.configure(level="INFO", endpoint=emu.url, project_id=PROJECT, event_source="shop.api")

        log = logging.getLogger("shop.checkout")
        # A real app's records are apart in time; the pauses make "newest first" visible in the table below
        # (four records in one millisecond would share a time and come back in no telling order).
        log.info("order %s placed", "A-1001")
        time.sleep(0.05)
        log.warning("payment provider slow: %d ms", 2300)
        time.sleep(0.05)
        log.error("payment failed for order %s", "A-1002", extra={"ces": {"resource_id": "order-A-1002"}})
        time.sleep(0.05)
        try:
            raise ZeroDivisionError("division by zero in basket total")
        except ZeroDivisionError:
            log.critical("checkout crashed", exc_info=True)

        delivered = handler.flush(timeout=10)
        print(f"flushed: {delivered}; stats: {handler.stats}\n")

        rows = list(handler.client.iter_event_detail("shop_checkout"))
        print(f"{'time':<23} {'level':<8} {'state':<9} {'name':<14} {'source':<9} content")
        for e in rows:
            t = datetime.fromtimestamp(e.time / 1000).isoformat(sep=" ", timespec="milliseconds")
            first_line = e.content.splitlines()[0] if e.content else ""
            print(f"{t:<23} {e.level:<8} {e.state:<9} {e.event_name:<14} {e.event_source:<9} {first_line}")
        print("\nnewest first. To browse events in a web page: ces-logging emulator, then open the URL it prints")
        handler.close()
        levels = {e.level for e in rows}
        missing = {"Critical", "Major", "Minor", "Info"} - levels
        if missing:
            raise SystemExit(f"demo failed: no {', '.join(sorted(missing))} events came back")


if __name__ == "__main__":
    main()
