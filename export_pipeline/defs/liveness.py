"""Runs whose process died (``kill -9``, OOM, a reboot) are marked failed, not left blocking.

A run worker killed with SIGKILL never reports its end: Dagster keeps the run ``STARTED``. The
micro-batch schedule skips while a run is in flight and the run queue admits one run at a time,
so one crash would stop the pipeline for good. Each run therefore tags itself with its worker
(``host:pid``) when its resources start; :func:`reap_dead_runs` marks a started run failed when
its worker is on this host and no longer alive. Its data is safe either way: every batch commits
or rolls back as one DuckDB transaction (a killed transaction is discarded when the file reopens),
and the next run starts from the committed watermark.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

#: Run tag naming the process executing the run: ``<hostname>:<pid>``.
WORKER_TAG = "export_pipeline/worker"

_IN_FLIGHT = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def tag_worker(instance: dg.DagsterInstance | None, run: dg.DagsterRun | None) -> None:
    """Record the current process as the worker of ``run`` (once; a no-op outside a run)."""
    if instance is None or run is None or WORKER_TAG in run.tags:
        return
    instance.add_run_tags(run.run_id, {WORKER_TAG: this_worker()})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def worker_is_dead(run: dg.DagsterRun) -> bool:
    """True only when the run's worker is known, on this host, and gone."""
    host, _, pid = run.tags.get(WORKER_TAG, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not _alive(int(pid))


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark every started run whose worker died as failed; the ids of the runs marked."""
    reaped = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_IN_FLIGHT)):
        run = record.dagster_run
        if worker_is_dead(run):
            instance.report_run_failed(
                run,
                f"run worker {run.tags[WORKER_TAG]} is gone (killed or crashed); marked failed "
                "so the next run can start. Its uncommitted batches were rolled back; the next "
                "micro-batch resumes from the committed watermark.",
            )
            reaped.append(run.run_id)
    return reaped
