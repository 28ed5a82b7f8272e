"""The initial-load fast path keeps every guarantee; keys are guarded without unique indexes."""

from __future__ import annotations

import duckdb
import pytest
from conftest import Pipeline
from rows import ago, new_id

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


def _raw_insert(pipe: Pipeline, row: dict) -> None:
    """Write a row straight into the events table, bypassing the load stage."""
    columns = list(row)
    pipe.con.execute(
        f"INSERT INTO {OPERATION_EVENTS.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})",
        list(row.values()),
    ).fetchall()


def _stored_event(pipe: Pipeline) -> dict:
    (existing,) = run_sql(pipe.con, f"SELECT * FROM {OPERATION_EVENTS.name} LIMIT 1")
    columns = [
        c
        for (c,) in run_sql(
            pipe.con, f"SELECT name FROM pragma_table_info('{OPERATION_EVENTS.name}')"
        )
    ]
    return dict(zip(columns, existing, strict=True))


def test_bulk_created_table_keeps_not_null_and_carries_no_unique_index(pipe: Pipeline, bulk: None):
    """A faster first load keeps the NOT NULLs; keys are the load stage's job, not an index's."""
    run = new_id()
    for seq in (0, 1):
        pipe.src.insert(OPERATION_EVENTS, run_id=run, event_sequence=seq)
    result = pipe.export(OPERATION_EVENTS)
    assert result.inserted == 2
    found = _constraints(pipe.con, OPERATION_EVENTS.name)
    assert ("NOT NULL", ("org_id",)) in found
    assert not {kind for kind, _ in found} & {"PRIMARY KEY", "UNIQUE"}
    row = _stored_event(pipe)
    with pytest.raises(duckdb.ConstraintException):  # a required column null
        _raw_insert(pipe, {**row, "event_id": new_id(), "event_sequence": 7, "org_id": None})


@pytest.mark.parametrize("collides_on", ["primary key", "uniqueness guard"])
def test_a_key_held_twice_fails_the_batch_that_touches_it_and_rolls_it_back(
    pipe: Pipeline, collides_on: str
) -> None:
    """Without unique indexes, a second line of defence: a duplicate never commits silently."""
    run = new_id()
    first = pipe.src.insert(OPERATION_EVENTS, run_id=run, event_sequence=0)
    pipe.export(OPERATION_EVENTS)
    row = _stored_event(pipe)
    twin = row if collides_on == "primary key" else {**row, "event_id": new_id()}
    _raw_insert(pipe, twin)  # what a load-stage bug would leave behind
    before = pipe.rows(OPERATION_EVENTS)
    pipe.src.update(OPERATION_EVENTS, {"event_id": first["event_id"]}, http_status=201)
    # Caught by the accounting identity (a duplicated key classifies its row twice) or by
    # load.check_keys_unique (a duplicated guard); either way the batch never commits.
    with pytest.raises(AssertionError, match="accounting identity|more than one row"):
        pipe.export(OPERATION_EVENTS)
    assert pipe.rows(OPERATION_EVENTS) == before


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


@pytest.mark.parametrize("collides_on", ["primary key", "uniqueness guard"])
def test_key_check_names_the_key_held_twice(pipe: Pipeline, collides_on: str) -> None:
    """The pre-commit key check itself: it must see a duplicate among the keys a batch touched."""
    pipe.src.insert(OPERATION_EVENTS)
    pipe.export(OPERATION_EVENTS)
    row = _stored_event(pipe)
    load.create_stage(pipe.con, OPERATION_EVENTS)
    columns = ", ".join(OPERATION_EVENTS.column_names)
    run_sql(pipe.con, f"INSERT INTO {load.STAGE} SELECT {columns}, 0 FROM {OPERATION_EVENTS.name}")
    load.check_keys_unique(pipe.con, OPERATION_EVENTS)  # one row per key: passes
    _raw_insert(pipe, row if collides_on == "primary key" else {**row, "event_id": new_id()})
    expected = "event_id" if collides_on == "primary key" else "run_id, event_sequence"
    with pytest.raises(load.DuplicateKeyError, match=f"\\({expected}\\)"):
        load.check_keys_unique(pipe.con, OPERATION_EVENTS)


def test_bulk_path_keeps_one_row_per_key_and_guard_from_classification_alone(
    pipe: Pipeline, bulk: None
) -> None:
    """The fast path skips the post-insert key check (the table was empty), so the batch's own
    twins, on the key and on the guard, must still end as one row and dead letters."""
    run = new_id()
    first = pipe.src.insert(
        OPERATION_EVENTS, run_id=run, event_sequence=0, occurred_at=ago(minutes=3)
    )
    pipe.src.insert(OPERATION_EVENTS, run_id=run, event_sequence=0, occurred_at=ago(minutes=2))
    pipe.src.insert(OPERATION_EVENTS, run_id=run, event_sequence=1, occurred_at=ago(minutes=1))

    result = pipe.export(OPERATION_EVENTS)

    assert (result.inserted, result.dead_letters_by_reason) == (2, {"uniqueness_violation": 1})
    counts = run_sql(
        pipe.con,
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT (run_id, event_sequence)), "
        f"bool_or(event_id = $first) FROM {OPERATION_EVENTS.name}",
        {"first": first["event_id"]},
    )
    assert counts == [(2, 2, 2, True)]
