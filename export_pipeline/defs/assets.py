"""One warehouse asset per contract dataset, its source as an external spec, and its checks."""

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import dagster as dg
import duckdb

from export_pipeline import lake
from export_pipeline.batch import BatchResult, combine, run_backfill, run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.dead_letters import exhausted_count, retry_dead_letters
from export_pipeline.defs.resources import ExportResource
from export_pipeline.terminal import PROGRESS_LOGGER
from export_pipeline.validate import SchemaMismatchError

#: Blocking: fails when a dataset's batch is rejected as a whole (schema mismatch).
BATCH_FITS_CONTRACT = "batch_fits_contract"
#: Warning: the dataset has dead letters not yet resolved (open or exhausted), whichever batch
#: wrote them: it stays failing until they are retried into the warehouse or resolved.
NO_ROWS_DEAD_LETTERED = "no_rows_dead_lettered"
#: Error: dead letters ran out of retries (the contract's "operational alerting").
NO_DEAD_LETTERS_EXHAUSTED = "no_dead_letters_exhausted"


#: Run tag choosing how the warehouse assets run: ``microbatch`` (from the watermark, across day
#: boundaries) or ``backfill`` (re-extract the days the backfill tags name). Unset (a UI
#: "Materialize"): a backfill when the run carries backfill tags, else a micro-batch.
MODE_TAG = "export_pipeline/mode"
#: Run tags of a backfill (``export_backfill_job``): the first and last UTC day to re-extract,
#: ``YYYY-MM-DD``, inclusive. The CLI sets them; in the UI, the job's Launchpad ("Edit tags").
BACKFILL_START_TAG = "export_pipeline/backfill_start"
BACKFILL_END_TAG = "export_pipeline/backfill_end"
#: Run tag narrowing a backfill to one organisation (a uuid).
ORG_TAG = "export_pipeline/org_id"

HOW_TO_BACKFILL = (
    f"set the run tags {BACKFILL_START_TAG} and {BACKFILL_END_TAG} to the first and last UTC "
    f"day to re-extract (YYYY-MM-DD, inclusive; optionally {ORG_TAG}=<org uuid>): in the UI, "
    "export_backfill_job's Launchpad, 'Edit tags'; from the CLI, `export-pipeline backfill "
    "--start YYYY-MM-DD --end YYYY-MM-DD`"
)


class BackfillWindowError(ValueError):
    """A backfill run whose tags do not name a valid range of days."""


@dataclass(frozen=True)
class BackfillWindow:
    """The UTC days ``first``..``last`` (inclusive) a backfill re-extracts, maybe for one org."""

    first: date
    last: date
    org_id: str | None = None

    def tags(self) -> dict[str, str]:
        tags = {BACKFILL_START_TAG: self.first.isoformat(), BACKFILL_END_TAG: self.last.isoformat()}
        if self.org_id:
            tags[ORG_TAG] = self.org_id
        return tags


def backfill_window(tags: Mapping[str, str]) -> BackfillWindow:
    """The backfill's days from the run's tags, or one message saying what is wrong and what to
    set (raised before anything is read or written)."""
    problems = []
    days: dict[str, date] = {}
    for tag in (BACKFILL_START_TAG, BACKFILL_END_TAG):
        text = tags.get(tag, "").strip()
        if not text:
            problems.append(f"{tag} is missing")
            continue
        try:
            days[tag] = date.fromisoformat(text)
        except ValueError:
            problems.append(f"{tag}={text!r} is not a date (YYYY-MM-DD)")
    org_id = tags.get(ORG_TAG, "").strip() or None
    if org_id is not None:
        try:
            org_id = str(uuid.UUID(org_id))
        except ValueError:
            problems.append(f"{ORG_TAG}={org_id!r} is not an org uuid")
    if len(days) == 2 and days[BACKFILL_END_TAG] < days[BACKFILL_START_TAG]:
        problems.append(
            f"{BACKFILL_END_TAG}={days[BACKFILL_END_TAG]} is before "
            f"{BACKFILL_START_TAG}={days[BACKFILL_START_TAG]}"
        )
    if problems:
        raise BackfillWindowError(
            f"backfill not started ({'; '.join(problems)}): {HOW_TO_BACKFILL}. Nothing was "
            "read or written."
        )
    return BackfillWindow(days[BACKFILL_START_TAG], days[BACKFILL_END_TAG], org_id)


