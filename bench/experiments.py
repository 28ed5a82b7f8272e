"""What-if measurements behind the proposals in bench/results/RESULTS.md (not part of `make bench`).

    bench/.venv/bin/python bench/experiments.py <DSN or pgdata dir of a seeded source> [dataset]

On one dataset (default: events, the largest): (1) the ADBC extract stream with uuids as text
(today) and as native uuid; (2) the DuckDB write of the same rows as today's path (temp stage ->
classify -> keyed insert) against cheaper alternatives. Read-only on the source.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import duckdb
import pyarrow as pa

from export_pipeline.contract import dataset
from export_pipeline.extract import quote_ident
from export_pipeline.warehouse import DUCKDB_TYPES, create_table_sql


def _query(ds, uuid_as_text: bool) -> str:
    cols = ", ".join(
        f"{quote_ident(c.source_name)}{'::text' if c.type == 'uuid' and uuid_as_text else ''}"
        f" AS {quote_ident(c.name)}"
        for c in ds.source_columns
    )
    scope = "true"
    if ds.out_of_scope:
        scope = "entity_type IS DISTINCT FROM 'job'"
    schema, table = ds.source_table.split(".")
    return f'SELECT {cols} FROM "{schema}"."{table}" WHERE {scope}'


def stream(dsn: str, sql: str, keep: bool) -> tuple[float, int, list[pa.RecordBatch]]:
    batches = []
    with adbc.connect(dsn) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        cur.execute(sql)
        nbytes = 0
        for batch in cur.fetch_record_batch():
            nbytes += batch.nbytes
            if keep:
                batches.append(batch)
        return time.perf_counter() - t0, nbytes, batches


def _unwrap(table: pa.Table) -> pa.Table:
    cols = []
    for col in table.columns:
        if isinstance(col.type, pa.BaseExtensionType):
            col = pa.chunked_array([c.storage for c in col.chunks], type=col.type.storage_type)
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def timed(con, label: str, sql: str) -> float:
    t0 = time.perf_counter()
    con.execute(sql).fetchall()
    dt = time.perf_counter() - t0
    print(f"    {label:<58} {dt:7.2f} s", flush=True)
    return dt


def main() -> None:
    dsn = sys.argv[1]
    if not dsn.startswith("postgres"):  # a pgdata directory: start its embedded server here
        from export_pipeline.source import embedded_postgres

        dsn = embedded_postgres(Path(dsn))
    ds = dataset(sys.argv[2] if len(sys.argv) > 2 else "dx_operation_events_v1")
    print(f"{ds.name}")
    print("1. extract stream (ADBC), all rows")
    for uuid_as_text in (True, False):
        secs, nbytes, _ = stream(dsn, _query(ds, uuid_as_text), keep=False)
        label = "uuid::text (today)" if uuid_as_text else "native uuid"
        print(f"    {label:<58} {secs:7.2f} s  {nbytes / 2**20:8.0f} MB of Arrow", flush=True)

    from datetime import UTC, datetime

    from export_pipeline import extract

    everything = extract.Window(start=None, end=datetime(9999, 1, 1, tzinfo=UTC))
    with adbc.connect(dsn) as conn:
        t0 = time.perf_counter()
        n = sum(b.num_rows for b in extract.extract_window(conn, ds, everything, 100_000))
        label = "the pipeline's own window query (extract.extract_window)"
        print(f"    {label:<58} {time.perf_counter() - t0:7.2f} s  {n:,} rows", flush=True)

    print("2. DuckDB write of the same rows (text uuids, as staged today)")
    _, _, batches = stream(dsn, _query(ds, True), keep=True)
    table = _unwrap(pa.Table.from_batches(batches))
    del batches
    table = table.append_column("export_schema_version", pa.array(["v1"] * table.num_rows))
    casts = ", ".join(
        f"CAST({quote_ident(c.name)} AS {DUCKDB_TYPES[c.type]}) AS {quote_ident(c.name)}"
        for c in ds.columns
    )
    cols = ", ".join(quote_ident(c) for c in ds.column_names)
    plain_cols = (
        ", ".join(f"{quote_ident(c.name)} {DUCKDB_TYPES[c.type]}" for c in ds.columns)
        + ", _batch_id VARCHAR, _loaded_at TIMESTAMPTZ"
    )
    keyed = create_table_sql(ds)
    pk_only = create_table_sql(replace(ds, unique_guards=()))  # same table, no UNIQUE guard
    with tempfile.TemporaryDirectory() as tmp:
        for label, ddl, how in (
            ("today: temp stage + classify-like copy + keyed insert", keyed, "stage"),
            ("insert into PK + UNIQUE table directly", keyed, "direct"),
            ("insert into PK-only table (no UNIQUE guard index)", pk_only, "direct"),
            ("insert into unkeyed table", f"CREATE TABLE t ({plain_cols})", "direct"),
            ("unkeyed insert, then CREATE UNIQUE INDEX on the key", None, "ctas_index"),
        ):
            path = Path(tmp) / f"{how}-{abs(hash(label))}.duckdb"
            con = duckdb.connect(str(path))
            con.register("_incoming", table)
            print(f"  {label}")
            total = 0.0
            target = quote_ident(ds.name)
            if how == "ctas_index":
                total += timed(
                    con, "CREATE TABLE AS", f"CREATE TABLE t AS SELECT {casts} FROM _incoming"
                )
                total += timed(
                    con,
                    "CREATE UNIQUE INDEX (primary key)",
                    f"CREATE UNIQUE INDEX pk ON t ({', '.join(ds.primary_key)})",
                )
            else:
                con.execute(ddl.replace(target, "t") if target in ddl else ddl)
                con.execute("BEGIN")
                if how == "stage":
                    total += timed(
                        con,
                        "stage (temp table)",
                        f"CREATE TEMP TABLE s AS SELECT {casts}, row_number() OVER () AS _ord "
                        "FROM _incoming",
                    )
                    total += timed(
                        con,
                        "classified copy (temp table, PK window)",
                        "CREATE TEMP TABLE c AS SELECT *, row_number() OVER (PARTITION BY "
                        f"{', '.join(ds.primary_key)} ORDER BY _ord) AS _rank FROM s",
                    )
                    total += timed(
                        con,
                        "keyed insert ORDER BY _ord",
                        f"INSERT INTO t SELECT {cols}, 'b', now() FROM c ORDER BY _ord",
                    )
                else:
                    total += timed(
                        con, "insert", f"INSERT INTO t SELECT {casts}, 'b', now() FROM _incoming"
                    )
                total += timed(con, "commit", "COMMIT")
            print(f"    {'total':<58} {total:7.2f} s", flush=True)
            con.close()


if __name__ == "__main__":
    main()
