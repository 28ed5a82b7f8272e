"""Reconciliation of source against warehouse: every drift seen, repaired where it can be, and why.

Per dataset and UTC day (today: its closed hours), the source's in-scope rows are read again
through the normal extract and validate path (same projection, redaction and casts) into a
temporary DuckDB table and compared with the warehouse **row by row, on every contract column**,
keyed by primary key. Keys on the warehouse's side of the day that the day's read does not hold
(rows whose cursor moved, rows gone from the source) are read from the source by key, so a key is
judged on both sides wherever its cursor now lies. Redaction, numeric rounding, timestamps and
JSON formatting are those of the export itself, so equal data compares equal by construction.

Each differing key gets one kind (:data:`Kind`); a key with an open dead letter is accounted for
by it (the warehouse equals the source minus dead letters). Repair is one ``repair`` batch per
dataset and day (ledger row, one transaction, exactly once): rows to replace or remove are
deleted and recorded in ``_deleted_rows`` (the lake follows that table, see README), and the keys
to re-read are re-extracted by key. Then the day is compared again: "repaired" counts keys that
compare equal after the repair, not attempts.

``--all`` mode first compares per-day aggregates computed inside each database (count, and a
60-bit hash sum of keys, cursor, version and the columns redaction never touches) and compares
rows only on the days whose aggregates differ.

Anomalies: null rates of critical fields and the run status mix, per day and per organisation;
an organisation is judged against its own trailing baseline with a beta-binomial test, which
holds for small tenants (see :func:`rate_anomaly`).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import adbc_driver_postgresql.dbapi as adbc
import duckdb
import polars as pl

from export_pipeline import extract, load, validate
from export_pipeline.batch import run_dataset_batch, scrub
from export_pipeline.config import Settings
from export_pipeline.contract import OPERATION_RUNS, RUN_STATUSES, Dataset
from export_pipeline.extract import KeySet, Window, quote_ident
from export_pipeline.faults import crash_point
from export_pipeline.relations import source_dataset
from export_pipeline.sqlfiles import read_sql
from export_pipeline.warehouse import DUCKDB_TYPES, fetch_dicts, run_sql

log = logging.getLogger(__name__)

CheckName = Literal[
    "row_count_parity",
    "content_parity",
    "source_regressions",
    "max_lag_sla",
    "null_rate",
    "status_distribution",
]

#: Why a key differs. The first six are repaired by re-reading the key (``content_differs``
#: and ``warehouse_version_ahead`` replace the warehouse row, whatever its version;
#: ``source_rewritten_same_version``, a source row written again, with a new cursor and new
#: content, but the version it had, goes through the load's rule: a ``version_conflict`` dead
#: letter, the stored row kept, as a micro-batch reading it would do);
#: ``extra_in_warehouse`` rows (written by no batch of the ledger) are removed; the last two are
#: states the warehouse keeps on purpose: reported once, then remembered as acknowledged.
Kind = Literal[
    "missing_in_warehouse",
    "content_differs",
    "warehouse_version_behind",
    "warehouse_version_ahead",
    "dead_letter_missing",
    "source_rewritten_same_version",
    "extra_in_warehouse",
    "deleted_at_source",
    "source_version_regressed",
]
KINDS: tuple[Kind, ...] = Kind.__args__  # type: ignore[attr-defined]
REREAD_KINDS: tuple[Kind, ...] = (
    "missing_in_warehouse",
    "content_differs",
    "warehouse_version_behind",
    "warehouse_version_ahead",
    "dead_letter_missing",
    "source_rewritten_same_version",
)
#: Kinds whose warehouse row is deleted before the key is re-read (the load would otherwise keep
#: it: an equal version with other content is a conflict, a higher version wins).
REPLACE_KINDS: tuple[Kind, ...] = ("content_differs", "warehouse_version_ahead")
#: Kinds that are the warehouse keeping what the source lost (with the ``report`` policy).
KEPT_KINDS: tuple[Kind, ...] = ("source_version_regressed", "deleted_at_source")

DeletePolicy = Literal["report", "propagate"]

#: Example keys listed per kind.
EXAMPLES = 5
#: Dead-letter reasons of the load stage: a valid source row the warehouse does not hold on
#: purpose (guard violation, equal-version conflict), accounted for by its open letter.
LOAD_REASONS = ("uniqueness_violation", "version_conflict")

#: Status mix, all organisations together: chi-square against the trailing baseline, judged
#: with this many runs on each side...
STATUS_MIN_SAMPLE = 200
#: ...rejecting at this level...
STATUS_P_VALUE = 1e-3
#: ...with some status's share moved by at least this much.
STATUS_MIN_SHIFT = 0.05
#: Days of history baselines are drawn from (before the judged day).
STATUS_BASELINE_DAYS = 7
#: Per organisation (status mix and null rates): a rate is judged with at least this many rows
#: on the day and in the baseline...
TENANT_MIN_ROWS = 10
#: ...and fires when the beta-binomial tail is below this (split over the rates tested) and the
#: rate rose by at least this much (absolute).
TENANT_P_VALUE = 1e-3
TENANT_MIN_EFFECT = 0.15


@dataclass(frozen=True)
class CheckResult:
    dataset: str
    day: date | None
    org_id: str | None
    check: CheckName
    observed: int | float | None
    expected: int | float | None
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)


# --- windows ---------------------------------------------------------------------------------

_TICK = timedelta(microseconds=1)


def day_start(day: date) -> datetime:
    """The first instant of a UTC day."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def day_window(day: date, closed_until: datetime | None = None) -> Window:
    """The cursor window of a UTC day, ``(day 00:00, day+1 00:00)``, cut at ``closed_until``."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    if closed_until is not None:
        end = min(end, closed_until)
    return Window(start - _TICK, end - _TICK)


def closed_hours_end(now: datetime, settings: Settings) -> datetime:
    """Today's closed hours end at the last full hour before ``now - safety_lag``."""
    cut = now.astimezone(UTC) - settings.safety_lag
    return cut.replace(minute=0, second=0, microsecond=0)


def trailing_days(n: int, today: date | None = None) -> list[date]:
    """The ``n`` complete UTC days before ``today``."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=i) for i in range(n, 0, -1)]


def default_days(settings: Settings, today: date | None = None) -> list[date]:
    """The default run: the trailing complete days and today (its closed hours)."""
    today = today or datetime.now(UTC).date()
    return [*trailing_days(settings.reconcile_days, today), today]


# --- canonical SQL pieces --------------------------------------------------------------------


def _key_text(ds: Dataset, alias: str) -> str:
    """A key's canonical text in DuckDB: its columns as text, ``|``-joined."""
    parts = [f"coalesce({alias}.{quote_ident(c)}::VARCHAR, '')" for c in ds.primary_key]
    return "concat_ws('|', " + ", ".join(parts) + ")"


