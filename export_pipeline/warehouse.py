"""The DuckDB warehouse: connection, DDL derived from the contract, and metadata tables."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb

from export_pipeline.contract import (
    DATASETS,
    Dataset,
    LogicalType,
)
from export_pipeline.contract_types import TYPES
from export_pipeline.extract import quote_ident
from export_pipeline.sqlfiles import read_sql

log = logging.getLogger(__name__)

#: The DuckDB type of each contract type (:mod:`export_pipeline.contract_types`).
DUCKDB_TYPES: dict[LogicalType, str] = {name: spec.duckdb for name, spec in TYPES.items()}

#: Pipeline metadata columns on every contract table (a leading underscore marks them).
META_COLUMNS = (("_batch_id", "VARCHAR"), ("_loaded_at", "TIMESTAMPTZ"))


def create_table_sql(ds: Dataset) -> str:
    """DuckDB DDL of a contract table: its columns, with NOT NULL where the contract requires.

    No PRIMARY KEY or UNIQUE constraint: DuckDB keeps their ART indexes in memory, outside what
    its buffer manager can evict, so they grow with the table (5M events with their key and
    guard exceed a 1 GB memory limit) and slow every insert (~4x measured). The load stage
    enforces keys and guards instead: classification gives each key one outcome, and
    :func:`export_pipeline.load.check_keys_unique` re-checks the touched keys before commit.
    Tables created by an earlier release keep their constraints; both kinds work."""
    lines = [
        f"{quote_ident(c.name)} {DUCKDB_TYPES[c.type]}{'' if c.nullable else ' NOT NULL'}"
        for c in ds.columns
    ]
    lines += [f"{name} {sql_type} NOT NULL" for name, sql_type in META_COLUMNS]
    body = ",\n    ".join(lines)
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(ds.name)} (\n    {body}\n)"


def constraint_sql(ds: Dataset) -> list[str]:
    """Statements giving a table created by ``CREATE TABLE AS`` the constraints of
    :func:`create_table_sql`: its NOT NULL columns."""
    table = quote_ident(ds.name)
    required = [c.name for c in ds.columns if not c.nullable] + [m for m, _ in META_COLUMNS]
    statements = [
        f"ALTER TABLE {table} ALTER COLUMN {quote_ident(c)} SET NOT NULL" for c in required
    ]
    return statements


def _ident_list(names: tuple[str, ...]) -> str:
    return ", ".join(quote_ident(n) for n in names)


def ensure_schema(con: duckdb.DuckDBPyConnection, datasets: tuple[Dataset, ...] = DATASETS) -> None:
    """Create the contract tables and the metadata tables if they do not exist.

    Additive migration: a contract column missing from an existing table (the contract gained a
    column since the table was created) is added, nullable, so existing rows read null. Nothing
    is ever dropped or retyped here; the contract's governance test forbids such changes.
    """
    had_old_lake = bool(
        run_sql(
            con,
            "SELECT 1 FROM duckdb_tables() WHERE table_name = '_lake_dirty' "
            "AND schema_name = current_schema() AND database_name = current_database()",
        )
    )
    run_sql(con, read_sql("warehouse", "create_meta_tables.sql"))
    for ds in datasets:
        run_sql(con, create_table_sql(ds))
        if had_old_lake:  # an earlier release's Parquet lake: rewrite it as a Delta table
            request_lake_rewrite(con, ds)
        present = {
            name
            for (name,) in run_sql(
                con,
                "SELECT column_name FROM duckdb_columns() "
                "WHERE table_name = $table AND schema_name = current_schema() "
                "AND database_name = current_database()",
                {"table": ds.name},
            )
        }
        for c in ds.columns:
            if c.name not in present:
                run_sql(
                    con,
                    f"ALTER TABLE {quote_ident(ds.name)} "
                    f"ADD COLUMN {quote_ident(c.name)} {DUCKDB_TYPES[c.type]}",
                )
                request_lake_rewrite(con, ds)  # the lake table gains the column too
    if had_old_lake:
        run_sql(con, "DROP TABLE _lake_dirty")


def request_lake_rewrite(con: duckdb.DuckDBPyConnection, ds: Dataset) -> None:
    """Make the next lake sync rewrite ``ds``'s Delta table from the warehouse (see ``lake``)."""
    run_sql(
        con,
        read_sql("lake", "insert_lake_change.sql"),
        {"dataset": ds.name, "batch_id": "*", "inserted": 0, "updated": 0},
    )


@contextmanager
def open_warehouse(
    path: Path,
    read_only: bool = False,
    lock_timeout_seconds: float = 300.0,
    memory_limit: str | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse file, with the schema in place when writable.

    DuckDB admits one writer process per file. When another run holds it, wait (logging why)
    up to ``lock_timeout_seconds``, then raise :class:`WarehouseBusyError`: an overlapping run
    waits or fails loudly, never writes beside the other.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect_waiting(path, read_only, lock_timeout_seconds)
    try:
        if memory_limit is not None:
            # A validated size (config._memory); SET takes no bind parameters.
            spill = path.parent / ".duckdb_spill"
            run_sql(con, f"SET memory_limit = '{memory_limit}'")
            run_sql(con, "SET temp_directory = '" + str(spill).replace("'", "''") + "'")
            run_sql(con, "SET preserve_insertion_order = false")
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


class WarehouseBusyError(RuntimeError):
    """Another process held the warehouse's write lock for longer than we were willing to wait."""


def _connect_waiting(
    path: Path, read_only: bool, timeout_seconds: float
) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout_seconds
    delay = 0.2
    logged = False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"warehouse {path} is locked by another process (a run or a read-write "
                    f"client) and stayed locked for {timeout_seconds:g}s; this run did not write"
                ) from None
            if not logged:
                log.warning(
                    "warehouse %s is locked by another process; waiting up to %gs for it",
                    path,
                    timeout_seconds,
                )
                logged = True
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)))
            delay = min(delay * 2, 5.0)


def get_watermark(con: duckdb.DuckDBPyConnection, ds: Dataset) -> datetime | None:
    rows = run_sql(con, read_sql("warehouse", "select_watermark.sql"), {"dataset": ds.name})
    return rows[0][0] if rows else None


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[tuple]:
    """Execute a statement and fetch its result to the end.

    DuckDB 2.x refuses further work on a connection whose last ``execute()`` is unfinished.
    """
    return con.execute(sql, params or {}).fetchall()


def fetch_dicts(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> list[dict]:
    """Run a query and return its rows as dicts (small results only)."""
    cur = con.execute(sql, params or {})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
