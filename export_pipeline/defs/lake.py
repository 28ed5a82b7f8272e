"""The lake in Dagster: one asset per dataset's Delta table, its daily check, its maintenance.

The warehouse assets drain their own changes into the lake right after their batches (so every
job that writes the warehouse, from the CLI or the UI, reaches the lake; see ``assets.py`` and
``operations.py``). Each ``lake/<dataset>`` asset runs after its warehouse asset in the export
jobs: it drains whatever is still pending (normally nothing), refreshes the analysts' catalog,
and reports the table's version. The whole-table comparison runs daily (``lake_check_job``),
compaction and vacuum on their own schedule (``lake_maintenance_job``), never in a micro-batch.
"""

import dagster as dg

from export_pipeline import analytics, lake
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.defs import built_when_looked_up
from export_pipeline.defs.resources import ExportResource

#: Blocking: the dataset's lake commits of this run hold exactly the rows they were given.
LAKE_COMMIT_VERIFIED = "lake_commit_verified"
#: Daily: the whole lake table has the warehouse table's row count and checksum.
LAKE_MATCHES_WAREHOUSE = "lake_matches_warehouse"
LAKE_GROUP = "lake"


def lake_key(ds: Dataset) -> dg.AssetKey:
    return dg.AssetKey([LAKE_GROUP, ds.name])


def build_lake_asset(ds: Dataset) -> dg.AssetsDefinition:
    key = lake_key(ds)

    @dg.asset(
        key=key,
        deps=[dg.AssetKey(ds.name)],
        group_name=LAKE_GROUP,
        kinds={"deltalake"},
        description=(
            f"`{ds.name}` as a Delta Lake table at `$EXPORT_LAKE_URI/{ds.name}` (default "
            f"`$EXPORT_DATA_DIR/lake/{ds.name}`), partitioned by "
            f"{', '.join(ds.partition_by) or 'nothing'}; one commit per batch of changes."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                LAKE_COMMIT_VERIFIED,
                asset=key,
                blocking=True,
                description="Each Delta commit holds exactly the rows it was given "
                "(count and checksum of the batch); a failed one is rewritten next run.",
            )
        ],
    )
    def lake_asset(context: dg.AssetExecutionContext, export: ExportResource):
        settings = export.settings()
        target = lake.lake_for(settings)
        error = None
        with export.warehouse() as con:
            try:
                results = lake.sync(con, target, (ds,))
            except lake.LakeVerificationError as exc:
                results, error = [], str(exc)
                context.log.error(error)
        catalog = analytics.refresh_catalog(settings.data_dir, lake=target)
        current = lake.open_table(target, ds)
        version = current.version() if current is not None else None
        synced = results[0] if results else None
        context.log.info(
            f"lake/{ds.name}: version {version}; "
            + (f"{synced.kind} of {synced.rows} rows" if synced and synced.kind else "no change")
        )
        yield dg.MaterializeResult(
            metadata={
                "version": dg.MetadataValue.int(-1 if version is None else version),
                "uri": dg.MetadataValue.text(target.uri(ds)),
                "commit": dg.MetadataValue.text((synced.kind or "-") if synced else "-"),
                "rows_committed": dg.MetadataValue.int(synced.rows if synced else 0),
                "catalog": dg.MetadataValue.text(str(catalog.path or "-")),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=LAKE_COMMIT_VERIFIED,
                    passed=error is None,
                    metadata={"error": dg.MetadataValue.text(error or "-")},
                )
            ],
        )

    return lake_asset


def build_lake_check(ds: Dataset) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=lake_key(ds),
        name=LAKE_MATCHES_WAREHOUSE,
        description="The whole Delta table has the warehouse table's rows (count and checksum).",
    )
    def lake_matches_warehouse(export: ExportResource) -> dg.AssetCheckResult:
        settings = export.settings()
        with export.warehouse() as con:
            check = lake.check_table(con, lake.lake_for(settings), ds)
        return dg.AssetCheckResult(
            passed=check.passed,
            metadata={
                "version": dg.MetadataValue.int(-1 if check.version is None else check.version),
                "warehouse_rows": dg.MetadataValue.int(check.warehouse_rows),
                "lake_rows": dg.MetadataValue.int(check.lake_rows),
                "warehouse_checksum": dg.MetadataValue.text(str(check.warehouse_checksum)),
                "lake_checksum": dg.MetadataValue.text(str(check.lake_checksum)),
            },
        )

    return lake_matches_warehouse


LAKE_ASSETS = [build_lake_asset(ds) for ds in DATASETS]
LAKE_CHECKS = [build_lake_check(ds) for ds in DATASETS]


@dg.op(description="Compact small files, then vacuum files older than the retention.")
def compact_and_vacuum_lake(context: dg.OpExecutionContext, export: ExportResource) -> None:
    settings = export.settings()
    # Holding the warehouse's write lock keeps this the lake's only writer meanwhile.
    with export.warehouse():
        for line in lake.maintain(settings):
            context.log.info(line)


@dg.job(
    name="lake_maintenance_job",
    executor_def=dg.in_process_executor,
    description="Compact the lake's Delta tables and vacuum expired files (never in a "
    "micro-batch); retention EXPORT_LAKE_RETENTION_HOURS (default 168 h).",
)
def lake_maintenance_job() -> None:
    compact_and_vacuum_lake()


lake_check_job = dg.define_asset_job(
    "lake_check_job",
    selection=dg.AssetSelection.checks(*LAKE_CHECKS),
    executor_def=dg.in_process_executor,
    description="Compare every lake table with its warehouse table as a whole (daily).",
)


def build_schedules(
    settings: Settings | None = None,
) -> tuple[dg.ScheduleDefinition, dg.ScheduleDefinition]:
    """The lake's check and maintenance schedules, from the settings read now (not at import)."""
    settings = Settings.from_env() if settings is None else settings
    check = dg.ScheduleDefinition(
        name="lake_check_schedule",
        cron_schedule=settings.reconcile_cron,
        job=lake_check_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="The daily lake-vs-warehouse comparison, with the reconciliation "
        "(EXPORT_RECONCILE_CRON, default 03:00 UTC).",
    )
    maintenance = dg.ScheduleDefinition(
        name="lake_maintenance_schedule",
        cron_schedule=settings.lake_maintenance_cron,
        job=lake_maintenance_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Daily compaction and vacuum of the lake (EXPORT_LAKE_MAINTENANCE_CRON, "
        "default 03:30 UTC).",
    )
    return check, maintenance


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=LAKE_ASSETS,
        asset_checks=LAKE_CHECKS,
        jobs=[lake_check_job, lake_maintenance_job],
        schedules=list(build_schedules(settings)),
    )


__getattr__ = built_when_looked_up(
    __name__, build_defs, build_schedules, ("lake_check_schedule", "lake_maintenance_schedule")
)