def _letter_key_text(ds: Dataset, alias: str) -> str:
    """The same text from a dead letter's ``record_key`` JSON."""
    parts = [
        f"coalesce(json_extract_string({alias}.record_key, '$.{c}'), '')" for c in ds.primary_key
    ]
    return "concat_ws('|', " + ", ".join(parts) + ")"


def _record_key(ds: Dataset, alias: str) -> str:
    """A row's key as the JSON object dead letters and key sets use."""
    fields = ", ".join(f"{quote_ident(c)} := {alias}.{quote_ident(c)}" for c in ds.primary_key)
    return f"to_json(struct_pack({fields}))::VARCHAR"


def _same(ds: Dataset, left: str, right: str, skip: tuple[str, ...] = ()) -> str:
    return " AND ".join(
        f"{left}.{quote_ident(c)} IS NOT DISTINCT FROM {right}.{quote_ident(c)}"
        for c in ds.column_names
        if c not in skip
    )


def _row_hash_all(ds: Dataset, alias: str) -> str:
    """DuckDB's 64-bit hash of every contract column of a row (equal rows, equal hashes)."""
    return "hash(" + ", ".join(f"{alias}.{quote_ident(c)}" for c in ds.column_names) + ")"


def _differing_columns(ds: Dataset, left: str, right: str) -> str:
    names = [
        f"CASE WHEN {left}.{quote_ident(c)} IS DISTINCT FROM {right}.{quote_ident(c)} "
        f"THEN {_literal_name(c)} END"
        for c in ds.column_names
    ]
    return "list_filter([" + ", ".join(names) + "], lambda x: x IS NOT NULL)"


def _literal_name(c: str) -> str:
    """A contract column name as a SQL string literal (names are identifiers: no quotes)."""
    return quote_ident(c).replace('"', "'")


# --- staging the source's rows, through the export's own extract and validate ----------------

SOURCE = "_recon_source"
SOURCE_LETTERS = "_recon_source_letters"
WAREHOUSE = "_recon_warehouse"
LETTERS = "_recon_letters"
DIFF = "_recon_diff"


NARROW = "_recon_source_narrow"


def _narrow_columns(ds: Dataset) -> tuple[str, ...]:
    return (*ds.primary_key, *([ds.version_column] if ds.version_column else []))


def _create_source_stage(con: duckdb.DuckDBPyConnection, ds: Dataset) -> None:
    """The source side: narrow rows (key, version, hash of every column) for every row read,
    whole rows only for the keys whose hashes differ (read again by key), and dead letters."""
    columns = ", ".join(f"{quote_ident(c.name)} {DUCKDB_TYPES[c.type]}" for c in ds.columns)
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE {SOURCE} ({columns}, _by_key BOOLEAN)")
    narrow = ", ".join(
        f"{quote_ident(c)} {DUCKDB_TYPES[ds.column(c).type]}" for c in _narrow_columns(ds)
    )
    run_sql(
        con,
        f"CREATE OR REPLACE TEMP TABLE {NARROW} ({narrow}, _by_key BOOLEAN, _k VARCHAR, "
        "_h UBIGINT)",
    )
    run_sql(
        con,
        f"CREATE OR REPLACE TEMP TABLE {SOURCE_LETTERS} (record_key VARCHAR, org_id VARCHAR, "
        "cursor_at TIMESTAMPTZ, reason VARCHAR, _by_key BOOLEAN)",
    )


def _stage_source(
    src: adbc.Connection,
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    selection: Window | KeySet,
    settings: Settings,
    now: datetime,
    whole_rows: bool = False,
) -> None:
    """Read ``selection`` from the source as a batch would (extract, redact, validate, cast);
    stage each valid row narrow (the hash is of the very values a batch would store), or whole
    with ``whole_rows``, and each dead letter."""
    by_key = "true" if isinstance(selection, KeySet) else "false"
    casts = ", ".join(
        f"CAST({quote_ident(c.name)} AS {DUCKDB_TYPES[c.type]}) AS {quote_ident(c.name)}"
        for c in ds.columns
    )
    if whole_rows:
        statement = f"INSERT INTO {SOURCE} SELECT {casts}, {by_key} FROM _incoming"
    else:
        as_stored = ", ".join(  # JSON as text: the same hash, without parsing each document
            f"{quote_ident(c.name)}"
            if c.type == "jsonb"
            else f"CAST({quote_ident(c.name)} AS {DUCKDB_TYPES[c.type]}) AS {quote_ident(c.name)}"
            for c in ds.columns
        )
        narrow = ", ".join(f"s.{quote_ident(c)}" for c in _narrow_columns(ds))
        statement = (
            f"INSERT INTO {NARROW} SELECT {narrow}, {by_key}, {_key_text(ds, 's')}, "
            f"{_row_hash_all(ds, 's')} FROM (SELECT {as_stored} FROM _incoming) AS s"
        )
    uuids = tuple(c.name for c in ds.columns if c.type == "uuid")
    # A window read also returns the rows whose cursor is null or infinite (they belong to no
    # day and are dead letters of every batch): a day's comparison leaves them out.
    letter_filter = "" if isinstance(selection, KeySet) else "WHERE cursor_at IS NOT NULL"
    for record_batch in extract.prefetch(
        extract.extract_window(src, ds, selection, settings.batch_size)
    ):
        checked = validate.validate_batch(ds, validate.to_frame(record_batch), now)
        if not checked.valid.is_empty():
            load._insert_from(con, checked.valid, statement, uuids)
        if whole_rows or checked.dead_letters.is_empty():
            continue
        load._insert_from(
            con,
            checked.dead_letters,
            f"INSERT INTO {SOURCE_LETTERS} SELECT record_key, org_id, cursor_at, reason, "
            f"{by_key} FROM _incoming {letter_filter}",
        )


# --- comparing one window ---------------------------------------------------------------------


@dataclass
class Comparison:
    """One dataset's window compared key by key."""

    source_rows: int
    warehouse_rows: int
    dead_lettered: int
    kinds: dict[str, int]
    examples: dict[str, list[dict[str, Any]]]
    #: Per differing key: kind, record_key JSON, versions (for acknowledgements).
    keys: list[dict[str, Any]]
    #: Keys equal on both sides whose open dead letter is stale (re-read: it resolves).
    stale_letters: tuple[str, ...] = ()

    @property
    def differing(self) -> int:
        return sum(self.kinds.values())


