"""The background worker, by its public address: the parts live in ``ces_logging._delivery`` (see there)."""

from __future__ import annotations

from ._delivery.backoff import backoff_delay
from ._delivery.batching import Builder
from ._delivery.outcome import Event, Ledger, SummaryBuild
from ._delivery.stats import WorkerStats
from ._delivery.worker import WORKER_THREADS, Job, Worker

__all__ = [
    "WORKER_THREADS",
    "Builder",
    "Event",
    "Job",
    "Ledger",
    "SummaryBuild",
    "Worker",
    "WorkerStats",
    "backoff_delay",
]
