"""Operating the pipeline: reconciliation checks, their job, and the two schedules.

The schedules' settings (``EXPORT_MICROBATCH_MINUTES``, ``EXPORT_RECONCILE_CRON``) are read when
the definitions are built (:func:`build_schedules`, called when ``defs`` is first looked up), not
when this module is imported, and through :class:`Settings`, as every other setting.
"""

from collections.abc import Mapping
from datetime import date, timedelta

import dagster as dg

from export_pipeline import lake
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.defs import built_when_looked_up
from export_pipeline.defs.assets import export_microbatch_job
from export_pipeline.defs.liveness import reap_dead_runs
from export_pipeline.defs.resources import ExportResource
from export_pipeline.reconcile import CheckName, CheckResult, reconcile_dataset

#: Run tags of a reconciliation launched for explicit days (the CLI); default: trailing days
#: and today's closed hours. ``RECONCILE_ALL_TAG`` = "true": every day, aggregates first.
RECONCILE_START_TAG = "export_pipeline/reconcile_start"
RECONCILE_END_TAG = "export_pipeline/reconcile_end"
RECONCILE_REPAIR_TAG = "export_pipeline/reconcile_repair"
RECONCILE_ALL_TAG = "export_pipeline/reconcile_all"

#: Dagster check name -> (reconciliation check, severity when it fails).
RECONCILE_CHECKS: dict[str, tuple[CheckName, dg.AssetCheckSeverity]] = {
    "rows_match_source": ("row_count_parity", dg.AssetCheckSeverity.ERROR),
    "content_matches_source": ("content_parity", dg.AssetCheckSeverity.ERROR),
    "source_regressions_acknowledged": ("source_regressions", dg.AssetCheckSeverity.WARN),
    "lag_within_sla": ("max_lag_sla", dg.AssetCheckSeverity.ERROR),
    "critical_fields_null_rate_within_threshold": ("null_rate", dg.AssetCheckSeverity.WARN),
    "status_mix_matches_baseline": ("status_distribution", dg.AssetCheckSeverity.WARN),
}

_DESCRIPTIONS = {
    "rows_match_source": "Per UTC day: in-scope source rows = warehouse rows + open dead letters "
    "(differences explained only by states the warehouse keeps pass).",
    "content_matches_source": "Per UTC day: every contract column of every key equals the "
    "source's (re-read through the export's own extract and validation), after repair; the "
    "metadata names each kind of difference, example keys and what the repair did.",
    "source_regressions_acknowledged": "Keys whose source version went below the warehouse's, "
    "or that were deleted at the source (EXPORT_RECONCILE_DELETES=report), are kept; each is "
    "reported once (this check warns) and then remembered as acknowledged.",
    "lag_within_sla": "The warehouse trails the source, and the last successful batch is, "
    "within the lag SLA.",
    "critical_fields_null_rate_within_threshold": "Null rate of the contract's critical fields "
    "per day is within the threshold, and no organisation's rose against its own baseline.",
    "status_mix_matches_baseline": "Each day's run status mix shows no significant shift from "
    "the trailing baseline: all organisations (chi-square) and each organisation against its "
    "own (beta-binomial, small tenants too).",
}


def _applies(ds: Dataset, check: CheckName) -> bool:
    if check == "null_rate":
        return bool(ds.critical_fields)
    if check == "status_distribution":
        return ds.name == "dx_operation_runs_v1"
    return True


def _days(tags: Mapping[str, str]) -> list[date] | None:
    if RECONCILE_START_TAG in tags:
        first = date.fromisoformat(tags[RECONCILE_START_TAG])
        last = date.fromisoformat(tags.get(RECONCILE_END_TAG, tags[RECONCILE_START_TAG]))
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return None


def reconciliation_key(ds: Dataset) -> dg.AssetKey:
    """The asset a dataset's reconciliation materializes, and its checks hang on.

    Not the dataset's own asset: every micro-batch materializes that one, and Dagster shows a
    check's result against the latest materialization of its asset, so checks on it went back
    to "not evaluated" ten minutes after each reconciliation. Only the reconcile job
    materializes this asset, so its checks keep their last result.
    """
    return dg.AssetKey(["reconciliation", ds.name])


def _failure_metadata(mine: list[CheckResult]) -> list[dict]:
    out = []
    for r in mine:
        if r.passed:
            continue
        entry: dict = {"day": str(r.day) if r.day else None, "observed": r.observed,
                       "expected": r.expected}  # fmt: skip
        if r.org_id:
            entry["org_id"] = r.org_id
        for field in ("differences", "new", "field", "statuses_risen", "rate", "baseline_rate"):
            if field in r.details:
                entry[field] = r.details[field]
        out.append(entry)
    return out[:20]


