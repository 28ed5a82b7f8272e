"""Runs of the code location's jobs, started in this process and recorded in the Dagster instance.

What the CLI (and the benchmark, and tests) use to run a job the way a schedule would: the same
job, the same instance under ``DAGSTER_HOME``, the run's ledger rows returned. No argument parsing
and no printing of results here: the commands in :mod:`export_pipeline.commands` do that.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from export_pipeline import terminal
from export_pipeline.config import Settings, ensure_dagster_home

if TYPE_CHECKING:
    import dagster as dg


def export_dagster_home() -> Path:
    """DAGSTER_HOME, absolute (:func:`config.ensure_dagster_home`: the project's ``dagster_home/``
    by default, a relative value under the project root), created, and exported for Dagster."""
    home = ensure_dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@contextmanager
def dagster_instance() -> Iterator[dg.DagsterInstance]:
    """The Dagster instance under DAGSTER_HOME, its storage created under an exclusive file lock.

    On a new DAGSTER_HOME the first open creates the sqlite tables; two commands started at once
    (a manual run during the first scheduled one) would both create them, and one would crash
    with ``table ... already exists``. Opening is serialised; using the instance is not.
    """
    home = export_dagster_home()
    import dagster as dg

    with open(home / ".instance.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            instance = dg.DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    with instance:
        yield instance


def launch(
    job_name: str,
    *,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    datasets: Sequence[str] | None = None,
    log_level: str = "WARNING",
) -> tuple[bool, str, list[dict]]:
    """Run a job of the code location in this process, recorded in the Dagster instance.

    Returns (success, run id, the ledger rows the run wrote).
    """
    import dagster as dg

    from export_pipeline.definitions import defs
    from export_pipeline.defs.liveness import reap_dead_runs

    with dagster_instance() as instance:
        for dead in reap_dead_runs(instance):
            print(f"marked run {dead} failed: its process is gone (killed or crashed)")
        job = defs.resolve_job_def(job_name)
        # The code location's label, as runs the webserver or daemon launch carry: without it
        # the UI's job page and Overview timeline do not list the run (workspace.yaml's module).
        repository = {".dagster/repository": "__repository__@export_pipeline.definitions"}
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            partition_key=partition_key,
            tags={**repository, **(tags or {})},
            asset_selection=[dg.AssetKey(name) for name in datasets] if datasets else None,
            # The instance records every event; the console shows only what is asked for, and
            # nothing unless --verbose (a failure is reported by runreport, its stack logged).
            run_config={
                "loggers": {
                    "console": {
                        "config": {"log_level": log_level if terminal.verbose() else "CRITICAL"}
                    }
                }
            },
        )
    return result.success, result.run_id, ledger_for_run(result.run_id)


def run_microbatch() -> tuple[bool, str, list[dict]]:
    """One micro-batch of every dataset through Dagster; (success, run id, ledger rows)."""
    today = datetime.now(UTC).date().isoformat()
    return launch("export_microbatch_job", partition_key=today)


def run_backfill_range(
    first: date, last: date, datasets: Sequence[str] | None, org_id: str | None
) -> tuple[bool, str, list[dict]]:
    """Re-extract UTC days first..last as one Dagster run over that partition range."""
    from export_pipeline.defs.assets import ORG_TAG

    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    if org_id:
        tags[ORG_TAG] = org_id
    return launch("export_backfill_job", tags=tags, datasets=datasets, log_level="INFO")


def ledger_for_run(run_id: str) -> list[dict]:
    from export_pipeline.warehouse import fetch_dicts, open_warehouse

    with open_warehouse(Settings.from_env().warehouse_path) as con:
        return fetch_dicts(
            con,
            "SELECT * FROM _export_batches WHERE run_id = $run_id ORDER BY started_at",
            {"run_id": run_id},
        )
