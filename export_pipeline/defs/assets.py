"""One warehouse asset per contract dataset, its source as an external spec, and its checks."""

import dagster as dg

from export_pipeline.batch import BatchResult, run_dataset_batch
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.defs.resources import ExportResource
from export_pipeline.validate import SchemaMismatchError

#: Blocking: fails when a dataset's batch is rejected as a whole (schema mismatch).
BATCH_FITS_CONTRACT = "batch_fits_contract"
#: Warning: rows of the batch went to the dead-letter table.
NO_ROWS_DEAD_LETTERED = "no_rows_dead_lettered"


def source_key(ds: Dataset) -> dg.AssetKey:
    return dg.AssetKey(["source", *ds.source_table.split(".")])


def source_spec(ds: Dataset) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=source_key(ds),
        description=f"Operational table `{ds.source_table}` in data-engine-x PostgreSQL.",
        group_name="source",
        kinds={"postgres"},
    )


def batch_metadata(result: BatchResult) -> dict[str, dg.MetadataValue]:
    """Numeric metadata the UI plots over materializations."""
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(getattr(result, name))
        for name in ("extracted", "inserted", "updated", "unchanged", "stale", "dead_lettered")
    }
    metadata["duration_ms"] = dg.MetadataValue.int(result.duration_ms)
    metadata["lag_seconds"] = dg.MetadataValue.float(result.lag_seconds or 0.0)
    metadata["batch_id"] = dg.MetadataValue.text(result.batch_id)
    metadata["window_end"] = dg.MetadataValue.text(result.window_end.isoformat())
    return metadata


def build_export_asset(ds: Dataset) -> dg.AssetsDefinition:
    @dg.asset(
        name=ds.name,
        deps=[source_key(ds)],
        group_name="warehouse",
        kinds={"duckdb"},
        description=ds.description,
        check_specs=[
            dg.AssetCheckSpec(
                BATCH_FITS_CONTRACT,
                asset=ds.name,
                blocking=True,
                description="The source still fits the contract: the batch was not rejected.",
            ),
            dg.AssetCheckSpec(
                NO_ROWS_DEAD_LETTERED,
                asset=ds.name,
                description="No row of the batch broke the contract (WARN when some did).",
            ),
        ],
    )
    def export_asset(context: dg.AssetExecutionContext, export: ExportResource):
        dsn = export.source_dsn()
        with export.warehouse() as con:
            try:
                result = run_dataset_batch(
                    ds,
                    source_dsn=dsn,
                    con=con,
                    settings=export.settings(),
                    run_id=context.run.run_id,
                )
            except SchemaMismatchError as exc:
                context.log.error(str(exc))
                yield dg.MaterializeResult(
                    metadata={"rejected": dg.MetadataValue.text(str(exc))},
                    check_results=[
                        dg.AssetCheckResult(
                            check_name=BATCH_FITS_CONTRACT,
                            passed=False,
                            metadata={"error": dg.MetadataValue.text(str(exc))},
                        ),
                        dg.AssetCheckResult(
                            check_name=NO_ROWS_DEAD_LETTERED,
                            passed=True,
                            metadata={"skipped": "batch rejected as a whole"},
                        ),
                    ],
                )
                return
        context.log.info(
            f"{ds.name}: extracted {result.extracted}, inserted {result.inserted}, "
            f"updated {result.updated}, unchanged {result.unchanged}, stale {result.stale}, "
            f"dead-lettered {result.dead_lettered}"
        )
        yield dg.MaterializeResult(
            metadata=batch_metadata(result),
            check_results=[
                dg.AssetCheckResult(check_name=BATCH_FITS_CONTRACT, passed=True),
                dg.AssetCheckResult(
                    check_name=NO_ROWS_DEAD_LETTERED,
                    passed=result.dead_lettered == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "dead_lettered": dg.MetadataValue.int(result.dead_lettered),
                        **{
                            f"reason_{reason}": dg.MetadataValue.int(count)
                            for reason, count in result.dead_letters_by_reason.items()
                        },
                    },
                ),
            ],
        )

    return export_asset


SOURCE_SPECS = [source_spec(ds) for ds in DATASETS]
EXPORT_ASSETS = [build_export_asset(ds) for ds in DATASETS]

#: The micro-batch over all datasets. In-process: steps run one after the other in one process,
#: so they never fight over DuckDB's single-writer file lock.
export_microbatch_job = dg.define_asset_job(
    "export_microbatch_job",
    selection=dg.AssetSelection.assets(*EXPORT_ASSETS),
    executor_def=dg.in_process_executor,
    description="One micro-batch of every contract dataset: extract, validate, load.",
)

defs = dg.Definitions(
    assets=[*SOURCE_SPECS, *EXPORT_ASSETS],
    jobs=[export_microbatch_job],
)