def compare_window(
    ds: Dataset,
    window: Window,
    *,
    src: adbc.Connection,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    now: datetime,
    ledger_batches: str,
) -> Comparison:
    """Compare the source's and the warehouse's rows of ``window``, every contract column."""
    table = quote_ident(ds.name)
    cursor = quote_ident(ds.cursor)
    params = {"start": window.start, "end": window.end, "dataset": ds.name}
    _create_source_stage(con, ds)
    _stage_source(src, con, ds, window, settings, now)
    version = quote_ident(ds.version_column) if ds.version_column else None
    # The warehouse side, narrow: key, a hash of every contract column, version, batch.
    narrow = (
        ", ".join(f"t.{quote_ident(c)}" for c in ds.primary_key)
        + f", t._batch_id, {_key_text(ds, 't')} AS _k, {_row_hash_all(ds, 't')} AS _h, "
        + (f"t.{version}" if version else "NULL::BIGINT")
        + " AS _version"
    )
    run_sql(
        con,
        f"CREATE OR REPLACE TEMP TABLE {WAREHOUSE} AS SELECT {narrow}, true AS _in_window "
        f"FROM {table} AS t WHERE t.{cursor} > $start AND t.{cursor} <= $end",
        {"start": window.start, "end": window.end},
    )
    run_sql(
        con,
        f"CREATE OR REPLACE TEMP TABLE {LETTERS} AS SELECT {_letter_key_text(ds, 'd')} AS _k, "
        "d.record_key::VARCHAR AS record_key, d.reason, d.cursor_at, "
        "d.cursor_at > $start AND d.cursor_at <= $end AS _in_window "
        "FROM dx_dead_letter AS d WHERE d.dataset = $dataset AND d.status <> 'resolved' "
        "QUALIFY row_number() OVER (PARTITION BY d.record_key ORDER BY d.last_seen_at DESC) = 1",
        params,
    )
    # Source keys the warehouse holds outside the window (its cursor differs): fetch by key.
    source_keys = f"SELECT _k FROM {NARROW}"
    ((elsewhere,),) = run_sql(
        con, f"SELECT count(*) FROM ({source_keys}) AS s ANTI JOIN {WAREHOUSE} USING (_k)"
    )
    key_match = " AND ".join(f"t.{quote_ident(c)} = s.{quote_ident(c)}" for c in ds.primary_key)
    if elsewhere:
        run_sql(
            con,
            f"INSERT INTO {WAREHOUSE} SELECT {narrow}, false "
            f"FROM {table} AS t SEMI JOIN {NARROW} AS s ON {key_match} "
            f"WHERE NOT (t.{cursor} > $start AND t.{cursor} <= $end)",
            {"start": window.start, "end": window.end},
        )
    # Warehouse keys (rows, and open letters of the window) the source's window does not hold:
    # read them from the source by key, wherever their cursor now is.
    orphans = run_sql(
        con,
        f"SELECT DISTINCT record_key FROM (SELECT {_record_key(ds, 'w')} AS record_key, w._k "
        f"FROM {WAREHOUSE} AS w UNION ALL SELECT l.record_key, l._k FROM {LETTERS} AS l "
        f"WHERE l._in_window) AS o WHERE o._k NOT IN ({source_keys}) AND o._k NOT IN "
        f"(SELECT {_letter_key_text(ds, 'x')} FROM {SOURCE_LETTERS} AS x) ORDER BY record_key",
    )
    if orphans:
        _stage_source(src, con, ds, KeySet(tuple(k for (k,) in orphans)), settings, now)
    # Whole rows are compared, column by column, only where the hashes differ.
    run_sql(
        con,
        "CREATE OR REPLACE TEMP TABLE _recon_detail (_k VARCHAR, columns VARCHAR[], "
        "same_but_version BOOLEAN)",
    )
    pairs = f"SELECT s._k FROM {NARROW} AS s JOIN {WAREHOUSE} AS w USING (_k) WHERE s._h <> w._h"
    differing = run_sql(
        con,
        f"SELECT DISTINCT {_record_key(ds, 's')} FROM {NARROW} AS s WHERE _k IN ({pairs})",
    )
    if differing:
        _stage_source(
            src, con, ds, KeySet(tuple(k for (k,) in differing)), settings, now, whole_rows=True
        )
        # The hash of the row as a batch would store it (redacted) replaces the narrow one.
        run_sql(
            con,
            f"UPDATE {NARROW} AS n SET _h = s._h FROM (SELECT {_key_text(ds, 's')} AS _k, "
            f"{_row_hash_all(ds, 's')} AS _h FROM {SOURCE} AS s) AS s WHERE n._k = s._k",
        )
        same_but_version = _same(ds, "s", "w", (ds.version_column or "",)) if version else "false"
        w_keys = " AND ".join(f"t.{quote_ident(c)} = p.{quote_ident(c)}" for c in ds.primary_key)
        run_sql(
            con,
            f"INSERT INTO _recon_detail SELECT s._k, {_differing_columns(ds, 's', 'w')}, "
            f"{same_but_version} FROM (SELECT * FROM (SELECT s.*, {_key_text(ds, 's')} AS _k "
            f"FROM {SOURCE} AS s) AS s WHERE _k IN ({pairs})) "
            f"AS s JOIN (SELECT t.*, {_key_text(ds, 't')} AS _k FROM {table} AS t WHERE t.rowid "
            f"IN (SELECT t.rowid FROM {table} AS t SEMI JOIN (SELECT * FROM {WAREHOUSE} "
            f"WHERE _k IN ({pairs})) AS p ON {w_keys})) AS w USING (_k)",
        )
    # The keys worth a look: hashes differ or one side lacks the key, or a dead letter is
    # involved. Equal rows without letters (nearly all) stop here.
    run_sql(
        con,
        f"CREATE OR REPLACE TEMP TABLE _recon_keys AS "
        f"SELECT _k FROM {NARROW} AS s FULL OUTER JOIN {WAREHOUSE} AS w USING (_k) "
        f"WHERE s._h IS DISTINCT FROM w._h "
        f"UNION SELECT {_letter_key_text(ds, 'x')} FROM {SOURCE_LETTERS} AS x "
        f"UNION SELECT _k FROM {LETTERS} WHERE _in_window "
        f"UNION SELECT _k FROM {LETTERS} SEMI JOIN {NARROW} USING (_k) "
        f"UNION SELECT _k FROM {LETTERS} SEMI JOIN {WAREHOUSE} USING (_k)",
    )
    upsert = version is not None
    sv = f"s.{version}" if version else "NULL::BIGINT"
    load_reasons = "[" + ", ".join(_literal_name(r) for r in LOAD_REASONS) + "]"
    run_sql(
        con,
        f"""
CREATE OR REPLACE TEMP TABLE {DIFF} AS
WITH s AS (SELECT * FROM {NARROW}),
si AS (SELECT {_letter_key_text(ds, "x")} AS _k, any_value(record_key) AS record_key
       FROM {SOURCE_LETTERS} AS x GROUP BY ALL),
l AS (SELECT _k, list(reason) AS reasons, any_value(record_key) AS record_key,
             bool_or(_in_window) AS in_window FROM {LETTERS} GROUP BY _k),
u AS (SELECT _k FROM _recon_keys),
k AS (
    SELECT u._k, s._k IS NOT NULL AS in_s, w._k IS NOT NULL AS in_w,
        si._k IS NOT NULL AS source_invalid, l._k IS NOT NULL AS lettered, l.reasons,
        s._h = w._h AS same, coalesce(d.same_but_version, false) AS same_but_version,
        {sv} AS source_version, w._version AS warehouse_version, d.columns,
        w._batch_id IN ({ledger_batches}) AS w_from_ledger,
        CASE WHEN s._k IS NOT NULL THEN {_record_key(ds, "s")}
             WHEN w._k IS NOT NULL THEN {_record_key(ds, "w")}
             ELSE coalesce(si.record_key, l.record_key) END AS record_key
    FROM u LEFT JOIN s USING (_k) LEFT JOIN {WAREHOUSE} AS w USING (_k)
        LEFT JOIN si USING (_k) LEFT JOIN l USING (_k) LEFT JOIN _recon_detail AS d USING (_k)
)
SELECT *, CASE
    WHEN source_invalid THEN CASE WHEN lettered THEN NULL ELSE 'dead_letter_missing' END
    WHEN in_s AND in_w AND same THEN NULL
    WHEN in_s AND NOT in_w THEN
        CASE WHEN list_has_any(reasons, {load_reasons}) THEN NULL ELSE 'missing_in_warehouse' END
    WHEN in_s AND {str(upsert).lower()} AND source_version > warehouse_version
        THEN 'warehouse_version_behind'
    WHEN in_s AND {str(upsert).lower()} AND source_version < warehouse_version
        THEN CASE WHEN same_but_version THEN 'warehouse_version_ahead'
                  ELSE 'source_version_regressed' END
    WHEN in_s AND {str(upsert).lower()} AND list_contains(columns, {_literal_name(ds.cursor)})
        AND len(columns) > 1 THEN
        CASE WHEN list_contains(reasons, 'version_conflict') THEN NULL
             ELSE 'source_rewritten_same_version' END
    WHEN in_s THEN
        CASE WHEN list_contains(reasons, 'version_conflict') THEN NULL ELSE 'content_differs' END
    WHEN in_w AND NOT w_from_ledger THEN 'extra_in_warehouse'
    ELSE 'deleted_at_source'
END AS kind
FROM k
""",
    )
    ((source_rows, warehouse_rows, dead_lettered),) = run_sql(
        con,
        f"SELECT (SELECT count(*) FROM {NARROW} WHERE NOT _by_key) "
        f"+ (SELECT count(*) FROM {SOURCE_LETTERS} WHERE NOT _by_key), "
        f"(SELECT count(*) FROM {WAREHOUSE} WHERE _in_window) + (SELECT count(*) FROM "
        f"{LETTERS} AS l WHERE l._in_window AND l._k NOT IN (SELECT _k FROM {WAREHOUSE})), "
        f"(SELECT count(*) FROM {DIFF} WHERE kind IS NULL AND lettered AND NOT "
        "coalesce(same, false))",
    )
    keys = fetch_dicts(
        con,
        f"SELECT kind, record_key, _k, source_version, warehouse_version, columns, in_w "
        f"FROM {DIFF} WHERE kind IS NOT NULL ORDER BY kind, record_key",
    )
    stale = run_sql(
        con,
        f"SELECT record_key FROM {DIFF} WHERE kind IS NULL AND lettered AND in_s AND in_w "
        "AND same AND NOT source_invalid ORDER BY record_key",
    )
    kinds: dict[str, int] = {}
    examples: dict[str, list[dict[str, Any]]] = {}
    for k in keys:
        kinds[k["kind"]] = kinds.get(k["kind"], 0) + 1
        shown = examples.setdefault(k["kind"], [])
        if len(shown) < EXAMPLES:
            example: dict[str, Any] = {"key": json.loads(k["record_key"])}
            if k["columns"]:
                example["columns"] = list(k["columns"])
            if k["source_version"] is not None or k["warehouse_version"] is not None:
                example["source_version"] = k["source_version"]
                example["warehouse_version"] = k["warehouse_version"]
            shown.append(example)
    return Comparison(
        source_rows=int(source_rows),
        warehouse_rows=int(warehouse_rows),
        dead_lettered=int(dead_lettered),
        kinds=kinds,
        examples=examples,
        keys=keys,
        stale_letters=tuple(k for (k,) in stale),
    )


