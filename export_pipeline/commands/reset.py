"""`export-pipeline reset`: start over, as after a fresh clone.

Removes what the pipeline built for this project: the data directory's contents (warehouse, lake,
analytics catalog, spill and log files), the Dagster history of this code location's jobs and
assets (runs, materializations, check results; the instance's ``dagster.yaml`` stays), and the
embedded source's tables. Never touches the database of ``EXPORT_SOURCE_DSN``: that source is
someone else's. Asks for ``--yes``: without it, lists what would go and removes nothing.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from export_pipeline.config import PROJECT_ROOT, Settings

#: Entries of a data directory that show it is the pipeline's (anything else there stays).
_PIPELINE_MARKERS = ("warehouse.duckdb", "lake", "analytics.duckdb")


def register(sub: argparse._SubParsersAction) -> None:
    reset = sub.add_parser(
        "reset",
        help="start over: remove the warehouse, lake, Dagster run history and embedded source",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    reset.add_argument("--yes", action="store_true", help="really remove (else only list)")
    reset.set_defaults(func=cmd_reset)


def _data_entries(data_dir: Path) -> list[Path]:
    """The data directory's entries to remove; refuses a directory that is not the pipeline's."""
    from export_pipeline.commands.common import CliError

    if not data_dir.is_dir():
        return []
    for dangerous in (Path("/"), Path.home(), PROJECT_ROOT):
        if data_dir == dangerous or dangerous.is_relative_to(data_dir):
            raise CliError(f"EXPORT_DATA_DIR={data_dir} holds the project or more: not removing it")
    entries = sorted(p for p in data_dir.iterdir() if p.name != ".gitkeep")
    strangers = [p for p in entries if p.name != "logs"]
    if strangers and not any((data_dir / m).exists() for m in _PIPELINE_MARKERS):
        raise CliError(
            f"{data_dir} holds no warehouse, lake or analytics catalog: not the pipeline's "
            "data directory, nothing removed"
        )
    return entries


def _check_warehouse_free(settings: Settings) -> None:
    """Fail, naming the file, while a run (or an analyst) holds the warehouse open."""
    import duckdb

    from export_pipeline.commands.common import CliError

    path = settings.warehouse_path
    if not path.exists():
        return
    try:
        duckdb.connect(str(path)).close()
    except duckdb.IOException:
        raise CliError(
            f"{path} is open in another process (a run, `make ui`, an analyst): stop it first"
        ) from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _dagster_history() -> tuple[list[str], list]:
    """This code location's run ids and asset keys in the instance."""
    from export_pipeline.definitions import defs
    from export_pipeline.launcher import dagster_instance

    jobs = {job.name for job in defs.resolve_all_job_defs()}
    keys = list(defs.resolve_asset_graph().get_all_asset_keys())
    with dagster_instance() as instance:
        runs = [
            r.dagster_run.run_id
            for r in instance.get_run_records()
            if r.dagster_run.job_name in jobs
        ]
    return runs, keys


def _wipe_dagster(runs: list[str], keys: list) -> None:
    from export_pipeline.launcher import dagster_instance

    with dagster_instance() as instance:
        for run_id in runs:
            instance.delete_run(run_id)
        instance.wipe_assets(keys)


def _embedded_source_tables(settings: Settings) -> list[str]:
    """Schemas of the embedded source to drop (none when a source DSN is configured)."""
    from export_pipeline.source import default_data_dir

    if settings.source_dsn or not default_data_dir().exists():
        return []
    return ["ops", "entities"]


def _drop_embedded_source() -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from export_pipeline.source import embedded_postgres, sqlalchemy_url

    engine = create_engine(sqlalchemy_url(embedded_postgres()), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS ops CASCADE"))
            conn.execute(text("DROP SCHEMA IF EXISTS entities CASCADE"))
    finally:
        engine.dispose()


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline.commands.common import CliError
    from export_pipeline.launcher import export_dagster_home
    from export_pipeline.source import default_data_dir

    entries = _data_entries(settings.data_dir)
    _check_warehouse_free(settings)
    runs, keys = _dagster_history()
    schemas = _embedded_source_tables(settings)
    verb = "removing" if args.yes else "would remove"
    print(f"{verb}:")
    print(f"  data dir {settings.data_dir}: {', '.join(p.name for p in entries) or 'empty'}")
    print(f"  Dagster history ({export_dagster_home()}): {len(runs)} run(s), {len(keys)} asset(s)")
    if settings.source_dsn:
        print("  source: EXPORT_SOURCE_DSN is set; its database is never touched")
    elif schemas:
        print(f"  embedded source ({default_data_dir()}): schemas {', '.join(schemas)}")
    else:
        print("  embedded source: none yet")
    if not args.yes:
        raise CliError("nothing removed: run `export-pipeline reset --yes` to remove the above")
    for path in entries:
        _remove(path)
    _wipe_dagster(runs, keys)
    if schemas:
        _drop_embedded_source()
    print("reset done: `make demo` (or `export-pipeline source seed` and `run`) starts afresh")
    return 0
