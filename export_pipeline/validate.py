"""Validation stage: cast an extracted batch to contract types, redact secrets, and split it.

The Pandera (polars) model of each dataset is derived from :mod:`export_pipeline.contract`. A batch
splits into valid rows (loaded) and dead letters (each with a reason and the checks it failed). Only
schema-level problems, which no single row causes, fail the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Literal

import pandera.polars as pa
import polars as pl
import pyarrow as pa_arrow

from export_pipeline.contract import (
    FUTURE_SKEW_SECONDS,
    NUMERIC_PRECISION,
    NUMERIC_SCALE,
    Column,
    Dataset,
    LogicalType,
)
from export_pipeline.redact import redact_columns

DeadLetterReason = Literal[
    "null_required_field",
    "invalid_value",
    "type_cast_failed",
    "uniqueness_violation",
    "version_conflict",
]

#: A uuid travels as its 16 bytes: PostgreSQL's binary form, read by ADBC as Arrow's
#: ``arrow.uuid`` and staged into DuckDB's UUID as is (no text round trip on the hot path).
POLARS_TYPES: dict[LogicalType, pl.DataType] = {
    "uuid": pl.Binary(),
    "text": pl.String(),
    "int": pl.Int32(),
    "bigint": pl.Int64(),
    "numeric": pl.Decimal(NUMERIC_PRECISION, NUMERIC_SCALE),
    "timestamptz": pl.Datetime("us", "UTC"),
    "jsonb": pl.String(),
}

#: What Pandera sees of each type. A uuid is seen as its null mask (see :func:`_pandera_view`):
#: its bytes are checked by the cast, and Pandera's failure report cannot JSON-encode binary.
_PANDERA_TYPES: dict[LogicalType, pl.DataType] = {**POLARS_TYPES, "uuid": pl.Boolean()}

#: Dead-letter frame layout, shared with the load stage.
DEAD_LETTER_SCHEMA = {
    "record_key": pl.String(),
    "org_id": pl.String(),
    "cursor_at": pl.Datetime("us", "UTC"),
    "reason": pl.String(),
    "failed_checks": pl.List(pl.String()),
    "row_json": pl.String(),
}

#: Ranked from most to least fundamental: a row's reason is the first that applies.
_REASON_RANK: tuple[DeadLetterReason, ...] = (
    "type_cast_failed",
    "null_required_field",
    "invalid_value",
)


class SchemaMismatchError(RuntimeError):
    """The source no longer matches the contract; the whole dataset batch is rejected."""


@dataclass(frozen=True)
class ValidatedBatch:
    valid: pl.DataFrame
    dead_letters: pl.DataFrame

    @property
    def extracted(self) -> int:
        return self.valid.height + self.dead_letters.height


@dataclass(frozen=True)
class _NamedCheck:
    name: str
    check: pa.Check


def _column_checks(col: Column, now: datetime) -> list[_NamedCheck]:
    checks: list[_NamedCheck] = []
    if col.allowed is not None:
        checks.append(_NamedCheck(f"{col.name}:allowed_values", pa.Check.isin(list(col.allowed))))
    if col.ge is not None:
        checks.append(_NamedCheck(f"{col.name}:>={col.ge:g}", pa.Check.ge(col.ge)))
    if col.le is not None:
        checks.append(_NamedCheck(f"{col.name}:<={col.le:g}", pa.Check.le(col.le)))
    if col.pattern is not None:
        checks.append(_NamedCheck(f"{col.name}:pattern", pa.Check.str_matches(col.pattern)))
    if col.not_future:
        limit = now + timedelta(seconds=FUTURE_SKEW_SECONDS)
        checks.append(_NamedCheck(f"{col.name}:not_in_future", pa.Check.le(limit)))
    return checks


def _row_rule_check(name: str, left: str, right: str) -> pa.Check:
    def rule(data: pa.PolarsData) -> pl.LazyFrame:
        ok = pl.col(left).is_null() | pl.col(right).is_null() | (pl.col(left) >= pl.col(right))
        return data.lazyframe.select(ok)

    return pa.Check(rule, name=name)


def contract_schema(ds: Dataset, now: datetime) -> tuple[pa.DataFrameSchema, dict]:
    """The Pandera model of a dataset, and a map from (column, check_number) to check names."""
    columns = {}
    names: dict[tuple[str | None, int | None], str] = {}
    for col in ds.columns:
        named = _column_checks(col, now)
        columns[col.name] = pa.Column(
            _PANDERA_TYPES[col.type],
            checks=[n.check for n in named],
            nullable=col.nullable,
        )
        for i, n in enumerate(named):
            names[(col.name, i)] = n.name
    schema = pa.DataFrameSchema(
        columns,
        checks=[_row_rule_check(r.name, r.left, r.right) for r in ds.row_rules],
        strict=True,
        ordered=False,
        name=ds.name,
    )
    return schema, names


@cache
def _ordered_names(ds: Dataset) -> tuple[str, ...]:
    return ds.column_names


@cache
def _redacted_columns(ds: Dataset) -> tuple[list[str], list[str]]:
    """(text columns, JSON columns) of a dataset: every column that can hold a secret, redacted
    before the split, so loaded rows and dead letters (``row_json``) alike never carry one."""
    source = ds.source_columns
    return (
        [c.name for c in source if c.type == "text"],
        [c.name for c in source if c.type == "jsonb"],
    )


def to_frame(batch: pa_arrow.RecordBatch | pa_arrow.Table) -> pl.DataFrame:
    """An Arrow batch from the source as a Polars frame, with extension types unwrapped."""
    table = batch if isinstance(batch, pa_arrow.Table) else pa_arrow.Table.from_batches([batch])
    columns = []
    for column in table.columns:
        if isinstance(column.type, pa_arrow.BaseExtensionType):
            column = pa_arrow.chunked_array(
                [c.storage for c in column.chunks], type=column.type.storage_type
            )
        columns.append(column)
    return pl.from_arrow(pa_arrow.Table.from_arrays(columns, names=table.column_names))


def validate_batch(ds: Dataset, raw: pl.DataFrame, now: datetime | None = None) -> ValidatedBatch:
    """Split one extracted batch into rows that honour the contract and dead letters."""
    now = now or datetime.now(UTC)
    missing = [c.name for c in ds.source_columns if c.name not in raw.columns]
    if missing:
        raise SchemaMismatchError(
            f"{ds.name}: source {ds.source_table} lacks contract column(s) {', '.join(missing)}"
        )
    text, json_columns = _redacted_columns(ds)
    raw = redact_columns(
        raw.with_columns(pl.lit(ds.version).alias("export_schema_version")),
        text=text,
        json_columns=json_columns,
    ).select(_ordered_names(ds))
    cast, cast_failures = _cast(ds, raw)
    schema, check_names = contract_schema(ds, now)
    failures = _failures(schema, check_names, _pandera_view(ds, cast), cast_failures)
    if failures.is_empty():
        return ValidatedBatch(cast, _empty_dead_letters())
    bad = failures.group_by("index").agg(
        pl.col("check").unique().sort().alias("failed_checks"),
        pl.col("rank").min().alias("rank"),
    )
    indexed = raw.with_row_index("index")
    rejected = indexed.join(bad, on="index", how="inner").sort("index")
    valid = cast.with_row_index("index").join(bad, on="index", how="anti").drop("index")
    return ValidatedBatch(valid, _dead_letter_rows(ds, rejected))


def _cast(ds: Dataset, raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cast to contract types; values that cannot be cast become type_cast_failed failures."""
    exprs = []
    failures = []
    for col in ds.columns:
        target = POLARS_TYPES[col.type]
        if raw.schema[col.name] == target and col.type != "timestamptz":
            exprs.append(pl.col(col.name))
            continue
        if col.type in ("text", "jsonb"):
            exprs.append(pl.col(col.name).cast(pl.String))
            continue
        if col.type == "uuid":  # text (a binary column is the target type, kept above)
            casted = _uuid_bytes(pl.col(col.name))
        else:
            casted = pl.col(col.name).cast(target, strict=False)
        if col.type == "timestamptz":
            casted = _finite_timestamp(casted)
        exprs.append(casted)
        lost = pl.col(col.name).is_not_null() & casted.is_null()
        failures.append(pl.when(lost).then(pl.lit(f"{col.name}:type_cast")).alias(col.name))
    cast = raw.select(exprs)
    if not failures:
        return cast, _empty_failures()
    lost = (
        raw.with_row_index("index")
        .select("index", *failures)
        .unpivot(index="index", value_name="check")
        .drop_nulls("check")
        .select(
            pl.col("index").cast(pl.Int64),
            "check",
            pl.lit(0, dtype=pl.Int32).alias("rank"),
        )
    )
    return cast, lost