# --- acknowledged states ----------------------------------------------------------------------


def _acknowledge(
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    keys: list[dict[str, Any]],
    run_id: str | None,
) -> tuple[list[dict[str, Any]], int]:
    """Remember kept states; return (the ones seen for the first time, how many were known).

    A key is known when it was reported before with the same kind and versions."""
    if not keys:
        return [], 0
    frame = pl.DataFrame(
        {
            "record_key": [k["record_key"] for k in keys],
            "kind": [k["kind"] for k in keys],
            "source_version": [k["source_version"] for k in keys],
            "warehouse_version": [k["warehouse_version"] for k in keys],
        },
        schema={
            "record_key": pl.String,
            "kind": pl.String,
            "source_version": pl.Int64,
            "warehouse_version": pl.Int64,
        },
    )
    run_sql(
        con,
        "CREATE OR REPLACE TEMP TABLE _recon_kept (record_key VARCHAR, kind VARCHAR, "
        "source_version BIGINT, warehouse_version BIGINT)",
    )
    load._insert_from(con, frame, "INSERT INTO _recon_kept SELECT * FROM _incoming")
    known = {
        (record_key, kind)
        for record_key, kind in run_sql(
            con, read_sql("reconcile", "select_acknowledged.sql"), {"dataset": ds.name}
        )
    }
    run_sql(
        con,
        read_sql("reconcile", "merge_acknowledged.sql"),
        {"dataset": ds.name, "run_id": run_id},
    )
    new = [k for k in keys if (k["record_key"], k["kind"]) not in known]
    return new, len(keys) - len(new)


# --- repair ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepairPlan:
    reread: tuple[str, ...]
    #: (_k, reason) of warehouse rows deleted in the repair's transaction.
    delete: tuple[tuple[str, str], ...]
    #: record keys of open letters resolved (their key is gone from the source; propagate).
    resolve_letters: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.reread or self.delete or self.resolve_letters)


def plan_repair(ds: Dataset, cmp: Comparison, policy: DeletePolicy) -> RepairPlan:
    """What to re-read and delete. An upsert row is replaced (deleted, then re-read) where the
    load would keep it; an append row differing in content is simply updated by the load."""
    reread, delete, resolve = [], [], []
    for k in cmp.keys:
        kind = k["kind"]
        if kind in REREAD_KINDS:
            reread.append(k["record_key"])
            if kind in REPLACE_KINDS and k["in_w"] and ds.write_mode == "upsert":
                delete.append((k["_k"], "replaced"))
        elif kind == "extra_in_warehouse":
            delete.append((k["_k"], kind))
        elif kind == "deleted_at_source" and policy == "propagate":
            if k["in_w"]:
                delete.append((k["_k"], kind))
            else:
                resolve.append(k["record_key"])
    reread += cmp.stale_letters  # equal rows: the re-read resolves their stale letters
    return RepairPlan(tuple(reread), tuple(delete), tuple(resolve))


