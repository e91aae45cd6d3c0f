"""Delivery: from the buffer to the service, every item counted once.

- ``worker``: the ``Worker``, its life cycle and the batcher thread's loop (the only public face);
- ``batching``: when a batch is due, taking records and building them (storm summaries ride along);
- ``pool``: the sender threads, which run jobs and know nothing of HTTP;
- ``sender``: one batch's attempts, throttle slots and retries;
- ``outcome``: an attempt's outcome (sent, rejected, auth, config, retry, bug) into counts, through a ``Ledger``;
- ``spool_state``: the spool and the outage, under one lock;
- ``stats``, ``hurry``, ``backoff``: the counters ``flush`` waits on, the deadline, the wait before a retry.

Nothing here imports the handler; the handler, ``lifecycle`` and the tests import ``ces_logging.worker``.
"""