def _pandera_view(ds: Dataset, cast: pl.DataFrame) -> pl.DataFrame:
    """The cast frame as Pandera checks it: each uuid column replaced by its null mask."""
    return cast.with_columns(
        pl.when(pl.col(c.name).is_not_null()).then(True).alias(c.name)
        for c in ds.columns
        if c.type == "uuid"
    )


def _uuid_bytes(expr: pl.Expr) -> pl.Expr:
    """Text uuids (any case, hyphens optional) as 16 bytes; anything else is null, i.e. a
    type_cast failure."""
    hexdigits = expr.cast(pl.String).str.replace_all("-", "", literal=True)
    return pl.when(hexdigits.str.len_bytes() == 32).then(hexdigits.str.decode("hex", strict=False))


def uuid_text(expr: pl.Expr) -> pl.Expr:
    """16-byte uuids in their canonical text form (``8-4-4-4-12`` lowercase hex digits)."""
    hexdigits = expr.bin.encode("hex")
    parts = [hexdigits.str.slice(start, length) for start, length in _UUID_GROUPS]
    return pl.concat_str(parts, separator="-")


_UUID_GROUPS = ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))


#: Python's datetime range in microseconds since the epoch (years 1 to 9999). PostgreSQL also
#: holds +-infinity and years up to 294276, which no analyst tool can represent.
_MIN_TIMESTAMP_US = -62_135_596_800_000_000
_MAX_TIMESTAMP_US = 253_402_300_799_999_999
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)