def is_backfill(tags: Mapping[str, str]) -> bool:
    """Whether a run of the warehouse assets is a backfill (see MODE_TAG)."""
    mode = tags.get(MODE_TAG)
    if mode:
        return mode == "backfill"
    return BACKFILL_START_TAG in tags or BACKFILL_END_TAG in tags


def source_key(ds: Dataset) -> dg.AssetKey:
    return dg.AssetKey(["source", *ds.source_table.split(".")])


def source_spec(ds: Dataset) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=source_key(ds),
        description=f"Operational table `{ds.source_table}` in data-engine-x PostgreSQL, or "
        f"the relation configured for it (`EXPORT_SOURCE_SCHEMA`: `<schema>.{ds.name}`).",
        group_name="source",
        kinds={"postgres"},
    )


def batch_metadata(
    results: list[BatchResult], window: BackfillWindow | None = None
) -> dict[str, dg.MetadataValue]:
    """Numeric metadata the UI plots over materializations, one point per run (a backfill's
    totals over its days)."""
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(value) for name, value in combine(results).items()
    }
    last = results[-1]
    metadata["batches"] = dg.MetadataValue.int(len(results))
    metadata["duration_ms"] = dg.MetadataValue.int(sum(r.duration_ms for r in results))
    metadata["lag_seconds"] = dg.MetadataValue.float(last.lag_seconds or 0.0)
    metadata["mode"] = dg.MetadataValue.text(last.mode)
    metadata["window_end"] = dg.MetadataValue.text(last.window_end.isoformat())
    if window is not None:
        metadata["backfill_days"] = dg.MetadataValue.text(f"{window.first} .. {window.last}")
    if last.window_note:  # why the window stopped short (an open transaction, a standby behind)
        metadata["window_held_back"] = dg.MetadataValue.text(last.window_note)
    return metadata


def last_good_state(export: ExportResource, ds: Dataset) -> dict[str, dg.MetadataValue]:
    """The dataset's watermark and last successful batch, for a failed batch's metadata."""
    from export_pipeline.sqlfiles import read_sql
    from export_pipeline.warehouse import fetch_dicts

    with export.warehouse() as con:
        (health,) = fetch_dicts(
            con, read_sql("warehouse", "select_dataset_health.sql"), {"d": ds.name}
        )
    return {
        name: dg.MetadataValue.text(str(health[name]) if health[name] is not None else "never")
        for name in ("watermark", "last_success_at", "failing_since")
    }


def unresolved_letters(con: duckdb.DuckDBPyConnection, ds: Dataset) -> list[dict]:
    """The dataset's dead letters not yet resolved, counted by reason and status."""
    from export_pipeline.sqlfiles import read_sql
    from export_pipeline.warehouse import fetch_dicts

    return fetch_dicts(
        con, read_sql("warehouse", "select_unresolved_dead_letters.sql"), {"dataset": ds.name}
    )


def dead_letter_check(letters: list[dict], batch_dead_lettered: int | None) -> dg.AssetCheckResult:
    """``no_rows_dead_lettered``: WARN while the dataset has unresolved letters (not only this
    batch's), with their counts by reason, so it turns green only when they are closed."""
    unresolved = sum(int(r["n"]) for r in letters)
    reasons: dict[str, int] = {}
    for r in letters:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + int(r["n"])
    metadata: dict[str, dg.MetadataValue] = {
        "unresolved": dg.MetadataValue.int(unresolved),
        "open": dg.MetadataValue.int(sum(int(r["n"]) for r in letters if r["status"] == "open")),
        "exhausted": dg.MetadataValue.int(
            sum(int(r["n"]) for r in letters if r["status"] == "exhausted")
        ),
        **{
            f"reason_{reason}": dg.MetadataValue.int(count)
            for reason, count in sorted(reasons.items())
        },
    }
    if batch_dead_lettered is not None:
        metadata["dead_lettered_this_run"] = dg.MetadataValue.int(batch_dead_lettered)
    return dg.AssetCheckResult(
        check_name=NO_ROWS_DEAD_LETTERED,
        passed=unresolved == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=f"{unresolved} dead letter(s) not resolved; see `export-pipeline "
        f"dead-letter list`"
        if unresolved
        else "No unresolved dead letters.",
    )


