"""Daily reconciliation of source against warehouse, with repair (contract "Data Quality").

Per dataset and UTC day, computed inside each database (aggregates, never rows):

- ``row_count_parity``: in-scope source rows = warehouse rows + open dead letters of keys the
  warehouse does not hold;
- ``checksum_parity``: the sum of a 60-bit hash of each row's stable key columns (primary key,
  cursor, and ``record_version`` for upserts), from identical canonical text on both sides: uuids
  as lowercase text, timestamps as UTC epoch microseconds, integers as decimal text;
- ``max_lag_sla``: now - latest exported cursor, and source max cursor - warehouse max cursor;
- ``null_rate`` on the contract's critical fields;
- ``status_distribution`` for runs: a day's status mix against the trailing baseline.

Repair: a day failing count or checksum parity is bisected into org, then (org, hour) buckets
with the same aggregates; each differing bucket is re-extracted (its window, and by key the rows
the warehouse holds there but the source no longer does), then the day is checked again.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import adbc_driver_postgresql.dbapi as adbc
import duckdb

from export_pipeline import extract
from export_pipeline.batch import BatchResult, run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import OPERATION_RUNS, RUN_STATUSES, Dataset
from export_pipeline.extract import KeySet, Window, quote_ident
from export_pipeline.faults import crash_point
from export_pipeline.relations import source_dataset
from export_pipeline.sqlfiles import read_sql
from export_pipeline.warehouse import fetch_dicts, run_sql

CheckName = Literal[
    "row_count_parity", "checksum_parity", "max_lag_sla", "null_rate", "status_distribution"
]

#: Status-mix test: a day (or an org's day) needs this many runs to be judged at all...
STATUS_MIN_SAMPLE = 200
#: ...the chi-square test of its mix against the baseline must reject at this level...
STATUS_P_VALUE = 1e-3
#: ...and some status's share must have moved by at least this much (practical significance:
#: at large volumes a chi-square test rejects differences nobody cares about).
STATUS_MIN_SHIFT = 0.05
#: Days of history the status baseline is drawn from (before the judged day).
STATUS_BASELINE_DAYS = 7


@dataclass(frozen=True)
class CheckResult:
    dataset: str
    day: date | None
    org_id: str | None
    check: CheckName
    observed: float | None
    expected: float | None
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Bucket:
    day: date
    org_id: str | None = None
    hour: int | None = None

    def window(self) -> Window:
        tick = timedelta(microseconds=1)
        start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
        if self.hour is None:
            return Window(start - tick, start + timedelta(days=1) - tick, self.org_id)
        start += timedelta(hours=self.hour)
        return Window(start - tick, start + timedelta(hours=1) - tick, self.org_id)


# --- canonical key hashes, one expression per database ---------------------------------------


def _key_columns(ds: Dataset) -> list[str]:
    cols = [*ds.primary_key, ds.cursor]
    if ds.version_column:
        cols.append(ds.version_column)
    return cols


#: How each database spells a key column's canonical text and the 60-bit hash of a row's key
#: text, side by side: both must produce identical values for equal data.
_CANONICAL: dict[str, dict[str, str]] = {
    "postgres": {
        "timestamptz": "coalesce(((extract(epoch FROM {col}) * 1000000)::bigint)::text, '')",
        "other": "coalesce({col}::text, '')",
        "hash": "('x' || substr(md5(concat_ws('|', {parts})), 1, 15))::bit(60)::bigint",
    },
    "duckdb": {
        "timestamptz": "coalesce(epoch_us({col})::VARCHAR, '')",
        "other": "coalesce({col}::VARCHAR, '')",
        "hash": "('0x' || substr(md5(concat_ws('|', {parts})), 1, 15))::BIGINT",
    },
}


def _row_hash(ds: Dataset, alias: str, dialect: Literal["postgres", "duckdb"]) -> str:
    spelling = _CANONICAL[dialect]
    parts = [
        spelling["timestamptz" if ds.column(name).type == "timestamptz" else "other"].format(
            col=f"{alias}.{quote_ident(name)}"
        )
        for name in _key_columns(ds)
    ]
    return spelling["hash"].format(parts=", ".join(parts))


def _duckdb_letter_hash(ds: Dataset) -> str:
    """The same hash, from a dead letter's key, cursor and (for upserts) its row's version."""
    parts = []
    for name in _key_columns(ds):
        if name == ds.cursor:
            parts.append("coalesce(epoch_us(d.cursor_at)::VARCHAR, '')")
        elif name in ds.primary_key:
            parts.append(f"coalesce(json_extract_string(d.record_key, '$.{name}'), '')")
        else:
            parts.append(f"coalesce(json_extract_string(d.row_json, '$.{name}'), '')")
    return _CANONICAL["duckdb"]["hash"].format(parts=", ".join(parts))


# --- aggregates per bucket -------------------------------------------------------------------

Level = Literal["day", "org", "hour"]


def _pg_buckets(ds: Dataset, level: Level) -> tuple[str, str]:
    cursor = f"q.{quote_ident(ds.cursor)}"
    exprs = [f"({cursor} AT TIME ZONE 'UTC')::date AS day"]
    if level in ("org", "hour"):
        exprs.append("q.org_id::text AS org_id")
    if level == "hour":
        exprs.append(f"extract(hour FROM {cursor} AT TIME ZONE 'UTC')::int AS hour")
    return ", ".join(exprs), ", ".join(str(i + 1) for i in range(len(exprs)))


def _duckdb_buckets(level: Level) -> str:
    exprs = ["timezone('UTC', cursor_at)::DATE AS day"]
    if level in ("org", "hour"):
        exprs.append("org_id")
    if level == "hour":
        exprs.append("hour(timezone('UTC', cursor_at)) AS hour")
    return ", ".join(exprs)


def _bucket_of(row: dict, level: Level) -> Bucket:
    return Bucket(
        day=row["day"],
        org_id=row.get("org_id") if level != "day" else None,
        hour=row.get("hour") if level == "hour" else None,
    )


def source_aggregates(
    src: adbc.Connection, ds: Dataset, window: Window, level: Level
) -> dict[Bucket, tuple[int, int]]:
    buckets, group_by = _pg_buckets(ds, level)
    query = read_sql("reconcile", "source_aggregates.sql").format(
        buckets=buckets,
        group_by=group_by,
        row_hash=_row_hash(ds, "q", "postgres"),
        window_query=extract.window_query(ds, by_org=window.org_id is not None),
        cursor=quote_ident(ds.cursor),
    )
    with src.cursor() as cur:
        extract.bind_window(cur, ds, window)
        cur.execute(query)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return {_bucket_of(r, level): (int(r["row_count"]), int(r["checksum"])) for r in rows}


def _letter_key_in_table(ds: Dataset) -> str:
    """SQL: the table ``t`` holds the key of dead letter ``d``."""
    return " AND ".join(
        f"t.{quote_ident(c)}::VARCHAR = json_extract_string(d.record_key, '$.{c}')"
        for c in ds.primary_key
    )


def warehouse_aggregates(
    con: duckdb.DuckDBPyConnection, ds: Dataset, window: Window, level: Level
) -> dict[Bucket, tuple[int, int]]:
    query = read_sql("reconcile", "warehouse_aggregates.sql").format(
        row_cursor=f"t.{quote_ident(ds.cursor)}",
        row_hash=_row_hash(ds, "t", "duckdb"),
        table=quote_ident(ds.name),
        letter_hash=_duckdb_letter_hash(ds),
        letter_key_in_table=_letter_key_in_table(ds),
        buckets=_duckdb_buckets(level),
    )
    rows = fetch_dicts(
        con,
        query,
        {"start": window.start, "end": window.end, "dataset": ds.name, "org_id": window.org_id},
    )
    return {_bucket_of(r, level): (int(r["row_count"]), int(r["checksum"])) for r in rows}


def differing(
    source: dict[Bucket, tuple[int, int]], warehouse: dict[Bucket, tuple[int, int]]
) -> list[Bucket]:
    zero = (0, 0)
    keys = set(source) | set(warehouse)
    return sorted(
        (b for b in keys if source.get(b, zero) != warehouse.get(b, zero)),
        key=lambda b: (b.day, b.org_id or "", b.hour if b.hour is not None else -1),
    )


# --- repair ----------------------------------------------------------------------------------


def _bucket_keys_source(src: adbc.Connection, ds: Dataset, bucket: Bucket) -> set[tuple]:
    keys = ", ".join(f"q.{quote_ident(c)}::text" for c in ds.primary_key)
    cursor = f"q.{quote_ident(ds.cursor)}"
    with src.cursor() as cur:
        extract.bind_window(cur, ds, bucket.window())
        cur.execute(
            f"SELECT {keys} FROM ({extract.window_query(ds, by_org=bucket.org_id is not None)}) "
            "AS q "
            f"WHERE {cursor} IS NOT NULL AND isfinite({cursor})"
        )
        return {tuple(r) for r in cur.fetchall()}


def _bucket_keys_warehouse(
    con: duckdb.DuckDBPyConnection, ds: Dataset, bucket: Bucket
) -> set[tuple]:
    """The keys the warehouse accounts for in a bucket, as the parity aggregates count them:
    its rows, and open dead letters of keys it holds no row for (a dead-lettered row fixed or
    superseded at the source with a cursor elsewhere must follow, like a moved row)."""
    window = bucket.window()
    table = quote_ident(ds.name)
    keys = ", ".join(f"{quote_ident(c)}::VARCHAR" for c in ds.primary_key)
    letter_keys = ", ".join(f"json_extract_string(d.record_key, '$.{c}')" for c in ds.primary_key)
    letter_keys_present = " AND ".join(
        f"json_extract_string(d.record_key, '$.{c}') IS NOT NULL" for c in ds.primary_key
    )
    cursor = quote_ident(ds.cursor)
    rows = run_sql(
        con,
        f"SELECT {keys} FROM {table} WHERE {cursor} > $start "
        f"AND {cursor} <= $end AND ($org_id IS NULL OR org_id::VARCHAR = $org_id) "
        f"UNION SELECT {letter_keys} FROM dx_dead_letter AS d "
        "WHERE d.dataset = $dataset AND d.status <> 'resolved' "
        "AND d.cursor_at > $start AND d.cursor_at <= $end "
        f"AND ($org_id IS NULL OR d.org_id = $org_id) AND {letter_keys_present} "
        f"AND NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {_letter_key_in_table(ds)})",
        {
            "start": window.start,
            "end": window.end,
            "org_id": window.org_id,
            "dataset": ds.name,
        },
    )
    return {tuple(r) for r in rows}


def repair_day(
    ds: Dataset,
    day: date,
    *,
    src: adbc.Connection,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    run_id: str | None,
) -> dict[str, Any]:
    """Bisect a failing day to (org, hour) buckets and re-extract only those; say what was done."""
    day_window = Bucket(day).window()
    orgs = differing(
        source_aggregates(src, ds, day_window, "org"),
        warehouse_aggregates(con, ds, day_window, "org"),
    )
    buckets: list[Bucket] = []
    for org_bucket in orgs:
        window = org_bucket.window()
        buckets += differing(
            source_aggregates(src, ds, window, "hour"),
            warehouse_aggregates(con, ds, window, "hour"),
        )
    batches: list[BatchResult] = []

    def reextract(selection: Window | KeySet) -> None:
        batches.append(
            run_dataset_batch(
                ds,
                source_dsn=source_dsn,
                con=con,
                settings=settings,
                run_id=run_id,
                mode="repair",
                window=selection,
            )
        )

    repaired = []
    for bucket in buckets:
        reextract(bucket.window())
        gone = _bucket_keys_warehouse(con, ds, bucket) - _bucket_keys_source(src, ds, bucket)
        if gone:
            reextract(
                KeySet(
                    tuple(
                        json.dumps(dict(zip(ds.primary_key, k, strict=True)), separators=(",", ":"))
                        for k in sorted(gone)
                    )
                )
            )
        crash_point("repair.bucket", ds.name)
        repaired.append({"org_id": bucket.org_id, "hour": bucket.hour, "reread_by_key": len(gone)})
    return {
        "buckets": repaired,
        "rows_reextracted": sum(b.extracted for b in batches),
        "inserted": sum(b.inserted for b in batches),
        "updated": sum(b.updated for b in batches),
        "dead_lettered": sum(b.dead_lettered for b in batches),
    }


# --- checks ----------------------------------------------------------------------------------


def parity_checks(
    ds: Dataset,
    day: date,
    source: tuple[int, int],
    warehouse: tuple[int, int],
    details: dict[str, Any],
) -> list[CheckResult]:
    return [
        CheckResult(
            ds.name,
            day,
            None,
            "row_count_parity",
            observed=warehouse[0],
            expected=source[0],
            passed=warehouse[0] == source[0],
            details=details,
        ),
        CheckResult(
            ds.name,
            day,
            None,
            "checksum_parity",
            observed=float(warehouse[1]),
            expected=float(source[1]),
            passed=warehouse[1] == source[1],
            details={**details, "source": str(source[1]), "warehouse": str(warehouse[1])},
        ),
    ]


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


def null_rate_checks(
    ds: Dataset, con: duckdb.DuckDBPyConnection, days: list[date], threshold: float
) -> list[CheckResult]:
    out = []
    cursor = quote_ident(ds.cursor)
    for critical in ds.critical_fields:
        present = " OR ".join(
            "(" + " AND ".join(f"{quote_ident(c)} IS NOT NULL" for c in group) + ")"
            for group in critical.any_of
        )
        rows = fetch_dicts(
            con,
            f"SELECT timezone('UTC', {cursor})::DATE AS day, count(*) AS n, "
            f"count(*) FILTER (WHERE NOT ({present})) AS missing "
            f"FROM {quote_ident(ds.name)} WHERE timezone('UTC', {cursor})::DATE "
            "BETWEEN $first AND $last GROUP BY ALL",
            {"first": min(days), "last": max(days)},
        )
        by_day = {r["day"]: r for r in rows}
        for day in days:
            r = by_day.get(day, {"n": 0, "missing": 0})
            rate = r["missing"] / r["n"] if r["n"] else 0.0
            out.append(
                CheckResult(
                    ds.name,
                    day,
                    None,
                    "null_rate",
                    observed=rate,
                    expected=threshold,
                    passed=rate <= threshold,
                    details={
                        "field": critical.name,
                        "any_of": [list(g) for g in critical.any_of],
                        "rows": r["n"],
                        "missing": r["missing"],
                    },
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


def status_distribution_checks(
    con: duckdb.DuckDBPyConnection, days: list[date]
) -> list[CheckResult]:
    """Each day's status mix (overall, and per org with enough runs) against the trailing
    ``STATUS_BASELINE_DAYS`` days; judged only with ``STATUS_MIN_SAMPLE`` runs or more."""
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
            per[r["status"]] = per.get(r["status"], 0) + r["n"]
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
            n_day, n_base = sum(today_counts.values()), sum(baseline.values())
            if org is not None and n_day < STATUS_MIN_SAMPLE:
                continue  # small orgs are covered by the overall mix
            test = status_shift(today_counts, baseline)
            judged = n_day >= STATUS_MIN_SAMPLE and n_base >= STATUS_MIN_SAMPLE
            anomalous = (
                judged
                and test["p_value"] < STATUS_P_VALUE
                and test["max_shift"] >= STATUS_MIN_SHIFT
            )
            out.append(
                CheckResult(
                    OPERATION_RUNS.name,
                    day,
                    org,
                    "status_distribution",
                    observed=test["p_value"],
                    expected=STATUS_P_VALUE,
                    passed=not anomalous,
                    details={
                        **test,
                        "judged": judged,
                        "day_counts": today_counts,
                        "baseline_counts": baseline,
                        "baseline_days": STATUS_BASELINE_DAYS,
                    },
                )
            )
    return out


# --- the whole reconciliation ----------------------------------------------------------------


def reconcile_dataset(
    ds: Dataset,
    days: Iterable[date],
    *,
    source_dsn: str,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    repair: bool = True,
    run_id: str | None = None,
    today: date | None = None,
) -> list[CheckResult]:
    """Every check of one dataset over ``days``; repairs failing days first when asked to."""
    ds = source_dataset(ds, settings)  # source queries read the configured relation
    days = sorted(set(days))
    today = today or datetime.now(UTC).date()
    run_sql(con, read_sql("reconcile", "create_reconciliation_results.sql"))
    span = Window(Bucket(days[0]).window().start, Bucket(days[-1]).window().end)
    results: list[CheckResult] = []
    with extract.connect(source_dsn) as src:
        source = source_aggregates(src, ds, span, "day")
        warehouse = warehouse_aggregates(con, ds, span, "day")
        failing = {b.day for b in differing(source, warehouse)}
        repairs: dict[date, dict[str, Any]] = {}
        if repair:
            for day in sorted(failing & set(days)):
                repairs[day] = repair_day(
                    ds,
                    day,
                    src=src,
                    source_dsn=source_dsn,
                    con=con,
                    settings=settings,
                    run_id=run_id,
                )
            if repairs:
                source = source_aggregates(src, ds, span, "day")
                warehouse = warehouse_aggregates(con, ds, span, "day")
        for day in days:
            details: dict[str, Any] = {}
            if day in repairs:
                details["repaired"] = repairs[day]
                details["failed_before_repair"] = True
            results += parity_checks(
                ds, day, source.get(Bucket(day), (0, 0)), warehouse.get(Bucket(day), (0, 0)),
                details,
            )  # fmt: skip
        results.append(lag_check(ds, src, con, settings, today))
    results += null_rate_checks(ds, con, days, settings.null_rate_threshold)
    if ds.name == OPERATION_RUNS.name:
        results += status_distribution_checks(con, days)
    record_results(con, results, run_id)
    return results


def record_results(
    con: duckdb.DuckDBPyConnection, results: list[CheckResult], run_id: str | None
) -> None:
    run_sql(con, read_sql("reconcile", "create_reconciliation_results.sql"))
    for r in results:
        run_sql(
            con,
            read_sql("reconcile", "insert_reconciliation_result.sql"),
            {
                "result_id": str(uuid.uuid4()),
                "run_id": run_id,
                "dataset": r.dataset,
                "day": r.day,
                "org_id": r.org_id,
                "check_name": r.check,
                "observed": None if r.observed is None else float(r.observed),
                "expected": None if r.expected is None else float(r.expected),
                "passed": r.passed,
                "details": json.dumps(r.details, default=str),
            },
        )


def trailing_days(n: int, today: date | None = None) -> list[date]:
    """The ``n`` complete UTC days before ``today``."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=i) for i in range(n, 0, -1)]