def _apply_deletes(
    con: duckdb.DuckDBPyConnection, ds: Dataset, plan: RepairPlan, run_id: str | None
) -> Callable[[duckdb.DuckDBPyConnection, str], None]:
    """The repair batch's ``before_apply``: delete, recording each row in ``_deleted_rows``."""
    if plan.delete:
        run_sql(con, "CREATE OR REPLACE TEMP TABLE _recon_delete (_k VARCHAR, reason VARCHAR)")
        con.executemany("INSERT INTO _recon_delete VALUES (?, ?)", [list(d) for d in plan.delete])

    def before_apply(con: duckdb.DuckDBPyConnection, batch_id: str) -> None:
        table = quote_ident(ds.name)
        if plan.delete:
            row = ", ".join(f"{quote_ident(c)} := t.{quote_ident(c)}" for c in ds.column_names)
            key_match = " AND ".join(
                f"t.{quote_ident(c)} = w.{quote_ident(c)}" for c in ds.primary_key
            )
            doomed = (
                f"SELECT t.*, d.reason FROM {table} AS t JOIN {WAREHOUSE} AS w ON {key_match} "
                "JOIN _recon_delete AS d ON d._k = w._k"
            )
            run_sql(
                con,
                read_sql("reconcile", "insert_deleted_rows.sql").format(
                    record_key=_record_key(ds, "t"),
                    cursor=quote_ident(ds.cursor),
                    row=row,
                    doomed=doomed,
                ),
                {"batch_id": batch_id, "dataset": ds.name, "run_id": run_id},
            )
            run_sql(
                con,
                f"DELETE FROM {table} AS t USING (SELECT w.* FROM {WAREHOUSE} AS w "
                f"JOIN _recon_delete AS d ON d._k = w._k) AS w WHERE {key_match}",
            )
        for record_key in plan.resolve_letters:
            run_sql(
                con,
                read_sql("reconcile", "update_letters_deleted_at_source.sql"),
                {"dataset": ds.name, "record_key": record_key, "batch_id": batch_id},
            )

    return before_apply


def repair(
    ds: Dataset,
    plan: RepairPlan,
    *,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    run_id: str | None,
) -> dict[str, Any]:
    """One repair batch: deletions and re-reads in one transaction, recorded in the ledger."""
    result = run_dataset_batch(
        ds,
        source_dsn=source_dsn,
        con=con,
        settings=settings,
        run_id=run_id,
        mode="repair",
        window=KeySet(plan.reread),
        before_apply=_apply_deletes(con, ds, plan, run_id),
    )
    crash_point("repair.bucket", ds.name)
    return {
        "batch_id": result.batch_id,
        "reread": len(plan.reread),
        "deleted": sum(1 for _k, reason in plan.delete if reason != "replaced"),
        "replaced": sum(1 for _k, reason in plan.delete if reason == "replaced"),
        "letters_resolved": len(plan.resolve_letters),
        "extracted": result.extracted,
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "stale": result.stale,
        "dead_lettered": result.dead_lettered,
    }


# --- per-day aggregates (the --all pass) ------------------------------------------------------


def _aggregate_columns(ds: Dataset) -> list[str]:
    """Columns both databases spell identically and redaction never touches: keys, cursor,
    version, and every non-text column plus closed-vocabulary text (``status``, ...)."""
    out = list(dict.fromkeys([*ds.primary_key, ds.cursor]))
    if ds.version_column:
        out.append(ds.version_column)
    for c in ds.source_columns:
        if c.name in out:
            continue
        if c.type in ("uuid", "int", "bigint", "timestamptz", "numeric") or (
            c.type == "text" and c.allowed
        ):
            out.append(c.name)
    return out


#: Each logical type's canonical text, per database (equal values give equal text).
_CANONICAL: dict[str, dict[str, str]] = {
    "postgres": {
        "timestamptz": "coalesce(((extract(epoch FROM {col}) * 1000000)::bigint)::text, '')",
        "numeric": "coalesce(trim_scale(round({col}::numeric, 6))::text, '')",
        "other": "coalesce({col}::text, '')",
        "hash": "('x' || substr(md5(concat_ws('|', {parts})), 1, 15))::bit(60)::bigint",
    },
    "duckdb": {
        "timestamptz": "coalesce(epoch_us({col})::VARCHAR, '')",
        "numeric": "coalesce(rtrim(rtrim({col}::VARCHAR, '0'), '.'), '')",
        "other": "coalesce({col}::VARCHAR, '')",
        "hash": "('0x' || substr(md5(concat_ws('|', {parts})), 1, 15))::BIGINT",
    },
}


def _row_hash(ds: Dataset, alias: str, dialect: Literal["postgres", "duckdb"]) -> str:
    spelling = _CANONICAL[dialect]
    parts = []
    for name in _aggregate_columns(ds):
        kind = ds.column(name).type
        form = kind if kind in ("timestamptz", "numeric") else "other"
        parts.append(spelling[form].format(col=f"{alias}.{quote_ident(name)}"))
    return spelling["hash"].format(parts=", ".join(parts))


def source_day_aggregates(src: adbc.Connection, ds: Dataset, window: Window) -> dict[date, tuple]:
    query = read_sql("reconcile", "source_aggregates.sql").format(
        row_hash=_row_hash(ds, "q", "postgres"),
        window_query=extract.window_query(ds),
        cursor=quote_ident(ds.cursor),
    )
    with src.cursor() as cur:
        extract.bind_window(cur, ds, window)
        cur.execute(query)
        rows = cur.fetchall()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def warehouse_day_aggregates(
    con: duckdb.DuckDBPyConnection, ds: Dataset, window: Window
) -> dict[date, tuple]:
    """Rows, plus open dead letters of keys it does not hold (counted; their content is the
    source's, so a day with such letters always compares rows)."""
    query = read_sql("reconcile", "warehouse_aggregates.sql").format(
        row_cursor=f"t.{quote_ident(ds.cursor)}",
        row_hash=_row_hash(ds, "t", "duckdb"),
        table=quote_ident(ds.name),
        letter_key_in_table=" AND ".join(
            f"t.{quote_ident(c)}::VARCHAR = json_extract_string(d.record_key, '$.{c}')"
            for c in ds.primary_key
        ),
    )
    rows = run_sql(con, query, {"start": window.start, "end": window.end, "dataset": ds.name})
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def days_differing(source: dict[date, tuple], warehouse: dict[date, tuple]) -> list[date]:
    """Days whose count or hash differ, or holding dead letters (their rows are compared)."""
    out = []
    for day in set(source) | set(warehouse):
        s = source.get(day, (0, 0))
        w = warehouse.get(day, (0, 0, 0))
        if s != w[:2] or w[2]:
            out.append(day)
    return sorted(out)


# --- checks ----------------------------------------------------------------------------------


