"""Load stage: stage a dataset's valid rows in DuckDB, classify them against the table, apply.

Every staged row gets exactly one outcome, so that extracted = inserted + updated + unchanged +
stale + dead-lettered holds by construction:

- append datasets (runs, events, snapshots): new key -> ``insert``; same key, same content ->
  ``unchanged``; same key, other content -> ``update`` (the source wins); a uniqueness guard held
  by another key, in the table or earlier in the batch -> ``uniqueness_violation`` (dead letter).
- upsert datasets (companies, persons): per key the highest version in the batch competes; it is
  ``insert``-ed when new, ``update``-s a lower stored version, is ``stale`` below the stored one,
  ``unchanged`` at an equal version with equal content, and a ``version_conflict`` (dead letter)
  at an equal version with other content. Lower versions in the batch are ``stale``.

The SQL is generated from the contract (identifiers only) and runs inside the caller's transaction.
"""

from __future__ import annotations

from typing import Literal

import duckdb
import polars as pl
import pyarrow as pa

from export_pipeline.contract import Dataset
from export_pipeline.extract import quote_ident
from export_pipeline.warehouse import DUCKDB_TYPES, constraint_sql, run_sql

Outcome = Literal[
    "insert", "update", "unchanged", "stale", "uniqueness_violation", "version_conflict"
]
OUTCOMES: tuple[Outcome, ...] = (
    "insert",
    "update",
    "unchanged",
    "stale",
    "uniqueness_violation",
    "version_conflict",
)
DEAD_LETTER_OUTCOMES: tuple[Outcome, ...] = ("uniqueness_violation", "version_conflict")

STAGE = "_stage"
STAGE_DEAD_LETTERS = "_stage_dead_letters"
CLASSIFIED = "_classified"
MATCHED = "_matched"


def _q(name: str) -> str:
    return quote_ident(name)


def _column_list(names: tuple[str, ...], prefix: str = "") -> str:
    """Quoted, prefixed column names, each once, in order."""
    return ", ".join(f"{prefix}{_q(c)}" for c in dict.fromkeys(names))


def _cols(ds: Dataset, prefix: str = "") -> str:
    return _column_list(ds.column_names, prefix)


def _match(left: str, right: str, columns: tuple[str, ...]) -> str:
    return " AND ".join(f"{left}.{_q(c)} = {right}.{_q(c)}" for c in columns)


def _same_content(ds: Dataset, left: str, right: str) -> str:
    return (
        "("
        + " AND ".join(
            f"{left}.{_q(c)} IS NOT DISTINCT FROM {right}.{_q(c)}" for c in ds.column_names
        )
        + ")"
    )


def _insert_from(
    con: duckdb.DuckDBPyConnection,
    frame: pl.DataFrame,
    statement: str,
    uuid_columns: tuple[str, ...] = (),
) -> None:
    """Run ``statement`` with a Polars frame readable as ``_incoming`` (zero-copy, via Arrow).

    ``uuid_columns`` (16-byte binary in Polars) reach DuckDB as Arrow's ``arrow.uuid``.

    Not ``con.register``: inside the batch's open transaction DuckDB keeps every registered
    object alive until COMMIT (the dropped view stays visible to the transaction), so a large
    batch would hold all its Arrow data at once (measured: +1.5 GB for 1.5M events). A
    relation's view lives for this one statement only.
    """
    table = frame.to_arrow()
    for name in uuid_columns:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, _as_arrow_uuid(table.column(i)))
    result = con.from_arrow(table).query("_incoming", statement)
    if result is not None:  # a statement with a result: run it to the end
        result.fetchall()


