"""One dataset batch, end to end: extract -> validate -> load, exactly once.

The rows loaded, the dead letters, the ledger row and the new watermark commit in one DuckDB
transaction; on any error it rolls back (the previous state stays), a ``failed`` ledger row is
written, and the error propagates. The next run converges to what one clean run would give.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import duckdb

from export_pipeline import extract, lake, load, source_session, validate
from export_pipeline.config import Settings, redact_dsn
from export_pipeline.contract import DUAL_PUBLISH, Dataset
from export_pipeline.extract import KeySet, Window
from export_pipeline.faults import crash_point
from export_pipeline.freshness import write_freshness
from export_pipeline.relations import source_dataset
from export_pipeline.sqlfiles import read_sql
from export_pipeline.warehouse import ensure_schema, get_watermark, run_sql

log = logging.getLogger(__name__)

BatchMode = Literal["microbatch", "backfill", "repair", "retry"]


#: The six numbers every batch accounts for (extracted = the other five summed).
COUNT_FIELDS = ("extracted", "inserted", "updated", "unchanged", "stale", "dead_lettered")


@dataclass(frozen=True)
class BatchResult:
    batch_id: str
    dataset: str
    mode: BatchMode
    window_start: datetime | None
    window_end: datetime
    extracted: int
    inserted: int
    updated: int
    unchanged: int
    stale: int
    dead_lettered: int
    dead_letters_by_reason: dict[str, int]
    duration_ms: int
    watermark: datetime | None
    #: now - latest cursor the warehouse holds for the dataset, in seconds (None when empty).
    lag_seconds: float | None
    #: Why the window ended before ``now - safety_lag`` (an open transaction, a standby
    #: behind), or what could not be checked; None when nothing held it back.
    window_note: str | None = None

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated

    @property
    def accounted(self) -> int:
        return self.loaded + self.unchanged + self.stale + self.dead_lettered

    def as_dict(self) -> dict:
        return asdict(self)


def microbatch_window(
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    settings: Settings,
    source_now: datetime,
    horizon: source_session.Horizon | None = None,
) -> tuple[Window, str | None]:
    """``(watermark - lookback, min(now - safety_lag, horizon)]``, and why it was held back.

    The horizon (``source_session.read_horizon``) keeps the end before any point later commits
    can still land behind: the start of the oldest transaction open on the source, or a
    standby's last replayed commit. From the beginning on the first run.
    """
    watermark = get_watermark(con, ds)
    start = None if watermark is None else watermark - settings.lookback
    end, held_back = source_now - settings.safety_lag, None
    if horizon is not None:
        end, held_back = horizon.limit(end)
    return Window(start=start, end=end), held_back


def run_dataset_batch(
    ds: Dataset,
    *,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    run_id: str | None = None,
    mode: BatchMode = "microbatch",
    window: Window | KeySet | None = None,
    also_publish: tuple[Dataset, ...] | None = None,
    before_apply: Callable[[duckdb.DuckDBPyConnection, str], None] | None = None,
) -> BatchResult:
    """Export one batch of one dataset; the window defaults to the micro-batch window.

    ``before_apply(con, batch_id)``, when given, runs inside the batch's transaction after the
    rows are staged and before they are applied (reconciliation's repair deletes there the rows
    it replaces or removes, so the repair is one transaction).

    The same rows also fill each successor version in ``also_publish`` (by default the
    dataset's dual-publish window, ``contract.DUAL_PUBLISH``), in the same transaction.

    A transient failure (connection lost, timeout, lock contention) rolls the batch back and
    retries it with exponential backoff, up to ``settings.transient_retries`` times; any other
    failure, or the last transient one, propagates with the previous state intact.
    """
    for attempt in itertools.count(1):
        try:
            return _run_dataset_batch_once(
                ds,
                source_dsn=source_dsn,
                con=con,
                settings=settings,
                run_id=run_id,
                mode=mode,
                window=window,
                also_publish=also_publish,
                before_apply=before_apply,
            )
        except Exception as exc:
            if not is_transient(exc) or attempt > settings.transient_retries:
                raise
            delay = settings.transient_backoff_seconds * 2 ** (attempt - 1)
            log.warning(
                "%s: transient error (attempt %d of %d), retrying in %.1fs: %s",
                ds.name,
                attempt,
                settings.transient_retries + 1,
                delay,
                scrub(str(exc), source_dsn),
            )
            time.sleep(delay * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")


def _run_dataset_batch_once(
    ds: Dataset,
    *,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    run_id: str | None,
    mode: BatchMode,
    window: Window | KeySet | None,
    also_publish: tuple[Dataset, ...] | None,
    before_apply: Callable[[duckdb.DuckDBPyConnection, str], None] | None = None,
) -> BatchResult:
    batch_id = str(uuid.uuid4())
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    window_note: str | None = None
    run_sql(con, "BEGIN TRANSACTION")
    try:
        source_ds = source_dataset(ds, settings)  # the relation configured for ds
        with extract.connect(source_dsn) as src:
            source_session.check_readable(
                src,
                source_ds.source_table,
                [c.source_name for c in source_ds.source_columns],
                ds.name,
            )
            extract.check_source_schema(src, source_ds)
            now = extract.source_now(src)
            if window is None:
                horizon = source_session.read_horizon(src)
                window, window_note = microbatch_window(con, ds, settings, now, horizon)
                for note in (window_note, horizon.blind_spot):
                    if note:
                        log.warning("%s: window held back: %s", ds.name, note)
                window_note = window_note or horizon.blind_spot
            load.create_stage(con, ds)
            staged = 0
            stream = extract.extract_window(src, source_ds, window, settings.batch_size)
            for record_batch in extract.prefetch(stream, cancel=src.adbc_cancel):
                checked = validate.validate_batch(ds, validate.to_frame(record_batch), now)
                load.stage_rows(con, ds, checked.valid, staged)
                load.stage_dead_letters(con, checked.dead_letters)
                staged += checked.extracted
                crash_point("extract", ds.name)
        crash_point("validated", ds.name)
        if before_apply is not None:
            before_apply(con, batch_id)
        outcomes = load.apply_classified(con, ds, batch_id)
        if mode == "repair":
            # A repair fixes a warehouse that differed from the source, and the lake may differ
            # the same way (a row deleted from the warehouse by hand is still in the lake): its
            # rows and its deletions (``_deleted_rows``) reach the lake by key (a MERGE), never as
            # a blind append that could double a key.
            deleted = lake.deleted_in_batch(con, ds, batch_id)
            written = outcomes["insert"] + outcomes["update"]
            lake.record_change(con, ds, batch_id, 0, written + deleted)
        else:
            lake.record_change(con, ds, batch_id, outcomes["insert"], outcomes["update"])
        by_reason = dict(
            run_sql(con, f"SELECT reason, count(*) FROM {load.STAGE_DEAD_LETTERS} GROUP BY ALL")
        )
        run_sql(
            con,
            read_sql("warehouse", "merge_dead_letters.sql"),
            {
                "dataset": ds.name,
                "contract_version": ds.version,
                "batch_id": batch_id,
                "retry_after_seconds": settings.dead_letter_retry_base_seconds,
            },
        )
        run_sql(
            con,
            read_sql("warehouse", "update_superseded_dead_letters.sql"),
            {"dataset": ds.name, "batch_id": batch_id},
        )
        run_sql(
            con,
            read_sql("warehouse", "update_resolved_dead_letters.sql"),
            {"dataset": ds.name, "batch_id": batch_id},
        )
        dead_lettered = sum(by_reason.values())
        result = BatchResult(
            batch_id=batch_id,
            dataset=ds.name,
            mode=mode,
            window_start=window.start if isinstance(window, Window) else None,
            window_end=window.end if isinstance(window, Window) else now,
            extracted=staged,
            inserted=outcomes["insert"],
            updated=outcomes["update"],
            unchanged=outcomes["unchanged"],
            stale=outcomes["stale"],
            dead_lettered=dead_lettered,
            dead_letters_by_reason={str(k): int(v) for k, v in sorted(by_reason.items())},
            duration_ms=int((time.perf_counter() - t0) * 1000),
            watermark=None,
            lag_seconds=None,
            window_note=window_note,
        )
        if result.accounted != result.extracted:
            raise AssertionError(f"{ds.name}: accounting identity broken: {result}")
        _record_batch(con, result, run_id, started_at, "succeeded", None)
        validation_dead = dead_lettered - sum(outcomes[o] for o in load.DEAD_LETTER_OUTCOMES)
        for later in DUAL_PUBLISH.get(ds.name, ()) if also_publish is None else also_publish:
            _publish_successor(con, ds, later, result, validation_dead, run_id, started_at)
        if mode == "microbatch" and isinstance(window, Window):
            run_sql(
                con,
                read_sql("warehouse", "merge_watermark.sql"),
                {"dataset": ds.name, "watermark": window.end},
            )
        crash_point("load", ds.name)
        run_sql(con, "COMMIT")
        crash_point("committed", ds.name)
    except BaseException as exc:
        _rollback(con)
        _record_failure(con, ds, batch_id, run_id, mode, window, started_at, t0, exc)
        write_freshness(con, settings.data_dir)
        raise
    write_freshness(con, settings.data_dir)
    return _with_position(con, ds, result, now)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back, without masking the error that got us here.

    DuckDB aborts the transaction itself after some failures (a full disk, a fatal I/O error);
    ROLLBACK then fails with "no transaction is active", which must not replace the real cause.
    """
    try:
        run_sql(con, "ROLLBACK")
    except duckdb.Error as exc:
        log.warning("rollback after a failed batch: %s", exc)


def is_transient(exc: BaseException) -> bool:
    """Connection loss, timeouts and lock contention: worth retrying, never a dead letter.

    Authentication, a missing database or relation, TLS settings, privileges and row-level
    security fail at once (``source_session.error_kind``): retrying cannot fix them.
    """
    if isinstance(exc, duckdb.IOException):
        return True
    return source_session.error_kind(exc) == "transient"


_DSN_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def scrub(text: str, dsn: str | None) -> str:
    """An error message fit for logs: no DSN password, wherever the driver put it."""
    if dsn:
        text = text.replace(dsn, redact_dsn(dsn))
    text = _DSN_PASSWORD.sub(r"\1***@", text)
    return re.sub(r"(password=)[^&\s]+", r"\1***", text, flags=re.IGNORECASE)


def _publish_successor(
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    later: Dataset,
    primary: BatchResult,
    validation_dead: int,
    run_id: str | None,
    started_at: datetime,
) -> None:
    """Fill a successor version's table from the staged rows; its own ledger row."""
    ensure_schema(con, (later,))
    stage = load.stage_successor(con, ds, later)
    outcomes = load.apply_classified(con, later, primary.batch_id, stage, dead_letters=False)
    lake.record_change(con, later, primary.batch_id, outcomes["insert"], outcomes["update"])
    dead = validation_dead + sum(outcomes[o] for o in load.DEAD_LETTER_OUTCOMES)
    counted = BatchResult(
        **{
            **asdict(primary),
            "batch_id": str(uuid.uuid4()),
            "dataset": later.name,
            "inserted": outcomes["insert"],
            "updated": outcomes["update"],
            "unchanged": outcomes["unchanged"],
            "stale": outcomes["stale"],
            "dead_lettered": dead,
        }
    )
    if counted.accounted != counted.extracted:
        raise AssertionError(f"{later.name}: accounting identity broken: {counted}")
    _record_batch(con, counted, run_id, started_at, "succeeded", None)


def _with_position(
    con: duckdb.DuckDBPyConnection, ds: Dataset, result: BatchResult, now: datetime
) -> BatchResult:
    ((latest,),) = run_sql(con, f'SELECT max("{ds.cursor}") FROM "{ds.name}"')
    lag = None if latest is None else max((now - latest).total_seconds(), 0.0)
    return BatchResult(
        **{**asdict(result), "watermark": get_watermark(con, ds), "lag_seconds": lag}
    )


def _record_batch(
    con: duckdb.DuckDBPyConnection,
    r: BatchResult,
    run_id: str | None,
    started_at: datetime,
    status: str,
    error: str | None,
) -> None:
    finished_at = datetime.now(UTC)
    run_sql(
        con,
        read_sql("warehouse", "merge_export_freshness.sql"),
        {
            "dataset": r.dataset,
            "status": status,
            "started_at": started_at,
            "finished_at": finished_at,
            "error": error,
            "window_note": r.window_note,
        },
    )
    run_sql(
        con,
        read_sql("warehouse", "insert_batch.sql"),
        {
            "batch_id": r.batch_id,
            "dataset": r.dataset,
            "run_id": run_id,
            "mode": r.mode,
            "window_start": r.window_start,
            "window_end": r.window_end,
            "extracted": r.extracted,
            "inserted": r.inserted,
            "updated": r.updated,
            "unchanged": r.unchanged,
            "stale": r.stale,
            "dead_lettered": r.dead_lettered,
            "started_at": started_at,
            "finished_at": finished_at,
            "duration_ms": r.duration_ms,
            "status": status,
            "error": error,
            "window_note": r.window_note,
        },
    )


def _record_failure(
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    batch_id: str,
    run_id: str | None,
    mode: BatchMode,
    window: Window | KeySet | None,
    started_at: datetime,
    t0: float,
    exc: BaseException,
) -> None:
    """Record a failed batch in the ledger, best effort, in its own transaction."""
    failed = BatchResult(
        batch_id=batch_id,
        dataset=ds.name,
        mode=mode,
        window_start=window.start if isinstance(window, Window) else None,
        window_end=window.end if isinstance(window, Window) else started_at,
        extracted=0,
        inserted=0,
        updated=0,
        unchanged=0,
        stale=0,
        dead_lettered=0,
        dead_letters_by_reason={},
        duration_ms=int((time.perf_counter() - t0) * 1000),
        watermark=None,
        lag_seconds=None,
    )
    try:
        error = scrub(f"{type(exc).__name__}: {exc}", None)
        if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM: Dagster's interrupt has no text
            error = f"{type(exc).__name__}: interrupted (Ctrl-C or SIGTERM); rolled back"
        _record_batch(con, failed, run_id, started_at, "failed", error)
    except duckdb.Error:
        pass


def run_backfill(
    ds: Dataset,
    first: date,
    last: date,
    *,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    org_id: str | None = None,
    run_id: str | None = None,
    progress: Callable[[int, int, BatchResult], None] | None = None,
) -> list[BatchResult]:
    """Re-extract UTC days ``first``..``last`` of one dataset, one transaction per day.

    Idempotent: the same backfill twice leaves the warehouse identical. It never moves the
    micro-batch watermark, and the load stage never lets an old version overwrite a newer one.
    """
    if last < first:
        raise ValueError(f"backfill window ends ({last}) before it starts ({first})")
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    results = []
    for i, day in enumerate(days, start=1):
        result = run_dataset_batch(
            ds,
            source_dsn=source_dsn,
            con=con,
            settings=settings,
            run_id=run_id,
            mode="backfill",
            window=Window.days(day, day, org_id),
        )
        results.append(result)
        crash_point("backfill.day", ds.name)
        if progress is not None:
            progress(i, len(days), result)
    return results


def combine(results: list[BatchResult]) -> dict[str, int]:
    """Totals of several batches (e.g. a backfill's days) per outcome."""
    return {f: sum(getattr(r, f) for r in results) for f in COUNT_FIELDS}