def _finite_timestamp(expr: pl.Expr) -> pl.Expr:
    """The timestamp, or null when it lies outside years 1-9999 (infinity included)."""
    micros = expr.cast(pl.Int64)
    in_range = micros.is_between(_MIN_TIMESTAMP_US, _MAX_TIMESTAMP_US)
    return pl.when(in_range).then(micros).cast(POLARS_TYPES["timestamptz"])


def _timestamp_text(name: str) -> pl.Expr:
    """A timestamp as ISO text for a dead letter, spelling out values outside years 1-9999."""
    micros = pl.col(name).cast(pl.Int64)
    iso = _finite_timestamp(pl.col(name)).dt.to_string("%Y-%m-%dT%H:%M:%S%.6f%:z")
    return (
        pl.when(micros == _INT64_MAX)
        .then(pl.lit("infinity"))
        .when(micros == _INT64_MIN)
        .then(pl.lit("-infinity"))
        .when(iso.is_null() & micros.is_not_null())
        .then(pl.concat_str(pl.lit("out of range: "), micros.cast(pl.String), pl.lit(" us")))
        .otherwise(iso)
        .alias(name)
    )


def _failures(
    schema: pa.DataFrameSchema,
    check_names: dict,
    cast: pl.DataFrame,
    cast_failures: pl.DataFrame,
) -> pl.DataFrame:
    try:
        schema.validate(cast, lazy=True)
        cases = None
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    rows = [cast_failures]
    if cases is not None and cases.height:
        schema_level = cases.filter(pl.col("index").is_null())
        if schema_level.height:
            detail = "; ".join(
                f"{r['column']}: {r['check']} ({r['failure_case']})"
                for r in schema_level.head(5).iter_rows(named=True)
            )
            raise SchemaMismatchError(f"{schema.name}: batch does not fit the contract: {detail}")
        named = [
            (
                int(r["index"]),
                _check_name(r, check_names, schema.name),
                _REASON_RANK.index(_reason_of(r["check"])),
            )
            for r in cases.select("index", "column", "check", "check_number").iter_rows(named=True)
        ]
        rows.append(
            pl.DataFrame(
                named,
                schema={"index": pl.Int64, "check": pl.String, "rank": pl.Int32},
                orient="row",
            )
        )
    # A value that could not be cast is null after the cast: its column's not-null check
    # fails too, but the row only broke the cast.
    cast_nulls = cast_failures.select(
        "index", pl.col("check").str.replace(r":type_cast$", ":not_null")
    )
    return (
        pl.concat(rows)
        .join(cast_nulls, on=["index", "check"], how="anti")
        .with_columns(pl.col("index").cast(pl.UInt32))
    )


def _check_name(case: dict, names: dict, frame: str | None) -> str:
    if case["check"] == "not_nullable":
        return f"{case['column']}:not_null"
    if case["column"] is None or case["column"] == frame:
        # A check across columns (a row rule): Pandera files it under the schema's name.
        return str(case["check"])
    return names.get((case["column"], case["check_number"]), f"{case['column']}:{case['check']}")


def _reason_of(pandera_check: str) -> DeadLetterReason:
    return "null_required_field" if pandera_check == "not_nullable" else "invalid_value"


def _dead_letter_rows(ds: Dataset, rejected: pl.DataFrame) -> pl.DataFrame:
    reason = pl.col("rank").replace_strict(
        list(range(len(_REASON_RANK))), list(_REASON_RANK), return_dtype=pl.String
    )
    cursor = _finite_timestamp(pl.col(ds.cursor).cast(POLARS_TYPES["timestamptz"], strict=False))
    timestamps = [
        _timestamp_text(c.name)
        for c in ds.columns
        if c.type == "timestamptz" and rejected.schema[c.name] == POLARS_TYPES["timestamptz"]
    ]
    uuids = [
        uuid_text(pl.col(c.name)).alias(c.name)
        for c in ds.columns
        if c.type == "uuid" and rejected.schema[c.name] == pl.Binary
    ]
    rejected = rejected.with_columns(cursor.alias("_cursor_at"), *timestamps, *uuids)
    return rejected.select(
        pl.struct(list(ds.primary_key)).struct.json_encode().alias("record_key"),
        pl.col("org_id").cast(pl.String).alias("org_id"),
        pl.col("_cursor_at").alias("cursor_at"),
        reason.alias("reason"),
        pl.col("failed_checks"),
        pl.struct(list(ds.column_names)).struct.json_encode().alias("row_json"),
    )


def _empty_dead_letters() -> pl.DataFrame:
    return pl.DataFrame(schema=DEAD_LETTER_SCHEMA)


def _empty_failures() -> pl.DataFrame:
    return pl.DataFrame(schema={"index": pl.Int64, "check": pl.String, "rank": pl.Int32})