def lag_check(
    ds: Dataset,
    src: adbc.Connection,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    today: date,
) -> CheckResult:
    """now - latest exported cursor, and how far the warehouse trails the source.

    Passes when the warehouse is within the SLA of the source (a quiet source is not a breach)
    and the last successful batch is within the SLA (a stopped pipeline is).
    """
    cursor = quote_ident(ds.cursor)
    now = extract.source_now(src)
    source_max = extract.source_max_cursor(src, source_dataset(ds, settings))
    ((warehouse_max,),) = run_sql(con, f"SELECT max({cursor}) FROM {quote_ident(ds.name)}")
    ((last_success,),) = run_sql(
        con,
        "SELECT max(finished_at) FROM _export_batches WHERE dataset = $d AND status = 'succeeded'",
        {"d": ds.name},
    )
    return _lag_result(ds, settings, today, now, source_max, warehouse_max, last_success)


def _lag_result(
    ds: Dataset,
    settings: Settings,
    today: date | None,
    now: datetime,
    source_max: datetime | None,
    warehouse_max: datetime | None,
    last_success: datetime | None,
) -> CheckResult:
    sla = settings.lag_sla_seconds
    lag = None if warehouse_max is None else (now - warehouse_max).total_seconds()
    behind = 0.0
    if source_max is not None:
        behind = (
            (source_max - warehouse_max).total_seconds() if warehouse_max is not None else math.inf
        )
    since_success = math.inf if last_success is None else (now - last_success).total_seconds()
    passed = max(behind, 0.0) <= sla and since_success <= sla
    return CheckResult(
        ds.name,
        today,
        None,
        "max_lag_sla",
        observed=lag,
        expected=sla,
        passed=passed,
        details={
            "lag_seconds": lag,
            "source_relative_lag_seconds": behind if math.isfinite(behind) else None,
            "seconds_since_last_successful_batch": since_success
            if math.isfinite(since_success)
            else None,
            "sla_seconds": sla,
        },
    )


def beta_binomial_sf(k: int, n: int, a: float, b: float) -> float:
    """P(X >= k) for X ~ BetaBinomial(n, a, b): k or more of n when the rate is Beta(a, b)."""
    if k <= 0:
        return 1.0

    def log_pmf(x: int) -> float:
        return (
            math.lgamma(n + 1)
            - math.lgamma(x + 1)
            - math.lgamma(n - x + 1)
            + math.lgamma(x + a)
            + math.lgamma(n - x + b)
            - math.lgamma(n + a + b)
            - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
        )

    return min(1.0, sum(math.exp(log_pmf(x)) for x in range(k, n + 1)))


def rate_anomaly(hits: int, n: int, base_hits: int, base_n: int, tests: int = 1) -> dict[str, Any]:
    """Did a rate rise (``hits`` of ``n`` today against ``base_hits`` of ``base_n`` before)?

    The baseline rate is uncertain when the tenant is small, so today's count is judged against
    the beta-binomial predictive distribution of the baseline (Jeffreys prior, Beta(h + 1/2,
    m - h + 1/2)): the chance of ``hits`` or more in ``n`` if nothing changed. It fires below
    ``TENANT_P_VALUE / tests`` with a rise of at least ``TENANT_MIN_EFFECT``, and only with
    ``TENANT_MIN_ROWS`` on both sides. 40 runs going from 10% to 70% failed fires (p ~ 1e-14);
    7 failures of 40 against 10% does not (p ~ 0.09).
    """
    rate = hits / n if n else 0.0
    base_rate = base_hits / base_n if base_n else 0.0
    judged = n >= TENANT_MIN_ROWS and base_n >= TENANT_MIN_ROWS
    p = beta_binomial_sf(hits, n, base_hits + 0.5, base_n - base_hits + 0.5) if judged else 1.0
    return {
        "rows": n,
        "hits": hits,
        "rate": round(rate, 4),
        "baseline_rows": base_n,
        "baseline_hits": base_hits,
        "baseline_rate": round(base_rate, 4),
        "p_value": p,
        "judged": judged,
        "anomalous": judged
        and p < TENANT_P_VALUE / tests
        and rate - base_rate >= TENANT_MIN_EFFECT,
    }


def null_rate_checks(
    ds: Dataset, con: duckdb.DuckDBPyConnection, days: list[date], threshold: float
) -> list[CheckResult]:
    """Per day, the critical field's null rate against the threshold (all organisations), and
    per organisation against its own trailing baseline (:func:`rate_anomaly`)."""
    out = []
    cursor = quote_ident(ds.cursor)
    for critical in ds.critical_fields:
        present = " OR ".join(
            "(" + " AND ".join(f"{quote_ident(c)} IS NOT NULL" for c in group) + ")"
            for group in critical.any_of
        )
        rows = fetch_dicts(
            con,
            f"SELECT timezone('UTC', {cursor})::DATE AS day, org_id::VARCHAR AS org_id, "
            f"count(*) AS n, count(*) FILTER (WHERE NOT ({present})) AS missing "
            f"FROM {quote_ident(ds.name)} WHERE timezone('UTC', {cursor})::DATE "
            "BETWEEN $first AND $last GROUP BY ALL",
            {"first": min(days) - timedelta(days=STATUS_BASELINE_DAYS), "last": max(days)},
        )
        per: dict[tuple[date, str | None], list[int]] = {}
        for r in rows:
            for org in (None, r["org_id"]):
                acc = per.setdefault((r["day"], org), [0, 0])
                acc[0] += int(r["n"])
                acc[1] += int(r["missing"])
        for day in days:
            n, missing = per.get((day, None), [0, 0])
            rate = missing / n if n else 0.0
            out.append(
                CheckResult(
                    ds.name,
                    day,
                    None,
                    "null_rate",
                    observed=round(rate, 4),
                    expected=threshold,
                    passed=rate <= threshold,
                    details={
                        "field": critical.name,
                        "any_of": [list(g) for g in critical.any_of],
                        "rows": n,
                        "missing": missing,
                    },
                )
            )
            for org in sorted({o for (d, o) in per if d == day and o is not None}):
                n, missing = per[(day, org)]
                base = [
                    per.get((day - timedelta(days=i), org), [0, 0])
                    for i in range(1, STATUS_BASELINE_DAYS + 1)
                ]
                test = rate_anomaly(missing, n, sum(b[1] for b in base), sum(b[0] for b in base))
                if not test["judged"]:
                    continue
                out.append(
                    CheckResult(
                        ds.name,
                        day,
                        org,
                        "null_rate",
                        observed=test["rate"],
                        expected=test["baseline_rate"],
                        passed=not test["anomalous"],
                        details={"field": critical.name, "rule": "tenant_baseline", **test},
                    )
                )
    return out


