"""The Dagster code location: source specs, the five warehouse assets and their jobs."""

import dagster as dg

from export_pipeline.defs.assets import EXPORT_ASSETS, SOURCE_SPECS, export_microbatch_job
from export_pipeline.defs.resources import ExportResource

defs = dg.Definitions(
    assets=[*SOURCE_SPECS, *EXPORT_ASSETS],
    jobs=[export_microbatch_job],
    resources={"export": ExportResource()},
    # Every job, including the UI's ad-hoc "Materialize", runs its steps in one process, one
    # after the other: DuckDB admits a single writer process per file.
    executor=dg.in_process_executor,
)
