"""One lake asset per contract dataset: publish the warehouse table as partitioned Parquet.

Each ``lake/<dataset>`` asset depends on its warehouse asset, so it runs after a successful load
(a failed load or a failed blocking check skips it), rewrites only the partitions whose content
changed, refreshes the analysts' catalog, and checks the lake against the warehouse.
"""

import dagster as dg

from export_pipeline import analytics, publish
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.defs.resources import ExportResource

#: Blocking: the published lake has the warehouse table's row count and checksum.
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
        kinds={"parquet"},
        description=(
            f"`{ds.name}` as zstd Parquet under `$EXPORT_DATA_DIR/lake/{ds.name}/`, "
            f"Hive-partitioned by {', '.join(ds.partition_by) or 'nothing'}; "
            "only changed partitions are rewritten, swapped in atomically."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                LAKE_MATCHES_WAREHOUSE,
                asset=key,
                blocking=True,
                description="The lake holds exactly the warehouse rows (count and checksum).",
            )
        ],
    )
    def lake_asset(context: dg.AssetExecutionContext, export: ExportResource):
        data_dir = export.settings().data_dir
        with export.warehouse() as con:
            result = publish.publish_dataset(con, ds, data_dir)
            check = publish.check_lake(con, ds, data_dir, written=result.written)
        catalog = analytics.refresh_catalog(data_dir)
        context.log.info(
            f"lake/{ds.name}: {result.partitions_written} partitions written, "
            f"{result.partitions_linked} unchanged, {result.partitions_removed} removed; "
            f"version {result.version}; analytics catalog "
            f"{'refreshed' if catalog.created else 'unchanged'}"
        )
        yield dg.MaterializeResult(
            metadata={
                "version": dg.MetadataValue.text(result.version or "-"),
                "rows": dg.MetadataValue.int(result.rows),
                "partitions": dg.MetadataValue.int(result.partitions),
                "partitions_written": dg.MetadataValue.int(result.partitions_written),
                "partitions_removed": dg.MetadataValue.int(result.partitions_removed),
                "catalog": dg.MetadataValue.path(str(catalog.path)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=LAKE_MATCHES_WAREHOUSE,
                    passed=check.passed,
                    metadata={
                        "warehouse_rows": dg.MetadataValue.int(check.warehouse_rows),
                        "lake_rows": dg.MetadataValue.int(check.lake_rows),
                        "warehouse_checksum": dg.MetadataValue.text(str(check.warehouse_checksum)),
                        "lake_checksum": dg.MetadataValue.text(str(check.lake_checksum)),
                    },
                )
            ],
        )

    return lake_asset


LAKE_ASSETS = [build_lake_asset(ds) for ds in DATASETS]

#: Publishes the lake from the warehouse as it is (e.g. after a backfill); the micro-batch job
#: publishes after each load when it selects the ``lake`` group too.
lake_publish_job = dg.define_asset_job(
    "lake_publish_job",
    selection=dg.AssetSelection.groups(LAKE_GROUP),
    executor_def=dg.in_process_executor,
    description="Publish every warehouse table to the Parquet lake and refresh analytics.duckdb.",
)

defs = dg.Definitions(assets=LAKE_ASSETS, jobs=[lake_publish_job])