def chi_square_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df): the regularized upper gamma Q(df/2, x/2)."""
    if x <= 0:
        return 1.0
    half = x / 2
    # Q(1/2, y) = erfc(sqrt(y)), Q(1, y) = exp(-y), and Q(s + 1, y) = Q(s, y) + y^s e^-y / G(s+1).
    s, q = (0.5, math.erfc(math.sqrt(half))) if df % 2 else (1.0, math.exp(-half))
    while s < df / 2:
        q += math.exp(s * math.log(half) - half - math.lgamma(s + 1))
        s += 1
    return min(max(q, 0.0), 1.0)


def status_shift(day_counts: dict[str, int], baseline_counts: dict[str, int]) -> dict[str, Any]:
    """Chi-square test of homogeneity of a day's status counts against a baseline's."""
    statuses = [s for s in RUN_STATUSES if day_counts.get(s, 0) + baseline_counts.get(s, 0) > 0]
    n_day, n_base = sum(day_counts.values()), sum(baseline_counts.values())
    if len(statuses) < 2 or n_day == 0 or n_base == 0:
        return {"statistic": 0.0, "p_value": 1.0, "max_shift": 0.0, "n": n_day}
    total = n_day + n_base
    statistic = 0.0
    for s in statuses:
        column = day_counts.get(s, 0) + baseline_counts.get(s, 0)
        for observed, n in ((day_counts.get(s, 0), n_day), (baseline_counts.get(s, 0), n_base)):
            expected = n * column / total
            statistic += (observed - expected) ** 2 / expected
    shift = max(
        abs(day_counts.get(s, 0) / n_day - baseline_counts.get(s, 0) / n_base) for s in statuses
    )
    return {
        "statistic": statistic,
        "p_value": chi_square_sf(statistic, len(statuses) - 1),
        "max_shift": shift,
        "n": n_day,
    }


def tenant_status_shift(
    day_counts: dict[str, int], baseline_counts: dict[str, int]
) -> dict[str, Any]:
    """Each non-success status's share today against the tenant's own baseline."""
    n, base_n = sum(day_counts.values()), sum(baseline_counts.values())
    watched = [s for s in RUN_STATUSES if s != "succeeded"]
    tests = {
        s: rate_anomaly(day_counts.get(s, 0), n, baseline_counts.get(s, 0), base_n, len(watched))
        for s in watched
    }
    fired = [s for s, t in tests.items() if t["anomalous"]]
    return {
        "rule": "tenant_baseline",
        "n": n,
        "baseline_n": base_n,
        "judged": any(t["judged"] for t in tests.values()),
        "anomalous": bool(fired),
        "statuses_risen": fired,
        "p_value": min(t["p_value"] for t in tests.values()),
        "by_status": {s: {k: t[k] for k in ("hits", "rate", "baseline_rate", "p_value")}
                      for s, t in tests.items()},
    }  # fmt: skip


def status_distribution_checks(
    con: duckdb.DuckDBPyConnection, days: list[date]
) -> list[CheckResult]:
    """Each day's status mix: all organisations together against the trailing
    ``STATUS_BASELINE_DAYS`` days (chi-square, judged with ``STATUS_MIN_SAMPLE`` runs), and each
    organisation against its own baseline (:func:`tenant_status_shift`, small tenants too)."""
    first = min(days) - timedelta(days=STATUS_BASELINE_DAYS)
    rows = fetch_dicts(
        con,
        "SELECT timezone('UTC', created_at)::DATE AS day, org_id::VARCHAR AS org_id, status, "
        f"count(*) AS n FROM {quote_ident(OPERATION_RUNS.name)} "
        "WHERE timezone('UTC', created_at)::DATE BETWEEN $first AND $last GROUP BY ALL",
        {"first": first, "last": max(days)},
    )
    counts: dict[tuple[date, str | None], dict[str, int]] = {}
    for r in rows:
        for org in (None, r["org_id"]):
            per = counts.setdefault((r["day"], org), {})
            per[r["status"]] = per.get(r["status"], 0) + int(r["n"])
    out = []
    for day in days:
        baseline_days = [day - timedelta(days=i) for i in range(1, STATUS_BASELINE_DAYS + 1)]
        orgs = sorted({org for (d, org) in counts if d == day and org is not None})
        for org in [None, *orgs]:
            today_counts = counts.get((day, org), {})
            baseline: dict[str, int] = {}
            for d in baseline_days:
                for status, n in counts.get((d, org), {}).items():
                    baseline[status] = baseline.get(status, 0) + n
            if org is not None:
                test = tenant_status_shift(today_counts, baseline)
                if not test["judged"]:
                    continue
                anomalous = test["anomalous"]
            else:
                test = status_shift(today_counts, baseline)
                n_day, n_base = sum(today_counts.values()), sum(baseline.values())
                judged = n_day >= STATUS_MIN_SAMPLE and n_base >= STATUS_MIN_SAMPLE
                anomalous = (
                    judged
                    and test["p_value"] < STATUS_P_VALUE
                    and test["max_shift"] >= STATUS_MIN_SHIFT
                )
                test = {**test, "judged": judged, "rule": "chi_square_all_orgs"}
            out.append(
                CheckResult(
                    OPERATION_RUNS.name,
                    day,
                    org,
                    "status_distribution",
                    observed=test["p_value"],
                    expected=STATUS_P_VALUE if org is None else TENANT_P_VALUE,
                    passed=not anomalous,
                    details={
                        **test,
                        "day_counts": today_counts,
                        "baseline_counts": baseline,
                        "baseline_days": STATUS_BASELINE_DAYS,
                    },
                )
            )
    return out


# --- the whole reconciliation ----------------------------------------------------------------


def _ledger_batches() -> str:
    return "SELECT batch_id FROM _export_batches WHERE status = 'succeeded'"


def _summary(cmp: Comparison) -> dict[str, Any]:
    return {
        kind: {"count": cmp.kinds[kind], "examples": cmp.examples.get(kind, [])}
        for kind in KINDS
        if cmp.kinds.get(kind)
    }


def reconcile_day(
    ds: Dataset,
    day: date,
    window: Window,
    *,
    src: adbc.Connection,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    repair_drift: bool,
    run_id: str | None,
    now: datetime,
) -> list[CheckResult]:
    """Compare one day's window row by row, repair, compare again; the day's parity checks."""
    policy: DeletePolicy = "propagate" if settings.reconcile_deletes == "propagate" else "report"
    compare = dict(src=src, con=con, settings=settings, now=now, ledger_batches=_ledger_batches())
    before = compare_window(ds, window, **compare)  # type: ignore[arg-type]
    after, repair_done, attempted = before, None, 0
    plan = plan_repair(ds, before, policy)
    if repair_drift and not plan.empty:
        planned = set(plan.reread) | set(plan.resolve_letters)
        attempted_keys = {k for k, _r in plan.delete} | {
            k["_k"] for k in before.keys if k["record_key"] in planned
        }
        attempted = len(attempted_keys)
        try:
            repair_done = repair(
                ds, plan, source_dsn=source_dsn, con=con, settings=settings, run_id=run_id
            )
        except Exception as exc:  # rolled back, ledger row written: report it, check the rest
            log.warning("%s %s: repair failed: %s", ds.name, day, scrub(str(exc), source_dsn))
            repair_done = {"error": scrub(f"{type(exc).__name__}: {exc}", source_dsn)}
        after = compare_window(ds, window, **compare)  # type: ignore[arg-type]
        still = {k["_k"] for k in after.keys}
        repair_done["repaired"] = len(attempted_keys - still)
        repair_done["attempted"] = attempted
        repair_done["stale_letters_rechecked"] = len(before.stale_letters)
        repair_done["verified"] = "compared again after the repair"
    kept_kinds = ("source_version_regressed",) + (
        ("deleted_at_source",) if policy == "report" else ()
    )
    kept = [k for k in after.keys if k["kind"] in kept_kinds]
    failing = {kind: n for kind, n in after.kinds.items() if kind not in kept_kinds}
    new_kept, known_kept = _acknowledge(con, ds, kept, run_id)
    window_info = {
        "window_start": (window.start + _TICK).isoformat() if window.start else None,
        "window_end": (window.end + _TICK).isoformat(),
        "method": "rows (every contract column)",
        "delete_policy": policy,
    }
    parity = CheckResult(
        ds.name,
        day,
        None,
        "content_parity",
        observed=sum(failing.values()),
        expected=0,
        passed=not failing,
        details={
            **window_info,
            "differences": _summary(after),
            "found_before_repair": _summary(before) if repair_done else None,
            "repair": repair_done,
            "dead_lettered_keys": after.dead_lettered,
        },
    )
    counts_equal = after.source_rows == after.warehouse_rows
    rows = CheckResult(
        ds.name,
        day,
        None,
        "row_count_parity",
        observed=after.warehouse_rows,
        expected=after.source_rows,
        passed=counts_equal or not failing,
        details={
            **window_info,
            "source_rows": after.source_rows,
            "warehouse_rows_and_open_letters": after.warehouse_rows,
            "explained_by": None if counts_equal else {k: after.kinds[k] for k in after.kinds},
        },
    )
    regressions = CheckResult(
        ds.name,
        day,
        None,
        "source_regressions",
        observed=len(new_kept),
        expected=0,
        passed=not new_kept,
        details={
            "new": {
                kind: [json.loads(k["record_key"]) for k in new_kept if k["kind"] == kind][
                    :EXAMPLES
                ]
                for kind in kept_kinds
                if any(k["kind"] == kind for k in new_kept)
            },
            "new_count": len(new_kept),
            "acknowledged": known_kept,
            "delete_policy": policy,
        },
    )
    return [rows, parity, regressions]


def aggregate_day_result(ds: Dataset, day: date, counts: tuple) -> list[CheckResult]:
    """A day whose aggregates agree (``--all``): passed, saying what was compared."""
    details = {
        "method": "aggregates (count; hash of keys, cursor, version and unredacted columns)",
        "source_rows": counts[0],
    }
    return [
        CheckResult(ds.name, day, None, "row_count_parity", counts[0], counts[0], True, details),
        CheckResult(ds.name, day, None, "content_parity", 0, 0, True, details),
    ]


def reconcile_dataset(
    ds: Dataset,
    days: Iterable[date] | None = None,
    *,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    repair: bool = True,
    run_id: str | None = None,
    today: date | None = None,
    all_days: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Every check of one dataset over ``days`` (default: trailing days and today's closed
    hours; ``all_days``: every day, aggregates first), repairing drift when asked to."""
    ds = source_dataset(ds, settings)  # source queries read the configured relation
    say = progress or log.info
    today = today or datetime.now(UTC).date()
    run_sql(con, read_sql("reconcile", "create_reconciliation_tables.sql"))
    results: list[CheckResult] = []
    with extract.connect(source_dsn) as src:
        now = extract.source_now(src)
        closed = closed_hours_end(now, settings)
        if all_days:
            everything = Window(None, closed - _TICK)
            t0 = time.perf_counter()
            source = source_day_aggregates(src, ds, everything)
            warehouse = warehouse_day_aggregates(con, ds, everything)
            to_compare = days_differing(source, warehouse)
            say(
                f"{ds.name}: {len(set(source) | set(warehouse))} days by aggregates in "
                f"{time.perf_counter() - t0:.1f}s; {len(to_compare)} to compare row by row"
            )
            for day in sorted(set(source) - set(to_compare)):
                results += aggregate_day_result(ds, day, source[day])
            days = to_compare
        days = sorted({d for d in (days if days is not None else default_days(settings, today))})
        days = [d for d in days if day_window(d, closed).end >= day_start(d)]
        for i, day in enumerate(days, start=1):
            t0 = time.perf_counter()
            results += reconcile_day(
                ds,
                day,
                day_window(day, closed),
                src=src,
                source_dsn=source_dsn,
                con=con,
                settings=settings,
                repair_drift=repair,
                run_id=run_id,
                now=now,
            )
            parity = results[-2]
            say(
                f"{ds.name}: day {i}/{len(days)} {day}: "
                f"{'ok' if parity.passed else f'{parity.observed} keys differ'}"
                f"{' (repaired)' if parity.details.get('repair') else ''} "
                f"in {time.perf_counter() - t0:.1f}s"
            )
        results.append(lag_check(ds, src, con, settings, today))
    checked_days = sorted(
        {r.day for r in results if r.day is not None and r.check.endswith("parity")}
    )
    if ds.critical_fields and checked_days:
        results += null_rate_checks(ds, con, checked_days, settings.null_rate_threshold)
    if ds.name == OPERATION_RUNS.name and checked_days:
        results += status_distribution_checks(con, checked_days)
    record_results(con, results, run_id)
    return results