def _as_arrow_uuid(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Validated 16-byte uuids as Arrow's ``arrow.uuid``, which DuckDB reads as UUID directly."""
    storage = column.cast(pa.binary(16))
    return pa.chunked_array(
        [pa.ExtensionArray.from_storage(pa.uuid(), chunk) for chunk in storage.chunks],
        type=pa.uuid(),
    )


def create_stage(con: duckdb.DuckDBPyConnection, ds: Dataset) -> None:
    """Temporary tables that collect a batch's valid rows and dead letters before the merge."""
    columns = ", ".join(f"{_q(c.name)} {DUCKDB_TYPES[c.type]}" for c in ds.columns)
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE {STAGE} ({columns}, _ord BIGINT)")
    run_sql(
        con,
        f"CREATE OR REPLACE TEMP TABLE {STAGE_DEAD_LETTERS} ("
        "record_key VARCHAR, org_id VARCHAR, cursor_at TIMESTAMPTZ, reason VARCHAR, "
        "failed_checks VARCHAR[], row_json VARCHAR)",
    )


def stage_rows(con: duckdb.DuckDBPyConnection, ds: Dataset, rows: pl.DataFrame, first: int) -> None:
    """Append validated rows to the stage; ``first`` numbers them in extraction order."""
    if rows.is_empty():
        return
    casts = ", ".join(f"CAST({_q(c.name)} AS {DUCKDB_TYPES[c.type]})" for c in ds.columns)
    _insert_from(
        con,
        rows.with_row_index("_ord", offset=first),
        f"INSERT INTO {STAGE} SELECT {casts}, _ord FROM _incoming",
        tuple(c.name for c in ds.columns if c.type == "uuid"),
    )


def stage_dead_letters(con: duckdb.DuckDBPyConnection, letters: pl.DataFrame) -> None:
    if letters.is_empty():
        return
    _insert_from(
        con,
        letters,
        f"INSERT INTO {STAGE_DEAD_LETTERS} SELECT record_key, org_id, cursor_at, reason, "
        "failed_checks, row_json FROM _incoming",
    )


def _narrow(ds: Dataset, *extra: str) -> str:
    """The stage columns classification ranks on: key, guards, cursor/version, ``_ord``."""
    return _column_list((*ds.primary_key, *(c for g in ds.unique_guards for c in g), *extra))


def matched_sql(ds: Dataset, stage: str = STAGE) -> str:
    """SQL creating ``_matched``: the table's rows whose key is in ``stage``, whole.

    Found by a narrow key join, then read by ``rowid``: the rows a micro-batch meets again (its
    lookback) are the latest ones, in the table's last row groups, so only those are read in
    full rather than every column of the table (events at scale 1: the whole table's columns
    against a few row groups).
    """
    target = _q(ds.name)
    return (
        f"CREATE OR REPLACE TEMP TABLE {MATCHED} AS SELECT * FROM {target} WHERE rowid IN "
        f"(SELECT t.rowid FROM {target} t SEMI JOIN {stage} s "
        f"ON {_match('t', 's', ds.primary_key)})"
    )


def classify_sql(ds: Dataset, stage: str = STAGE) -> str:
    """SQL creating ``_classified (_ord, _outcome)``: the outcome of every row of ``stage``.

    Narrow on purpose: rows are ranked on their key, guards and cursor or version only, and
    whole rows are compared (joined back to the stage by ``_ord``) only where a key collides,
    in the table (the rows of ``_matched``, see :func:`matched_sql`) or within the batch. An
    initial load compares nothing; a wide window over a large batch would spill past DuckDB's
    memory limit. Writes join back to the stage by ``_ord``.
    """
    pk = ", ".join(_q(c) for c in ds.primary_key)
    target = _q(ds.name)
    first_pk = _q(ds.primary_key[0])
    pk_of = _column_list(ds.primary_key, "t.")
    if ds.write_mode == "upsert":
        v = _q(ds.version_column or "")
        return f"""
CREATE OR REPLACE TEMP TABLE {CLASSIFIED} AS
WITH ranked AS (
    SELECT {_narrow(ds, ds.version_column or "")}, _ord,
        row_number() OVER (PARTITION BY {pk} ORDER BY {v} DESC, _ord) AS _rank
    FROM {stage}
),
winners AS (
    SELECT w._ord, w.{v}, t.{v} AS _stored_version, t.{first_pk} IS NOT NULL AS _in_target
    FROM ranked w LEFT JOIN (SELECT {pk_of}, t.{v} FROM {MATCHED} t) t
        ON {_match("w", "t", ds.primary_key)}
    WHERE w._rank = 1
),
same_as_target AS (
    SELECT s._ord, {_same_content(ds, "s", "t")} AS _same
    FROM {stage} s JOIN {MATCHED} t ON {_match("s", "t", ds.primary_key)}
    WHERE s._ord IN (SELECT _ord FROM winners WHERE _in_target AND {v} = _stored_version)
),
losers AS (
    SELECT r._ord, r.{v}, w._ord AS _winner_ord, w.{v} AS _winner_version
    FROM ranked r JOIN ranked w ON {_match("r", "w", ds.primary_key)} AND w._rank = 1
    WHERE r._rank > 1
),
same_as_winner AS (
    SELECT l._ord, {_same_content(ds, "s", "ws")} AS _same
    FROM losers l JOIN {stage} s ON s._ord = l._ord JOIN {stage} ws ON ws._ord = l._winner_ord
    WHERE l.{v} = l._winner_version
)
SELECT w._ord, CASE
        WHEN NOT w._in_target THEN 'insert'
        WHEN w.{v} > w._stored_version THEN 'update'
        WHEN w.{v} < w._stored_version THEN 'stale'
        WHEN c._same THEN 'unchanged'
        ELSE 'version_conflict'
    END AS _outcome
FROM winners w LEFT JOIN same_as_target c USING (_ord)
UNION ALL
SELECT l._ord, CASE
        WHEN l.{v} < l._winner_version THEN 'stale'
        WHEN c._same THEN 'unchanged'
        ELSE 'version_conflict'
    END AS _outcome
FROM losers l LEFT JOIN same_as_winner c USING (_ord)
"""
    cursor = _q(ds.cursor)
    guard_joins = "\n".join(
        f"LEFT JOIN (SELECT {_column_list((*guard, *ds.primary_key), 't.')} FROM {target} t) g{i} "
        f"ON {_match('w', f'g{i}', guard)}"
        for i, guard in enumerate(ds.unique_guards)
    )
    guard_violations = (
        " OR ".join(
            [
                f"(g{i}.{first_pk} IS NOT NULL AND NOT ({_match('w', f'g{i}', ds.primary_key)}))"
                for i in range(len(ds.unique_guards))
            ]
            + [
                f"row_number() OVER (PARTITION BY {', '.join('w.' + _q(c) for c in guard)} "
                f"ORDER BY w._in_target DESC, w.{cursor}, w._ord) > 1"
                for guard in ds.unique_guards
            ]
        )
        or "false"
    )
    return f"""
CREATE OR REPLACE TEMP TABLE {CLASSIFIED} AS
WITH ranked AS (
    SELECT {_narrow(ds, ds.cursor)}, _ord,
        row_number() OVER (PARTITION BY {pk} ORDER BY _ord) AS _rank
    FROM {stage}
),
winners AS (
    SELECT r.*, t.{first_pk} IS NOT NULL AS _in_target
    FROM ranked r LEFT JOIN (SELECT {pk_of} FROM {MATCHED} t) t
        ON {_match("r", "t", ds.primary_key)}
    WHERE r._rank = 1
),
same_as_target AS (
    SELECT s._ord, {_same_content(ds, "s", "t")} AS _same
    FROM {stage} s JOIN {MATCHED} t ON {_match("s", "t", ds.primary_key)}
),
guarded AS (
    SELECT w.*, ({guard_violations}) AS _guard_violation
    FROM winners w
    {guard_joins}
),
same_as_winner AS (
    SELECT r._ord, {_same_content(ds, "s", "ws")} AS _same
    FROM ranked r JOIN ranked w ON {_match("r", "w", ds.primary_key)} AND w._rank = 1
        JOIN {stage} s ON s._ord = r._ord JOIN {stage} ws ON ws._ord = w._ord
    WHERE r._rank > 1
)
SELECT g._ord, CASE
        WHEN g._guard_violation THEN 'uniqueness_violation'
        WHEN NOT g._in_target THEN 'insert'
        WHEN c._same THEN 'unchanged'
        ELSE 'update'
    END AS _outcome
FROM guarded g LEFT JOIN same_as_target c USING (_ord)
UNION ALL
SELECT d._ord, CASE WHEN d._same THEN 'unchanged' ELSE 'uniqueness_violation' END AS _outcome
FROM same_as_winner d
"""


#: An initial load of at least this many rows into an empty table recreates the table with
#: ``CREATE TABLE AS`` and builds its constraints afterwards (see ``warehouse.constraint_sql``).
BULK_LOAD_MIN_ROWS = 50_000


def _empty(con: duckdb.DuckDBPyConnection, ds: Dataset) -> bool:
    return not run_sql(con, f"SELECT 1 FROM {_q(ds.name)} LIMIT 1")


def _bulk_create(con: duckdb.DuckDBPyConnection, ds: Dataset, source: str, batch_id: str) -> None:
    """Replace the empty table by one created from the rows, then add its constraints."""
    target = _q(ds.name)
    run_sql(con, f"DROP TABLE {target}")
    run_sql(
        con,
        f"CREATE TABLE {target} AS SELECT {_cols(ds, 's.')}, "
        f"$batch_id::VARCHAR AS _batch_id, now() AS _loaded_at FROM {source}",
        {"batch_id": batch_id},
    )
    for statement in constraint_sql(ds):
        run_sql(con, statement)


class DuplicateKeyError(AssertionError):
    """A key or uniqueness guard held twice in a table: a load-stage bug; the batch rolls back."""


def check_keys_unique(con: duckdb.DuckDBPyConnection, ds: Dataset, stage: str = STAGE) -> None:
    """Fail the batch if any key or guard of the staged rows is now held twice in the table.

    The tables carry no unique indexes (see ``warehouse.create_table_sql``); classification
    already gives each key one outcome, and this re-checks only the keys the batch touched.
    """
    target = _q(ds.name)
    for columns in (ds.primary_key, *ds.unique_guards):
        cols = ", ".join(_q(c) for c in columns)
        duplicated = run_sql(
            con,
            f"SELECT {cols} FROM {target} t SEMI JOIN (SELECT DISTINCT {cols} FROM {stage}) s "
            f"ON {_match('t', 's', columns)} GROUP BY ALL HAVING count(*) > 1 LIMIT 1",
        )
        if duplicated:
            raise DuplicateKeyError(
                f"{ds.name}: ({', '.join(columns)}) = {duplicated[0]} is held by more than one "
                "row; the batch is rolled back"
            )


def stage_successor(con: duckdb.DuckDBPyConnection, primary: Dataset, successor: Dataset) -> str:
    """Copy the primary dataset's stage under the successor's column names; return its name.

    Columns pair by position: :func:`export_pipeline.contract.successor` renames in place.
    """
    stage = f"_stage_{successor.version}"
    columns = ", ".join(
        f"'{successor.version}' AS export_schema_version"
        if new.name == "export_schema_version"
        else f"{_q(old.name)} AS {_q(new.name)}"
        for old, new in zip(primary.columns, successor.columns, strict=True)
    )
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE {stage} AS SELECT {columns}, _ord FROM {STAGE}")
    return stage


def _dead_letter_checks(ds: Dataset) -> str:
    """A SQL expression naming the check a load-stage dead letter failed."""
    if ds.write_mode == "upsert":
        return f"['{ds.version_column}:equal_version_different_content']"
    guards = [",".join(g) for g in ds.unique_guards] or [",".join(ds.primary_key)]
    return "[" + ", ".join(f"'{g}:unique'" for g in guards) + "]"


def apply_classified(
    con: duckdb.DuckDBPyConnection,
    ds: Dataset,
    batch_id: str,
    stage: str = STAGE,
    dead_letters: bool = True,
) -> dict[Outcome, int]:
    """Write the classified stage into the table; return the count of each outcome.

    With ``dead_letters``, rows whose outcome is a dead letter are staged as such (a successor
    version published from the same rows leaves that to the primary dataset).
    """
    target = _q(ds.name)
    run_sql(con, matched_sql(ds, stage))
    run_sql(con, classify_sql(ds, stage))
    counts = dict(run_sql(con, f"SELECT _outcome, count(*) FROM {CLASSIFIED} GROUP BY ALL"))
    outcomes = {o: int(counts.get(o, 0)) for o in OUTCOMES}
    staged = sum(outcomes.values())
    rows = f"{stage} s JOIN {CLASSIFIED} c USING (_ord)"
    if outcomes["update"]:
        run_sql(
            con,
            f"DELETE FROM {target} USING (SELECT s.* FROM {rows} WHERE c._outcome = 'update') u "
            f"WHERE {_match(target, 'u', ds.primary_key)}",
        )
    if outcomes["insert"] == staged:  # e.g. an initial load: no join needed
        source = f"{stage} s"
    else:
        source = f"{rows} WHERE c._outcome IN ('insert', 'update')"
    if outcomes["insert"] >= BULK_LOAD_MIN_ROWS and not outcomes["update"] and _empty(con, ds):
        # A new table holding only the batch's winners (one row per key and per guard, by
        # classification): nothing to re-check.
        _bulk_create(con, ds, source, batch_id)
    elif outcomes["insert"] or outcomes["update"]:
        run_sql(
            con,
            f"INSERT INTO {target} ({_cols(ds)}, _batch_id, _loaded_at) "
            f"SELECT {_cols(ds, 's.')}, $batch_id, now() FROM {source}",
            {"batch_id": batch_id},
        )
        check_keys_unique(con, ds, stage)
    if not dead_letters:
        return outcomes
    key = ", ".join(f"{_q(c)} := s.{_q(c)}" for c in ds.primary_key)
    row = ", ".join(f"{_q(c)} := s.{_q(c)}" for c in ds.column_names)
    if any(outcomes[o] for o in DEAD_LETTER_OUTCOMES):
        run_sql(
            con,
            f"INSERT INTO {STAGE_DEAD_LETTERS} SELECT to_json(struct_pack({key}))::VARCHAR, "
            f"s.org_id::VARCHAR, s.{_q(ds.cursor)}, c._outcome, {_dead_letter_checks(ds)}, "
            f"to_json(struct_pack({row}))::VARCHAR FROM {rows} "
            "WHERE list_contains($outcomes, c._outcome)",
            {"outcomes": list(DEAD_LETTER_OUTCOMES)},
        )
    # Keys that now load, for resolving their open dead letters; only when there are any.
    ((pending,),) = run_sql(
        con,
        "SELECT count(*) FROM dx_dead_letter WHERE dataset = $d AND status <> 'resolved'",
        {"d": ds.name},
    )
    loaded = (
        f"SELECT DISTINCT to_json(struct_pack({key}))::VARCHAR AS record_key FROM {rows} "
        "WHERE c._outcome IN ('insert', 'update', 'unchanged')"
        if pending
        else "SELECT NULL::VARCHAR AS record_key WHERE false"
    )
    run_sql(con, f"CREATE OR REPLACE TEMP TABLE _loaded_keys AS {loaded}")
    return outcomes