def _run_batches(
    context: dg.AssetExecutionContext,
    ds: Dataset,
    export: ExportResource,
    window: BackfillWindow | None,
) -> tuple[list[BatchResult], int, list[dict]]:
    """The run's batches, and the dataset's exhausted and unresolved dead letters afterwards."""
    settings = export.settings()
    dsn = export.source_dsn()
    with export.warehouse() as con:
        try:
            results = _export(context, ds, dsn, con, settings, window)
        except BaseException:
            try:  # days a failed backfill committed before failing reach the lake too
                lake.sync(con, lake.lake_for(settings), (ds,))
            except Exception as exc:  # the batch's own error is the one to report
                context.log.warning(f"lake/{ds.name}: not synced after the failure: {exc}")
            raise
        # What committed reaches the lake now, whichever job this is (micro-batch, backfill,
        # a UI materialization): one Delta commit, exactly once (see lake.sync).
        try:
            for synced in lake.sync(con, lake.lake_for(settings), (ds,)):
                context.log.info(
                    f"lake/{ds.name}: version {synced.version}, {synced.kind} of "
                    f"{synced.rows} rows from {synced.batches} batch(es)"
                )
        except lake.LakeVerificationError as exc:
            # The warehouse batch stands; the lake asset rewrites the table and its blocking
            # check reports whether that holds.
            context.log.error(str(exc))
        return results, exhausted_count(con, ds), unresolved_letters(con, ds)


def _export(
    context: dg.AssetExecutionContext,
    ds: Dataset,
    dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    window: BackfillWindow | None,
) -> list[BatchResult]:
    """Micro-batch (then retry due dead letters), or backfill the window's days."""
    run_id = context.run.run_id
    if window is None:
        result = run_dataset_batch(ds, source_dsn=dsn, con=con, settings=settings, run_id=run_id)
        retried = retry_dead_letters(ds, source_dsn=dsn, con=con, settings=settings, run_id=run_id)
        if retried.retried:
            context.log.info(
                f"{ds.name}: retried {retried.retried} dead letters: {retried.resolved} "
                f"resolved, {retried.still_open} still open, {retried.exhausted} exhausted"
            )
        return [result]

    def progress(done: int, total: int, result: BatchResult) -> None:
        message = (
            f"{ds.name} backfill {done}/{total} days ({result.window_end.date()}): "
            f"extracted {result.extracted}, inserted {result.inserted}, "
            f"updated {result.updated}, dead-lettered {result.dead_lettered}"
        )
        context.log.info(message)
        logging.getLogger(PROGRESS_LOGGER).info(message)  # the CLI's progress lines

    return run_backfill(
        ds,
        window.first,
        window.last,
        source_dsn=dsn,
        con=con,
        settings=settings,
        org_id=window.org_id,
        run_id=run_id,
        progress=progress,
    )


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
                description="The dataset has no unresolved dead letters (WARN while some are "
                "open or exhausted, whichever batch wrote them).",
            ),
            dg.AssetCheckSpec(
                NO_DEAD_LETTERS_EXHAUSTED,
                asset=ds.name,
                description="No dead letter has run out of retries (these need an operator).",
            ),
        ],
    )
    def export_asset(context: dg.AssetExecutionContext, export: ExportResource):
        window = None
        if is_backfill(context.run.tags):
            try:  # before the warehouse is opened: a bad range touches nothing
                window = backfill_window(context.run.tags)
            except BackfillWindowError as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
        try:
            results, exhausted, letters = _run_batches(context, ds, export, window)
        except SchemaMismatchError as exc:
            context.log.error(str(exc))
            with export.warehouse() as con:  # the letters already open still stand
                letters = unresolved_letters(con, ds)
            yield dg.MaterializeResult(
                metadata={
                    "rejected": dg.MetadataValue.text(str(exc)),
                    **last_good_state(export, ds),
                },
                check_results=[
                    dg.AssetCheckResult(
                        check_name=BATCH_FITS_CONTRACT,
                        passed=False,
                        metadata={"error": dg.MetadataValue.text(str(exc))},
                    ),
                    dead_letter_check(letters, None),
                    dg.AssetCheckResult(
                        check_name=NO_DEAD_LETTERS_EXHAUSTED,
                        passed=True,
                        metadata={"skipped": "batch rejected as a whole"},
                    ),
                ],
            )
            return
        totals = combine(results)
        context.log.info(f"{ds.name}: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        yield dg.MaterializeResult(
            metadata=batch_metadata(results, window),
            check_results=[
                dg.AssetCheckResult(check_name=BATCH_FITS_CONTRACT, passed=True),
                dead_letter_check(letters, totals["dead_lettered"]),
                dg.AssetCheckResult(
                    check_name=NO_DEAD_LETTERS_EXHAUSTED,
                    passed=exhausted == 0,
                    metadata={"exhausted": dg.MetadataValue.int(exhausted)},
                ),
            ],
        )

    return export_asset