def build_reconciliation(ds: Dataset) -> dg.AssetsDefinition:
    names = [name for name, (check, _) in RECONCILE_CHECKS.items() if _applies(ds, check)]
    key = reconciliation_key(ds)

    @dg.multi_asset(
        name=f"reconcile_{ds.name}",
        specs=[
            dg.AssetSpec(
                key,
                deps=[ds.name],
                group_name="reconciliation",
                description=f"Reconciliation of {ds.name} against its source: what was "
                "compared, found and repaired (see its checks).",
            )
        ],
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, description=_DESCRIPTIONS[name]) for name in names
        ],
    )
    def reconcile_dataset_asset(context: dg.AssetExecutionContext, export: ExportResource):
        settings = export.settings()
        tags = context.run.tags
        with export.warehouse() as con:
            results = reconcile_dataset(
                ds,
                _days(tags),
                source_dsn=export.source_dsn(),
                con=con,
                settings=settings,
                repair=tags.get(RECONCILE_REPAIR_TAG, "true") != "false",
                run_id=context.run.run_id,
                all_days=tags.get(RECONCILE_ALL_TAG) == "true",
                progress=context.log.info,
            )
            lake.sync(con, lake.lake_for(settings), (ds,))  # repairs reach the lake too
        days = sorted({r.day for r in results if r.day is not None})
        checks = []
        for name in names:
            check, severity = RECONCILE_CHECKS[name]
            mine = [r for r in results if r.check == check]
            failing = [r for r in mine if not r.passed]
            repairs = [r.details["repair"] for r in mine if r.details.get("repair")]
            metadata: dict[str, dg.MetadataValue] = {
                "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]}" if days else "-"),
                "results": dg.MetadataValue.int(len(mine)),
                "failing": dg.MetadataValue.int(len(failing)),
            }
            if failing:
                metadata["failures"] = dg.MetadataValue.json(_failure_metadata(mine))
            if repairs:
                metadata["keys_repair_attempted"] = dg.MetadataValue.int(
                    sum(r.get("attempted", 0) for r in repairs)
                )
                metadata["keys_repaired"] = dg.MetadataValue.int(
                    sum(r.get("repaired", 0) for r in repairs)
                )
                metadata["repairs"] = dg.MetadataValue.json(repairs[:20])
            context.log.info(f"{ds.name} {name}: {len(failing)} of {len(mine)} failing")
            checks.append(
                dg.AssetCheckResult(
                    asset_key=key,
                    check_name=name,
                    passed=not failing,
                    severity=severity,
                    metadata=metadata,
                )
            )
        parity = [r for r in results if r.check == "content_parity"]
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "days_checked": dg.MetadataValue.int(len(parity)),
                "days_differing": dg.MetadataValue.int(sum(not r.passed for r in parity)),
                "days_repaired": dg.MetadataValue.int(
                    sum(1 for r in parity if r.details.get("repair"))
                ),
            },
            check_results=checks,
        )

    return reconcile_dataset_asset


RECONCILIATION_ASSETS = [build_reconciliation(ds) for ds in DATASETS]

reconcile_job = dg.define_asset_job(
    "reconcile_job",
    selection=dg.AssetSelection.assets(*RECONCILIATION_ASSETS),
    executor_def=dg.in_process_executor,
    description="Reconcile source against warehouse (trailing days and today's closed hours by "
    "default), repairing drift.",
)


def microbatch_minutes() -> int:
    """EXPORT_MICROBATCH_MINUTES (5-15, default 10): the micro-batch schedule's period."""
    return Settings.from_env().microbatch_minutes


def _microbatch_schedule(context: dg.ScheduleEvaluationContext):
    """Skips, saying why, while the previous micro-batch is still queued or running.

    A run whose worker process died is first marked failed (:mod:`.liveness`), so a crash never
    blocks the schedule for good.
    """
    reap_dead_runs(context.instance)
    in_flight = context.instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=export_microbatch_job.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    )
    if in_flight:
        run_id = in_flight[0].dagster_run.run_id
        return dg.SkipReason(
            f"micro-batch run {run_id} is still in progress; this tick is skipped (the next "
            "micro-batch reads from the watermark, so nothing is lost)"
        )
    # No partition key: the warehouse assets are not partitioned; each micro-batch reads from
    # the watermark and is one materialization (one point on the asset's plots).
    return dg.RunRequest()


def build_schedules(
    settings: Settings | None = None,
) -> tuple[dg.ScheduleDefinition, dg.ScheduleDefinition]:
    """The micro-batch and reconciliation schedules, from the settings read now."""
    settings = Settings.from_env() if settings is None else settings
    microbatch = dg.schedule(
        name="export_microbatch_schedule",
        cron_schedule=f"*/{settings.microbatch_minutes} * * * *",
        job=export_microbatch_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Micro-batch every EXPORT_MICROBATCH_MINUTES (default 10) minutes.",
    )(_microbatch_schedule)
    reconcile = dg.ScheduleDefinition(
        name="reconcile_schedule",
        cron_schedule=settings.reconcile_cron,
        job=reconcile_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Daily reconciliation of the trailing EXPORT_RECONCILE_DAYS days (default 3) "
        "and today's closed hours, off-peak (EXPORT_RECONCILE_CRON, default 03:00 UTC).",
    )
    return microbatch, reconcile


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=RECONCILIATION_ASSETS,
        jobs=[reconcile_job],
        schedules=list(build_schedules(settings)),
    )


__getattr__ = built_when_looked_up(
    __name__, build_defs, build_schedules, ("export_microbatch_schedule", "reconcile_schedule")
)
