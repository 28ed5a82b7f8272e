"""`export-pipeline lake ...`: the Delta lake's maintenance and inspection commands."""

from __future__ import annotations

import argparse
import json

from export_pipeline.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    from export_pipeline.commands.common import dataset_name

    group = sub.add_parser("lake", help="the Delta lake: sync, check, optimize, vacuum, history")
    lake_sub = group.add_subparsers(dest="lake_command", required=True)
    sync = lake_sub.add_parser("sync", help="apply the warehouse changes the lake lacks")
    sync.set_defaults(func=cmd_lake_sync)
    check = lake_sub.add_parser(
        "check", help="compare each lake table with its warehouse table (count and checksum)"
    )
    check.set_defaults(func=cmd_lake_check)
    optimize = lake_sub.add_parser(
        "optimize", help="compact small files (also the lake_maintenance_job's first step)"
    )
    optimize.set_defaults(func=cmd_lake_optimize)
    vacuum = lake_sub.add_parser(
        "vacuum", help="delete files no version younger than the retention needs"
    )
    vacuum.add_argument(
        "--retention-hours",
        type=int,
        help="override EXPORT_LAKE_RETENTION_HOURS (default 168); versions pinned by an "
        "analysts' catalog on disk are always kept",
    )
    vacuum.set_defaults(func=cmd_lake_vacuum)
    history = lake_sub.add_parser("history", help="a dataset's Delta commits, newest first")
    history.add_argument("dataset", type=dataset_name)
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(func=cmd_lake_history)


def _each(settings: Settings, work) -> int:  # noqa: ANN001
    """Run ``work(con, lake, ds)`` per dataset holding the warehouse's write lock."""
    from export_pipeline import lake
    from export_pipeline.commands.common import CliError
    from export_pipeline.contract import DATASETS
    from export_pipeline.warehouse import open_warehouse

    if not settings.warehouse_path.exists():
        raise CliError(f"no warehouse at {settings.warehouse_path} yet: run `export-pipeline run`")
    target = lake.lake_for(settings)
    failures = 0
    # The warehouse's write lock makes this process the lake's only writer meanwhile.
    with open_warehouse(
        settings.warehouse_path, lock_timeout_seconds=settings.lock_timeout_seconds
    ) as con:
        for ds in DATASETS:
            failures += 0 if work(con, target, ds) else 1
    return failures


def cmd_lake_sync(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline import analytics, lake

    def work(con, target, ds) -> bool:  # noqa: ANN001
        for r in lake.sync(con, target, (ds,)):
            print(f"{ds.name:<24} version {r.version}: {r.kind or 'nothing'} of {r.rows:,} rows")
        return True

    _each(settings, work)
    analytics.refresh_catalog(settings.data_dir, lake=lake.lake_for(settings))
    return 0


def cmd_lake_check(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline import lake
    from export_pipeline.commands.common import CliError

    def work(con, target, ds) -> bool:  # noqa: ANN001
        c = lake.check_table(con, target, ds)
        print(
            f"{ds.name:<24} version {c.version}: lake {c.lake_rows:,} rows, warehouse "
            f"{c.warehouse_rows:,} rows, checksums {'equal' if c.passed else 'DIFFER'}"
        )
        return c.passed

    if _each(settings, work):
        raise CliError("the lake does not match the warehouse (see above)")
    return 0


def cmd_lake_optimize(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline import lake

    def work(con, target, ds) -> bool:  # noqa: ANN001
        r = lake.optimize(target, ds)
        print(
            f"{ds.name:<24} version {r.version}: compacted {r.files_removed} files "
            f"into {r.files_added}"
        )
        return True

    _each(settings, work)
    return 0


def cmd_lake_vacuum(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline import analytics, lake

    hours = args.retention_hours or settings.lake_retention_hours
    pinned = analytics.pinned_versions(settings.data_dir)

    def work(con, target, ds) -> bool:  # noqa: ANN001
        keep = sorted(pinned.get(ds.name, ())) if target.is_local else []
        r = lake.vacuum(target, ds, hours, keep)
        print(f"{ds.name:<24} version {r.version}: removed {r.files_removed} files")
        return True

    _each(settings, work)
    return 0


def cmd_lake_history(args: argparse.Namespace, settings: Settings) -> int:
    from export_pipeline import lake
    from export_pipeline.commands.common import CliError
    from export_pipeline.contract import dataset

    table = lake.open_table(lake.lake_for(settings), dataset(args.dataset))
    if table is None:
        raise CliError(f"{args.dataset}: no lake table yet")
    for entry in table.history(args.limit):
        batches = json.loads(entry.get(lake.META_BATCHES, "[]"))
        metrics = entry.get("operationMetrics", {})
        rows = metrics.get("num_added_rows", metrics.get("num_target_rows_inserted", ""))
        print(
            f"v{entry.get('version')}  {entry.get('operation', ''):<8} "
            f"{entry.get(lake.META_KIND, ''):<9} batches {len(batches):>3}  rows {rows}"
        )
    return 0
