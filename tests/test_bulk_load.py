"""The initial-load fast path: a table created by CREATE TABLE AS keeps every guarantee."""

from __future__ import annotations

import duckdb
import pytest
from conftest import Pipeline
from rows import new_id

from export_pipeline import load
from export_pipeline.contract import ENTITY_SNAPSHOTS, OPERATION_EVENTS, OPERATION_RUNS
from export_pipeline.warehouse import run_sql


@pytest.fixture
def bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the fast path from the first row, so small test batches exercise it."""
    monkeypatch.setattr(load, "BULK_LOAD_MIN_ROWS", 1)


def _constraints(con: duckdb.DuckDBPyConnection, table: str) -> set[tuple[str, tuple[str, ...]]]:
    rows = run_sql(
        con,
        "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = $t",
        {"t": table},
    )
    indexes = run_sql(
        con,
        "SELECT expressions FROM duckdb_indexes() WHERE table_name = $t AND is_unique",
        {"t": table},
    )
    found = {(kind, tuple(cols)) for kind, cols in rows}
    # A unique index ("[a, b]") guards like a UNIQUE constraint; compare them as equals.
    for (expressions,) in indexes:
        columns = tuple(e.strip(' "') for e in expressions.strip("[]").split(","))
        found.add(("UNIQUE", columns))
    return found


def test_bulk_created_table_enforces_key_guard_and_not_null(pipe: Pipeline, bulk: None):
    """A faster first load must not weaken the warehouse: duplicates and nulls still fail."""
    run = new_id()
    for seq in (0, 1):
        pipe.src.insert(OPERATION_EVENTS, run_id=run, event_sequence=seq)
    result = pipe.export(OPERATION_EVENTS)
    assert result.inserted == 2
    found = _constraints(pipe.con, OPERATION_EVENTS.name)
    assert ("PRIMARY KEY", ("event_id",)) in found
    assert ("UNIQUE", ("run_id", "event_sequence")) in found
    assert ("NOT NULL", ("org_id",)) in found
    (existing,) = run_sql(pipe.con, f"SELECT * FROM {OPERATION_EVENTS.name} LIMIT 1")
    columns = [
        c
        for (c,) in run_sql(
            pipe.con, f"SELECT name FROM pragma_table_info('{OPERATION_EVENTS.name}')"
        )
    ]
    row = dict(zip(columns, existing, strict=True))
    insert = (
        f"INSERT INTO {OPERATION_EVENTS.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    with pytest.raises(duckdb.ConstraintException):  # same primary key
        pipe.con.execute(insert, list(row.values())).fetchall()
    with pytest.raises(duckdb.ConstraintException):  # same (run_id, event_sequence)
        pipe.con.execute(insert, list({**row, "event_id": new_id()}.values())).fetchall()
    with pytest.raises(duckdb.ConstraintException):  # a required column null
        values = {**row, "event_id": new_id(), "event_sequence": 7, "org_id": None}
        pipe.con.execute(insert, list(values.values())).fetchall()


def test_bulk_path_matches_the_row_by_row_path(pipe: Pipeline, bulk: None, tmp_path):
    """Both ways of loading must leave the same rows and the same constraints."""
    for _ in range(3):
        pipe.src.insert(OPERATION_RUNS)
    pipe.src.insert(ENTITY_SNAPSHOTS)
    for ds in (OPERATION_RUNS, ENTITY_SNAPSHOTS):
        pipe.export(ds)
    fast = {ds.name: _constraints(pipe.con, ds.name) for ds in (OPERATION_RUNS, ENTITY_SNAPSHOTS)}
    other = duckdb.connect(str(tmp_path / "ddl.duckdb"))
    from export_pipeline.warehouse import ensure_schema

    ensure_schema(other)
    ddl = {ds.name: _constraints(other, ds.name) for ds in (OPERATION_RUNS, ENTITY_SNAPSHOTS)}
    other.close()
    assert fast == ddl


def test_next_batches_after_a_bulk_load_update_and_append_normally(pipe: Pipeline, bulk: None):
    """After the fast first load, micro-batches take the normal path against the new table."""
    first = pipe.src.insert(OPERATION_RUNS)
    pipe.export(OPERATION_RUNS)
    pipe.src.update(OPERATION_RUNS, {"run_id": first["run_id"]}, attempt_count=2)
    pipe.src.insert(OPERATION_RUNS)
    again = pipe.export(OPERATION_RUNS)
    assert (again.inserted, again.updated) == (1, 1)
    counts = run_sql(pipe.con, f"SELECT count(*), max(attempt_count) FROM {OPERATION_RUNS.name}")
    assert counts == [(2, 2)]