def record_results(
    con: duckdb.DuckDBPyConnection, results: list[CheckResult], run_id: str | None
) -> None:
    """All results in one statement (one INSERT per result cost ~30 ms each)."""
    run_sql(con, read_sql("reconcile", "create_reconciliation_tables.sql"))
    if not results:
        return
    frame = pl.DataFrame(
        {
            "result_id": [str(uuid.uuid4()) for _ in results],
            "run_id": [run_id] * len(results),
            "dataset": [r.dataset for r in results],
            "day": [r.day for r in results],
            "org_id": [r.org_id for r in results],
            "check_name": [r.check for r in results],
            "observed": [None if r.observed is None else float(r.observed) for r in results],
            "expected": [None if r.expected is None else float(r.expected) for r in results],
            "passed": [r.passed for r in results],
            "details": [json.dumps(r.details, default=str) for r in results],
        },
        schema={
            "result_id": pl.String,
            "run_id": pl.String,
            "dataset": pl.String,
            "day": pl.Date,
            "org_id": pl.String,
            "check_name": pl.String,
            "observed": pl.Float64,
            "expected": pl.Float64,
            "passed": pl.Boolean,
            "details": pl.String,
        },
    )
    load._insert_from(con, frame, read_sql("reconcile", "insert_reconciliation_results.sql"))