SOURCE_SPECS = [source_spec(ds) for ds in DATASETS]
EXPORT_ASSETS = [build_export_asset(ds) for ds in DATASETS]

#: What the export jobs run: the warehouse assets with their own batch checks, and the lake
#: assets (defs/lake.py) that publish what was loaded. Not the reconciliation checks on the same
#: assets: those belong to the daily reconcile_job.
EXPORT_SELECTION = (
    dg.AssetSelection.assets(*EXPORT_ASSETS).without_checks()
    | dg.AssetSelection.checks(
        *(
            dg.AssetCheckKey(dg.AssetKey(ds.name), name)
            for ds in DATASETS
            for name in (BATCH_FITS_CONTRACT, NO_ROWS_DEAD_LETTERED, NO_DEAD_LETTERS_EXHAUSTED)
        )
    )
    # The lake assets with their per-commit check; not the daily whole-table comparison
    # (lake_matches_warehouse, in lake_check_job): no full-table work in a micro-batch.
    | dg.AssetSelection.groups("lake").without_checks()
    | dg.AssetSelection.checks(
        *(
            dg.AssetCheckKey(dg.AssetKey(["lake", ds.name]), "lake_commit_verified")
            for ds in DATASETS
        )
    )
)

#: The micro-batch over all datasets. In-process: steps run one after the other in one process,
#: so they never fight over DuckDB's single-writer file lock.
export_microbatch_job = dg.define_asset_job(
    "export_microbatch_job",
    selection=EXPORT_SELECTION,
    executor_def=dg.in_process_executor,
    tags={MODE_TAG: "microbatch"},
    description="One micro-batch of every contract dataset: extract from each dataset's "
    "watermark, validate, load, publish to the lake. Its schedule runs it; 'Materialize' on a "
    "warehouse asset does the same for that asset.",
)

#: Re-extract the UTC days the run's backfill tags name, of the chosen datasets, as one run.
export_backfill_job = dg.define_asset_job(
    "export_backfill_job",
    selection=EXPORT_SELECTION,
    executor_def=dg.in_process_executor,
    tags={MODE_TAG: "backfill"},
    description="Backfill: re-extract UTC days first..last (inclusive) of the selected datasets, "
    "idempotently, as one run; the watermark is left alone. From the UI: the Launchpad of this "
    f"job, Edit tags, add {BACKFILL_START_TAG}=YYYY-MM-DD and {BACKFILL_END_TAG}=YYYY-MM-DD "
    f"(optionally {ORG_TAG}=UUID), then Launch Run; without them the run fails at once, "
    "touching nothing. From the CLI: `export-pipeline backfill --start YYYY-MM-DD --end "
    "YYYY-MM-DD [--dataset NAME] [--org UUID]`.",
)

defs = dg.Definitions(
    assets=[*SOURCE_SPECS, *EXPORT_ASSETS],
    jobs=[export_microbatch_job, export_backfill_job],
)
