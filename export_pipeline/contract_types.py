"""The contract's logical types and what each is in every system the pipeline touches: one table.

A column's type in ``contract.py`` is one of :data:`contract.LogicalType`; this table says what
it may be read from in PostgreSQL, how a key of that type is spelled in PostgreSQL, how it is
held in Polars (validation) and stored in DuckDB (warehouse, staging, lake). The stages' own
mappings (``extract.ACCEPTED_SOURCE_TYPES``, ``warehouse.DUCKDB_TYPES``,
``validate.POLARS_TYPES``, ...) are views of it. A new logical type is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from export_pipeline.contract import NUMERIC_PRECISION, NUMERIC_SCALE, LogicalType


@dataclass(frozen=True)
class ContractType:
    #: PostgreSQL types (``information_schema.columns.data_type``) a column may be read from.
    source_types: frozenset[str]
    #: The PostgreSQL type a key value of this type is cast to (keys travel as JSON text).
    postgres: str
    #: The DuckDB column type (warehouse tables, staging, the lake's Parquet schema).
    duckdb: str
    #: The Polars dtype validated rows have (a uuid travels as its 16 bytes, Arrow's
    #: ``arrow.uuid`` storage, never as text).
    polars: pl.DataType
    #: The Arrow type of the lake's Delta tables (uuids as text: every engine reads them).
    lake: pa.DataType


TYPES: dict[LogicalType, ContractType] = {
    "uuid": ContractType(frozenset({"uuid"}), "uuid", "UUID", pl.Binary(), pa.string()),
    "text": ContractType(
        frozenset({"text", "character varying", "character"}),
        "text",
        "VARCHAR",
        pl.String(),
        pa.string(),
    ),
    "int": ContractType(
        frozenset({"integer", "smallint"}), "integer", "INTEGER", pl.Int32(), pa.int32()
    ),
    "bigint": ContractType(
        frozenset({"bigint", "integer", "smallint"}), "bigint", "BIGINT", pl.Int64(), pa.int64()
    ),
    "numeric": ContractType(
        frozenset({"numeric", "integer", "bigint", "smallint", "real", "double precision"}),
        "numeric",
        f"DECIMAL({NUMERIC_PRECISION}, {NUMERIC_SCALE})",
        pl.Decimal(NUMERIC_PRECISION, NUMERIC_SCALE),
        pa.decimal128(NUMERIC_PRECISION, NUMERIC_SCALE),
    ),
    "timestamptz": ContractType(
        frozenset({"timestamp with time zone"}),
        "timestamptz",
        "TIMESTAMPTZ",
        pl.Datetime("us", "UTC"),
        pa.timestamp("us", tz="UTC"),
    ),
    "jsonb": ContractType(frozenset({"jsonb", "json"}), "jsonb", "JSON", pl.String(), pa.string()),
}
