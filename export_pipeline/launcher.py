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
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export_pipeline import terminal
from export_pipeline.config import PROJECT_ROOT, Settings, ensure_dagster_home

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
    tags: dict[str, str] | None = None,
    datasets: Sequence[str] | None = None,
    log_level: str = "WARNING",
) -> tuple[bool, str, list[dict]]:
    """Run a job of the code location in this process, recorded in the Dagster instance as a run
    of workspace.yaml's code location, as the schedule's are (:func:`_execute_as_location_run`).

    Returns (success, run id, the ledger rows the run wrote).
    """
    from export_pipeline.defs.liveness import reap_dead_runs

    # The instance records every event; the console shows only what is asked for, and nothing
    # unless --verbose (a failure is reported by runreport, its stack logged).
    console = {"log_level": log_level if terminal.verbose() else "CRITICAL"}
    with dagster_instance() as instance:
        for dead in reap_dead_runs(instance):
            print(f"marked run {dead} failed: its process is gone (killed or crashed)")
        success, run_id = _execute_as_location_run(
            instance,
            job_name,
            run_config={"loggers": {"console": {"config": console}}},
            tags=tags or {},
            assets=list(datasets or []),
        )
    return success, run_id, ledger_for_run(run_id)


def _execute_as_location_run(
    instance: dg.DagsterInstance,
    job_name: str,
    *,
    run_config: dict[str, Any],
    tags: dict[str, str],
    assets: Sequence[str],
) -> tuple[bool, str]:
    """Create the run as the webserver creates a launched one, then execute it in this process.

    The UI places a run by its code-location origin (``remote_job_origin``): the Overview
    timeline drops a run without one, and the job's page, the Runs list and "Re-execute" use it.
    A run of ``execute_in_process`` has none. So the run is created with the origin of the code
    location workspace.yaml describes (the one `make ui` serves: location
    ``export_pipeline.definitions``, repository ``__repository__``; its ``.dagster/repository``
    label follows from it), built without starting a gRPC server, and with the job as that
    location's code server loads it (same snapshot, same job tags); it then runs here with the
    job's own executor (in-process), as a run worker would. Ctrl-C or SIGTERM mark it failed.

    Dagster's private API, confined to this function; checked against Dagster 1.13.27.
    """
    import dagster as dg
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths
    from dagster._grpc.server import LoadedRepositories

    (location,) = location_origins_from_yaml_paths([str(PROJECT_ROOT / "workspace.yaml")])
    # What that location's code server does to load it (dagster/_grpc/server.py).
    loaded = LoadedRepositories(
        location.loadable_target_origin,
        container_image=None,
        entry_point=["dagster"],
        container_context={},
        code_location_name=location.location_name,
    )
    ((repository_name, repository),) = loaded.reconstructables_by_name.items()
    load_data = repository.get_definition().repository_load_data
    job = repository.get_reconstructable_job(job_name).with_repository_load_data(load_data)
    asset_keys = [dg.AssetKey(name) for name in assets]
    job_def = job.get_definition()
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        tags={**job_def.run_tags, **tags},
        asset_selection=frozenset(asset_keys) if asset_keys else None,
        remote_job_origin=RemoteJobOrigin(
            RemoteRepositoryOrigin(location, repository_name), job_name
        ),
        job_code_origin=job.get_python_origin(),
        repository_load_data=load_data,
    )
    result = execute_run(job, run, instance)
    return result.success, run.run_id


def run_microbatch() -> tuple[bool, str, list[dict]]:
    """One micro-batch of every dataset through Dagster; (success, run id, ledger rows)."""
    return launch("export_microbatch_job")


def run_backfill_range(
    first: date, last: date, datasets: Sequence[str] | None, org_id: str | None
) -> tuple[bool, str, list[dict]]:
    """Re-extract UTC days first..last as one run of export_backfill_job, the days given as its
    run tags (as a UI user sets them in the job's Launchpad)."""
    from export_pipeline.defs.assets import BackfillWindow

    tags = BackfillWindow(first, last, org_id).tags()
    return launch("export_backfill_job", tags=tags, datasets=datasets, log_level="INFO")


def ledger_for_run(run_id: str) -> list[dict]:
    from export_pipeline.warehouse import fetch_dicts, open_warehouse

    with open_warehouse(Settings.from_env().warehouse_path) as con:
        return fetch_dicts(
            con,
            "SELECT * FROM _export_batches WHERE run_id = $run_id ORDER BY started_at",
            {"run_id": run_id},
        )
