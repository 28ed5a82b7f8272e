"""Crash injection for the reliability tests: ``EXPORT_CRASH_AT`` names a point to die at.

The pipeline calls :func:`crash_point` at each stage boundary and inside each long stage. When the
environment variable ``EXPORT_CRASH_AT`` names that point, the process kills itself with SIGKILL:
no ``finally``, no rollback, no flush, exactly what an OOM killer or a pulled plug does. Unset (the
normal case) it costs one dictionary lookup.

Format: ``point[:dataset][@n]``, e.g. ``load``, ``load:company_entities``, ``extract@3`` (the third
time the point is reached in this process). The points are listed in :data:`CRASH_POINTS`.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Mapping

from export_pipeline.config import ConfigError

CRASH_ENV = "EXPORT_CRASH_AT"

#: Every point the pipeline can be killed at, in the order a run reaches them.
CRASH_POINTS = {
    "extract": "inside extraction: a record batch has been staged, more are coming",
    "validated": "every row is extracted, validated and staged; nothing applied yet",
    "load": "inside the DuckDB transaction: rows and dead letters applied, not committed",
    "committed": "the DuckDB transaction committed; the lake has not received the batch",
    "lake.writing": "inside the Delta commit: rows streaming into new data files, not committed",
    "lake.committed": "the Delta commit is done; the warehouse has not forgotten the change yet",
    "backfill.day": "inside a backfill: one day committed, more days to go",
    "repair.bucket": "inside a reconciliation: one day's repair batch committed, more to go",
}

_hits: Counter[str] = Counter()


def _parse(spec: str) -> tuple[str, str | None, int]:
    point, _, nth = spec.partition("@")
    point, _, dataset = point.partition(":")
    return point.strip(), (dataset.strip() or None), int(nth) if nth.strip() else 1


def crash_point(point: str, dataset: str | None = None) -> None:
    """Die here with SIGKILL if ``EXPORT_CRASH_AT`` names this point (and dataset, if given)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    if point not in CRASH_POINTS:
        raise ValueError(f"unknown crash point {point!r}")
    want, want_dataset, nth = _parse(spec)
    if want != point or (want_dataset is not None and want_dataset != dataset):
        return
    _hits[spec] += 1
    if _hits[spec] == nth:
        os.kill(os.getpid(), signal.SIGKILL)


def check_crash_setting(env: Mapping[str, str] = os.environ) -> None:
    """Reject a misspelt ``EXPORT_CRASH_AT`` at start-up, naming the known points."""
    spec = env.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition("@")
    point = point.partition(":")[0].strip()
    if point not in CRASH_POINTS or not (nth.strip() or "1").isdigit():
        raise ConfigError(
            f"{CRASH_ENV}={spec!r}: unknown point {point!r}; known: {', '.join(CRASH_POINTS)}"
        )
