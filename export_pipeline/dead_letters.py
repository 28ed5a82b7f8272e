"""Dead-letter lifecycle (contract "Failure handling"): retry with backoff, exhaust, resolve.

A dead letter is ``open`` when written, with ``next_retry_at`` one base delay ahead. On each
micro-batch the due letters are re-read from the source by key and re-validated: a row fixed at
the source loads and its letter is ``resolved``; one still invalid gets another attempt after
exponential backoff with jitter, until ``dead_letter_max_attempts``, when it is ``exhausted``
(a failing asset check: the contract's "operational alerting"). An operator may resolve a letter
explicitly, with a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import duckdb

from export_pipeline.batch import run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import Dataset
from export_pipeline.extract import KeySet
from export_pipeline.sqlfiles import read_sql
from export_pipeline.warehouse import fetch_dicts, run_sql

DeadLetterStatus = Literal["open", "resolved", "exhausted"]
STATUSES: tuple[DeadLetterStatus, ...] = ("open", "resolved", "exhausted")


@dataclass(frozen=True)
class RetryOutcome:
    dataset: str
    retried: int
    resolved: int
    still_open: int
    exhausted: int


def due_keys(con: duckdb.DuckDBPyConnection, ds: Dataset, now: datetime) -> list[str]:
    rows = run_sql(
        con, read_sql("warehouse", "select_due_dead_letters.sql"), {"dataset": ds.name, "now": now}
    )
    return [r[0] for r in rows]


def retry_dead_letters(
    ds: Dataset,
    *,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    run_id: str | None = None,
    keys: list[str] | None = None,
    now: datetime | None = None,
) -> RetryOutcome:
    """Re-read and re-validate the due letters of ``ds`` (or exactly ``keys``, due or not)."""
    keys = due_keys(con, ds, now or datetime.now(UTC)) if keys is None else keys
    if not keys:
        return RetryOutcome(ds.name, 0, 0, 0, 0)
    run_dataset_batch(
        ds,
        source_dsn=source_dsn,
        con=con,
        settings=settings,
        run_id=run_id,
        mode="retry",
        window=KeySet(tuple(keys)),
    )
    run_sql(
        con,
        read_sql("warehouse", "update_retried_dead_letters.sql"),
        {
            "dataset": ds.name,
            "keys": keys,
            "max_attempts": settings.dead_letter_max_attempts,
            "base_seconds": settings.dead_letter_retry_base_seconds,
        },
    )
    open_now = _keys_with_status(con, ds, keys, "open")
    exhausted_now = _keys_with_status(con, ds, keys, "exhausted")
    return RetryOutcome(
        ds.name,
        retried=len(keys),
        resolved=len(keys) - open_now - exhausted_now,
        still_open=open_now,
        exhausted=exhausted_now,
    )


def _keys_with_status(
    con: duckdb.DuckDBPyConnection, ds: Dataset, keys: list[str], status: DeadLetterStatus
) -> int:
    ((n,),) = run_sql(
        con,
        "SELECT count(DISTINCT record_key) FROM dx_dead_letter WHERE dataset = $d "
        "AND status = $status AND record_key::VARCHAR IN (SELECT unnest($keys::VARCHAR[]))",
        {"d": ds.name, "status": status, "keys": keys},
    )
    return int(n)


@dataclass(frozen=True)
class LetterFilter:
    """What `dead-letter list` selects; ``None`` means any."""

    dataset: str | None = None
    status: str | None = None
    reason: str | None = None
    #: Letters first seen at or after this time.
    since: datetime | None = None

    def params(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "status": self.status,
            "reason": self.reason,
            "since": self.since,
        }


def list_letters(
    con: duckdb.DuckDBPyConnection,
    dataset: str | None = None,
    status: str | None = None,
    limit: int | None = 1000,
    *,
    reason: str | None = None,
    since: datetime | None = None,
    offset: int = 0,
) -> list[dict]:
    """Dead letters, newest first (by first seen), filtered; ``limit`` None lists them all."""
    where = LetterFilter(dataset, status, reason, since)
    return fetch_dicts(
        con,
        read_sql("warehouse", "select_dead_letters.sql"),
        {**where.params(), "limit": limit, "offset": offset},
    )


def count_letters(con: duckdb.DuckDBPyConnection, where: LetterFilter) -> int:
    """How many letters ``where`` selects (the listing shows a page of them)."""
    ((n,),) = run_sql(con, read_sql("warehouse", "count_dead_letters.sql"), where.params())
    return int(n)


def letter(con: duckdb.DuckDBPyConnection, dead_letter_id: str) -> dict | None:
    rows = fetch_dicts(
        con,
        "SELECT dead_letter_id, dataset, record_key::VARCHAR AS record_key, status "
        "FROM dx_dead_letter WHERE dead_letter_id = $id",
        {"id": dead_letter_id},
    )
    return rows[0] if rows else None


def resolve(con: duckdb.DuckDBPyConnection, dead_letter_id: str, note: str) -> bool:
    """An operator's explicit decision: the letter is closed, with the reason recorded. Resolving
    a resolved letter again appends the new note (each note stamped with its UTC time)."""
    rows = run_sql(
        con,
        read_sql("warehouse", "update_operator_resolution.sql"),
        {"id": dead_letter_id, "note": note},
    )
    return bool(rows)


def exhausted_count(con: duckdb.DuckDBPyConnection, ds: Dataset) -> int:
    ((n,),) = run_sql(
        con,
        "SELECT count(*) FROM dx_dead_letter WHERE dataset = $d AND status = 'exhausted'",
        {"d": ds.name},
    )
    return int(n)
