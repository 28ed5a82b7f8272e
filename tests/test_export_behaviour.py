"""Behaviour of one dataset batch against a real PostgreSQL source and a real DuckDB warehouse.

Every test builds its source rows by hand (``rows.SourceRows``), runs ``run_dataset_batch`` and
reads the warehouse back. No mocks: the source is an embedded PostgreSQL, the warehouse a DuckDB
file under ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from conftest import Pipeline
from rows import ORG_ID, ago, decoded, default_row, new_id

from export_pipeline import load, validate
from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    ENTITY_SNAPSHOTS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    PERSON_ENTITIES,
    Dataset,
)
from export_pipeline.extract import Window
from export_pipeline.redact import REDACTED
from export_pipeline.validate import SchemaMismatchError
from export_pipeline.warehouse import (
    META_COLUMNS,
    get_watermark,
    open_warehouse,
    run_sql,
)

SCOPED_DATASETS = [ds for ds in DATASETS if ds.out_of_scope]


def entity_key(row: dict[str, Any]) -> dict[str, Any]:
    """Source primary key of a company or person row."""
    return {"org_id": row["org_id"], "entity_id": row["entity_id"]}


def warehouse_count(con: duckdb.DuckDBPyConnection, ds: Dataset) -> int:
    ((n,),) = run_sql(con, f'SELECT count(*) FROM "{ds.name}"')
    return n


def columns_holding(con: duckdb.DuckDBPyConnection, needle: str) -> list[str]:
    """``table.column`` of every column of every table in the warehouse file (metadata and
    dead letters included) whose value, cast to text, contains ``needle``."""
    hits = []
    columns = run_sql(
        con,
        "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND NOT internal "
        "ORDER BY table_name, column_index",
    )
    for schema, table, column in columns:
        ((n,),) = run_sql(
            con,
            f'SELECT count(*) FROM "{schema}"."{table}" '
            f'WHERE CAST("{column}" AS VARCHAR) LIKE $pattern',
            {"pattern": f"%{needle}%"},
        )
        if n:
            hits.append(f"{table}.{column}")
    return hits


# --- windows and idempotence -----------------------------------------------------------------


@pytest.mark.parametrize("ds", DATASETS, ids=lambda d: d.name)
def test_lookback_loads_a_late_row_without_duplicating_the_overlap(
    pipe: Pipeline, ds: Dataset
) -> None:
    """Rows committed late with an older cursor must not be lost, nor the overlap re-inserted."""
    cursor = ds.column(ds.cursor).source_name
    pipe.src.insert(ds)
    first = pipe.export(ds)
    assert first.inserted == 1
    assert first.watermark is not None

    pipe.src.insert(ds, **{cursor: first.watermark - timedelta(minutes=5)})
    second = pipe.export(ds)

    assert second.inserted == 1
    assert second.unchanged == 1
    assert second.extracted == 2
    assert warehouse_count(pipe.con, ds) == pipe.src.count(ds) == 2


def test_rows_older_than_the_lookback_wait_for_a_backfill_that_leaves_the_watermark(
    pipe: Pipeline,
) -> None:
    """The lookback bounds the micro-batch; reconciliation backfills must not move its cursor."""
    pipe.src.insert(OPERATION_RUNS)
    pipe.export(OPERATION_RUNS)
    late = pipe.src.insert(OPERATION_RUNS, created_at=ago(hours=2))

    assert pipe.export(OPERATION_RUNS).extracted == 1
    watermark = get_watermark(pipe.con, OPERATION_RUNS)
    backfill = pipe.export(
        OPERATION_RUNS, mode="backfill", window=Window(start=ago(hours=3), end=ago(hours=1))
    )

    assert (backfill.extracted, backfill.inserted) == (1, 1)
    assert late["run_id"] in {str(r["run_id"]) for r in pipe.rows(OPERATION_RUNS)}
    assert get_watermark(pipe.con, OPERATION_RUNS) == watermark
    assert [b["mode"] for b in pipe.ledger(OPERATION_RUNS)] == ["microbatch"] * 2 + ["backfill"]


def test_second_run_without_source_change_rewrites_nothing(pipe: Pipeline) -> None:
    """Re-reading the lookback overlap must be a no-op: no rewrites, no new dead letters."""
    for ds in DATASETS:
        pipe.src.insert(ds)
        pipe.src.insert(ds)
    pipe.src.insert(OPERATION_RUNS, status="exploded")
    for ds in DATASETS:
        pipe.export(ds)
    before = {ds.name: pipe.rows(ds) for ds in DATASETS}
    ((letters_before,),) = run_sql(pipe.con, "SELECT count(*) FROM dx_dead_letter")

    results = [pipe.export(ds) for ds in DATASETS]

    assert {ds.name: pipe.rows(ds) for ds in DATASETS} == before
    assert all(len(rows) == 2 for rows in before.values())
    for r in results:
        assert (r.inserted, r.updated, r.stale) == (0, 0, 0), r
        assert r.unchanged == 2, r
    ((letters_after,),) = run_sql(pipe.con, "SELECT count(*) FROM dx_dead_letter")
    assert letters_after == letters_before == 1


# --- upsert versions -------------------------------------------------------------------------


def test_stale_version_never_overwrites_a_newer_one(pipe: Pipeline) -> None:
    """An out-of-order older version must not roll the warehouse back."""
    row = pipe.src.insert(COMPANY_ENTITIES, record_version=3, canonical_name="Acme v3")
    pipe.export(COMPANY_ENTITIES)

    pipe.src.update(
        COMPANY_ENTITIES,
        entity_key(row),
        record_version=2,
        canonical_name="Acme v2",
        updated_at=ago(seconds=1),
    )
    result = pipe.export(COMPANY_ENTITIES)

    assert (result.stale, result.updated, result.inserted, result.dead_lettered) == (1, 0, 0, 0)
    [stored] = pipe.rows(COMPANY_ENTITIES)
    assert (stored["record_version"], stored["canonical_name"]) == (3, "Acme v3")


def test_higher_version_replaces_the_stored_row(pipe: Pipeline) -> None:
    """A newer version is the current state and must be applied."""
    row = pipe.src.insert(COMPANY_ENTITIES, record_version=3, canonical_name="Acme v3")
    first = pipe.export(COMPANY_ENTITIES)

    pipe.src.update(
        COMPANY_ENTITIES,
        entity_key(row),
        record_version=4,
        canonical_name="Acme v4",
        employee_count=500,
        updated_at=ago(seconds=1),
    )
    result = pipe.export(COMPANY_ENTITIES)

    assert (result.updated, result.inserted, result.stale, result.dead_lettered) == (1, 0, 0, 0)
    [stored] = pipe.rows(COMPANY_ENTITIES)
    assert (stored["record_version"], stored["canonical_name"], stored["employee_count"]) == (
        4,
        "Acme v4",
        500,
    )
    assert stored["_batch_id"] == result.batch_id != first.batch_id


def test_equal_version_with_other_content_is_a_version_conflict(pipe: Pipeline) -> None:
    """Two contents under one version is a source bug: keep the stored row, surface the other."""
    row = pipe.src.insert(PERSON_ENTITIES, record_version=3, title="Engineer")
    pipe.export(PERSON_ENTITIES)
    [before] = pipe.rows(PERSON_ENTITIES)

    pipe.src.update(PERSON_ENTITIES, entity_key(row), title="Chief Engineer")
    result = pipe.export(PERSON_ENTITIES)

    assert result.dead_letters_by_reason == {"version_conflict": 1}
    assert (result.inserted, result.updated, result.unchanged, result.stale) == (0, 0, 0, 0)
    assert pipe.rows(PERSON_ENTITIES) == [before]
    [letter] = pipe.dead_letters(PERSON_ENTITIES)
    assert letter["reason"] == "version_conflict"
    assert any("record_version" in c for c in letter["failed_checks"])
    assert decoded(letter["row_json"])["title"] == "Chief Engineer"
    assert decoded(letter["record_key"]) == {"org_id": ORG_ID, "entity_id": row["entity_id"]}


def test_equal_version_with_identical_content_is_unchanged(pipe: Pipeline) -> None:
    """Re-reading the same version is normal (lookback) and must not raise a conflict."""
    pipe.src.insert(COMPANY_ENTITIES, record_version=3)
    pipe.export(COMPANY_ENTITIES)
    [before] = pipe.rows(COMPANY_ENTITIES)

    result = pipe.export(COMPANY_ENTITIES)

    assert (result.unchanged, result.dead_lettered) == (1, 0)
    assert pipe.rows(COMPANY_ENTITIES) == [before]
    assert pipe.dead_letters(COMPANY_ENTITIES) == []


def test_several_versions_of_one_key_in_one_batch_resolve_to_the_highest(tmp_path: Path) -> None:
    """A batch may carry a key's whole history; only its newest version may survive."""
    ds = COMPANY_ENTITIES
    base = {c.name: default_row(ds)[c.source_name] for c in ds.source_columns}
    raw = pl.DataFrame(
        [
            {**base, "record_version": version, "canonical_name": f"Acme v{version}"}
            for version in (2, 3, 1)
        ]
    )
    checked = validate.validate_batch(ds, raw)
    assert checked.valid.height == 3 and checked.dead_letters.is_empty()

    with open_warehouse(tmp_path / "warehouse.duckdb") as con:
        load.create_stage(con, ds)
        load.stage_rows(con, ds, checked.valid, 0)
        outcomes = load.apply_classified(con, ds, "batch-1")
        stored = run_sql(con, f'SELECT record_version, canonical_name FROM "{ds.name}"')

    assert stored == [(3, "Acme v3")]
    assert outcomes["insert"] == 1
    assert outcomes["stale"] == 2
    assert sum(outcomes.values()) == 3


# --- uniqueness guards -----------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [100_000, 1], ids=["one_record_batch", "record_batch_of_1"])
def test_duplicate_event_sequence_in_one_batch_keeps_the_earliest_event(
    pipe: Pipeline, batch_size: int
) -> None:
    """(run_id, event_sequence) is unique: a second event claiming the slot is dead-lettered."""
    pipe.settings = replace(pipe.settings, batch_size=batch_size)
    run_id = new_id()
    # Inserted latest-first, so extraction order is not what decides.
    second = pipe.src.insert(
        OPERATION_EVENTS, run_id=run_id, event_sequence=7, occurred_at=ago(minutes=1)
    )
    first = pipe.src.insert(
        OPERATION_EVENTS, run_id=run_id, event_sequence=7, occurred_at=ago(minutes=2)
    )

    result = pipe.export(OPERATION_EVENTS)

    assert (result.inserted, result.dead_letters_by_reason) == (1, {"uniqueness_violation": 1})
    assert [str(r["event_id"]) for r in pipe.rows(OPERATION_EVENTS)] == [first["event_id"]]
    [letter] = pipe.dead_letters(OPERATION_EVENTS)
    assert decoded(letter["record_key"]) == {"event_id": second["event_id"]}
    assert any("event_sequence" in c for c in letter["failed_checks"])


def test_duplicate_event_sequence_after_the_original_was_loaded_is_dead_lettered(
    pipe: Pipeline,
) -> None:
    """A late duplicate must not displace (or sit beside) the event already exported."""
    run_id = new_id()
    first = pipe.src.insert(OPERATION_EVENTS, run_id=run_id, event_sequence=7)
    pipe.export(OPERATION_EVENTS)

    second = pipe.src.insert(
        OPERATION_EVENTS, run_id=run_id, event_sequence=7, occurred_at=ago(seconds=1)
    )
    result = pipe.export(OPERATION_EVENTS)

    assert (result.inserted, result.updated) == (0, 0)
    assert result.dead_letters_by_reason == {"uniqueness_violation": 1}
    assert [str(r["event_id"]) for r in pipe.rows(OPERATION_EVENTS)] == [first["event_id"]]
    [letter] = pipe.dead_letters(OPERATION_EVENTS)
    assert decoded(letter["record_key"]) == {"event_id": second["event_id"]}


# --- scope, extras and secrets ---------------------------------------------------------------


@pytest.mark.parametrize("ds", SCOPED_DATASETS, ids=lambda d: d.name)
def test_job_rows_are_neither_loaded_nor_dead_lettered(pipe: Pipeline, ds: Dataset) -> None:
    """`job` is outside the contract's entity scope: skipped by design, not an error."""
    pipe.src.insert(ds, entity_type="job")
    kept = pipe.src.insert(ds)

    result = pipe.export(ds)

    assert (result.extracted, result.inserted, result.dead_lettered) == (1, 1, 0)
    [stored] = pipe.rows(ds)
    assert stored["entity_type"] == "company"
    assert str(stored["entity_id"]) == kept["entity_id"]
    assert pipe.dead_letters(ds) == []


def test_warehouse_tables_hold_exactly_the_contract_columns(pipe: Pipeline) -> None:
    """Consumers rely on the contract's columns; extras must not leak in as columns."""
    for ds in DATASETS:
        columns = [
            name
            for (name,) in run_sql(
                pipe.con,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = $table ORDER BY ordinal_position",
                {"table": ds.name},
            )
        ]
        assert columns == [*ds.column_names, *(name for name, _ in META_COLUMNS)], ds.name


def test_operational_extras_never_reach_the_warehouse(pipe: Pipeline) -> None:
    """Payloads, roles and descriptions in the source are not exportable data."""
    planted = "PLANTED_EXTRA_7c1e"
    extras = {
        OPERATION_RUNS: {
            "input_payload": {"q": planted},
            "output_payload": {"a": planted},
            "role": planted,
            "auth_method": planted,
        },
        OPERATION_EVENTS: {"raw_request": {"b": planted}, "raw_response": {"b": planted}},
        COMPANY_ENTITIES: {
            "description": planted,
            "employee_range": planted,
            "source_providers": [planted],
            "canonical_payload": {"n": planted},
        },
        PERSON_ENTITIES: {"canonical_payload": {"n": planted}},
    }
    for ds, values in extras.items():
        pipe.src.insert(ds, **values)
    # Dead-lettered rows carry their extras too, and dead letters keep the whole row.
    pipe.src.insert(OPERATION_RUNS, status="exploded", **extras[OPERATION_RUNS])
    pipe.src.insert(OPERATION_EVENTS, http_status=999, **extras[OPERATION_EVENTS])
    pipe.src.insert(ENTITY_SNAPSHOTS)

    results = [pipe.export(ds) for ds in DATASETS]

    assert sum(r.inserted for r in results) == 5
    assert sum(r.dead_lettered for r in results) == 2
    assert columns_holding(pipe.con, "exploded") == ["dx_dead_letter.row_json"]
    assert columns_holding(pipe.con, planted) == []


SECRET_METADATA = {
    "provider": {"name": "prospeo", "api_key": "sk_live_PLANTED"},
    "headers": {"Authorization": "Bearer PLANTED", "Accept": "application/json"},
    "list": [{"password": "PLANTED", "user": "ada"}],
    "attempt": 2,
}


def assert_secrets_redacted(metadata: Any) -> None:
    """Secret values replaced by the marker, every other key and value exactly as in the source."""
    assert decoded(metadata) == {
        "provider": {"name": "prospeo", "api_key": REDACTED},
        "headers": {"Authorization": REDACTED, "Accept": "application/json"},
        "list": [{"password": REDACTED, "user": "ada"}],
        "attempt": 2,
    }


def test_secrets_in_metadata_never_reach_the_warehouse(pipe: Pipeline) -> None:
    """The contract forbids exporting provider keys, whether a row loads or is dead-lettered."""
    run_id = new_id()
    pipe.src.insert(
        OPERATION_EVENTS,
        run_id=run_id,
        event_sequence=1,
        metadata_json=SECRET_METADATA,
        occurred_at=ago(minutes=3),
    )
    # Dead-lettered by validation ...
    pipe.src.insert(OPERATION_EVENTS, http_status=999, metadata_json=SECRET_METADATA)
    # ... and by the load stage (same (run_id, event_sequence), later).
    pipe.src.insert(
        OPERATION_EVENTS,
        run_id=run_id,
        event_sequence=1,
        metadata_json=SECRET_METADATA,
        occurred_at=ago(minutes=2),
    )

    result = pipe.export(OPERATION_EVENTS)

    assert result.inserted == 1
    assert result.dead_letters_by_reason == {"invalid_value": 1, "uniqueness_violation": 1}
    # The search sees both the loaded row and the dead letters ...
    assert {"dx_operation_events_v1.provider", "dx_dead_letter.row_json"} <= set(
        columns_holding(pipe.con, "prospeo")
    )
    # ... and the secret is in neither.
    assert columns_holding(pipe.con, "PLANTED") == []
    [stored] = pipe.rows(OPERATION_EVENTS)
    assert_secrets_redacted(stored["metadata_json"])
    for letter in pipe.dead_letters(OPERATION_EVENTS):
        assert_secrets_redacted(decoded(letter["row_json"])["metadata_json"])


def test_secrets_in_snapshot_payloads_never_reach_the_warehouse(pipe: Pipeline) -> None:
    """Canonical payloads are exported whole, so their secret-looking keys must be redacted."""
    pipe.src.insert(ENTITY_SNAPSHOTS, canonical_payload=SECRET_METADATA)

    result = pipe.export(ENTITY_SNAPSHOTS)

    assert result.inserted == 1
    assert columns_holding(pipe.con, "PLANTED") == []
    [stored] = pipe.rows(ENTITY_SNAPSHOTS)
    assert_secrets_redacted(stored["canonical_payload_json"])


# --- accounting ------------------------------------------------------------------------------


def test_every_extracted_row_is_accounted_for_in_the_result_and_the_ledger(
    pipe: Pipeline,
) -> None:
    """extracted = inserted + updated + unchanged + stale + dead-lettered: no row vanishes."""
    ds = COMPANY_ENTITIES
    stale = [pipe.src.insert(ds, record_version=3)]
    for _ in range(2):
        pipe.src.insert(ds, record_version=2)  # unchanged on the second read
    updated = [pipe.src.insert(ds, record_version=1) for _ in range(3)]
    conflict = pipe.src.insert(ds, record_version=5)
    pipe.export(ds)

    for row in stale:
        pipe.src.update(ds, entity_key(row), record_version=2, canonical_name="older")
    for row in updated:
        pipe.src.update(ds, entity_key(row), record_version=2, canonical_name="newer")
    pipe.src.update(ds, entity_key(conflict), canonical_name="same version, other name")
    for _ in range(4):
        pipe.src.insert(ds)
    pipe.src.insert(ds, company_id=None)  # null_required_field
    pipe.src.insert(ds, enrichment_confidence=Decimal("1.7"))  # invalid_value
    pipe.src.insert(ds, employee_count=-5, record_version=0)  # invalid_value, twice over
    pipe.src.insert(ds, enrichment_confidence=Decimal("1e13"))  # type_cast_failed: > DECIMAL(18,6)

    result = pipe.export(ds)

    counts = {
        "extracted": 15,
        "inserted": 4,
        "updated": 3,
        "unchanged": 2,
        "stale": 1,
        "dead_lettered": 5,
    }
    assert {k: getattr(result, k) for k in counts} == counts
    assert result.dead_letters_by_reason == {
        "invalid_value": 2,
        "null_required_field": 1,
        "type_cast_failed": 1,
        "version_conflict": 1,
    }
    assert result.extracted == (
        result.inserted + result.updated + result.unchanged + result.stale + result.dead_lettered
    )
    [ledger] = [b for b in pipe.ledger(ds) if b["batch_id"] == result.batch_id]
    assert ledger["status"] == "succeeded"
    assert {k: ledger[k] for k in counts} == counts


# --- failures --------------------------------------------------------------------------------


def test_missing_source_column_fails_only_its_dataset(pipe: Pipeline) -> None:
    """A source migration that breaks one table must not stop the other datasets."""
    pipe.src.insert(OPERATION_RUNS)
    pipe.export(OPERATION_RUNS)
    runs_before = pipe.rows(OPERATION_RUNS)
    watermark_before = get_watermark(pipe.con, OPERATION_RUNS)
    pipe.src.insert(OPERATION_RUNS)
    pipe.src.insert(OPERATION_EVENTS)
    pipe.src.insert(COMPANY_ENTITIES)
    pipe.src.execute("ALTER TABLE ops.operation_runs DROP COLUMN cost_usd")

    with pytest.raises(SchemaMismatchError, match="cost_usd"):
        pipe.export(OPERATION_RUNS)

    assert get_watermark(pipe.con, OPERATION_RUNS) == watermark_before
    assert pipe.rows(OPERATION_RUNS) == runs_before
    failed = [b for b in pipe.ledger(OPERATION_RUNS) if b["status"] == "failed"]
    assert len(failed) == 1 and "cost_usd" in failed[0]["error"]
    assert pipe.export(OPERATION_EVENTS).inserted == 1
    assert pipe.export(COMPANY_ENTITIES).inserted == 1


def test_failed_batch_rolls_back_to_the_previous_state(pipe: Pipeline) -> None:
    """A batch that fails after writing rows must leave no trace but its failed ledger row."""
    ds = COMPANY_ENTITIES
    row = pipe.src.insert(ds, record_version=1, canonical_name="Acme v1")
    pipe.export(ds)
    rows_before = pipe.rows(ds)
    watermark_before = get_watermark(pipe.con, ds)
    pipe.src.update(ds, entity_key(row), record_version=2, canonical_name="Acme v2")
    pipe.src.insert(ds)
    # The dead-letter merge runs after the rows were written: take its table away.
    run_sql(pipe.con, "ALTER TABLE dx_dead_letter RENAME TO dx_dead_letter_away")

    with pytest.raises(duckdb.Error):
        pipe.export(ds)

    assert pipe.rows(ds) == rows_before
    assert get_watermark(pipe.con, ds) == watermark_before
    assert [b["status"] for b in pipe.ledger(ds)] == ["succeeded", "failed"]

    run_sql(pipe.con, "ALTER TABLE dx_dead_letter_away RENAME TO dx_dead_letter")
    retried = pipe.export(ds)
    assert (retried.inserted, retried.updated) == (1, 1)


# --- validation ------------------------------------------------------------------------------


def in_days(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def invalid(
    ds: Dataset, values: Callable[[], dict[str, Any]], reason: str, column: str, name: str = ""
) -> Any:
    """One case: the source values (built at test time), the reason and the column blamed."""
    return pytest.param(ds, values, reason, column, id=name or column)


INVALID_VALUES = [
    invalid(OPERATION_RUNS, lambda: {"org_id": None}, "null_required_field", "org_id"),
    invalid(OPERATION_RUNS, lambda: {"status": "exploded"}, "invalid_value", "status"),
    invalid(OPERATION_RUNS, lambda: {"attempt_count": -1}, "invalid_value", "attempt_count"),
    invalid(
        OPERATION_RUNS,
        lambda: {"started_at": ago(minutes=2), "ended_at": ago(minutes=3)},
        "invalid_value",
        "ended_at",
        "ended_before_started",
    ),
    invalid(OPERATION_RUNS, lambda: {"cost_usd": Decimal(-1)}, "invalid_value", "cost_usd"),
    invalid(
        OPERATION_RUNS,
        lambda: {"started_at": in_days(2), "ended_at": None},
        "invalid_value",
        "started_at",
        "started_in_two_days",
    ),
    invalid(OPERATION_EVENTS, lambda: {"http_status": 999}, "invalid_value", "http_status"),
    invalid(OPERATION_EVENTS, lambda: {"event_sequence": -1}, "invalid_value", "event_sequence"),
    invalid(COMPANY_ENTITIES, lambda: {"record_version": 0}, "invalid_value", "record_version"),
    invalid(
        COMPANY_ENTITIES,
        lambda: {"enrichment_confidence": Decimal("1.7")},
        "invalid_value",
        "enrichment_confidence",
    ),
    invalid(PERSON_ENTITIES, lambda: {"phone_e164": "call me"}, "invalid_value", "phone_e164"),
    invalid(PERSON_ENTITIES, lambda: {"work_email": "nope"}, "invalid_value", "work_email"),
]


@pytest.mark.parametrize(("ds", "values", "reason", "column"), INVALID_VALUES)
def test_invalid_row_is_dead_lettered_with_its_reason_and_check(
    pipe: Pipeline,
    ds: Dataset,
    values: Callable[[], dict[str, Any]],
    reason: str,
    column: str,
) -> None:
    """A bad row must be set aside with a reason an operator can act on, not loaded or lost."""
    pipe.src.insert(ds, **values())
    pipe.src.insert(ds)

    result = pipe.export(ds)

    assert (result.extracted, result.inserted) == (2, 1)
    assert result.dead_letters_by_reason == {reason: 1}
    [letter] = pipe.dead_letters(ds)
    assert letter["reason"] == reason
    assert any(column in check for check in letter["failed_checks"]), letter["failed_checks"]
    assert letter["status"] == "open"


def test_a_dead_letter_spells_uuids_as_postgresql_prints_them(pipe: Pipeline) -> None:
    """uuids travel as 16 bytes; a dead letter is read and retried by key, so its key and row
    must hold the canonical text PostgreSQL prints, nulls staying null."""
    row = pipe.src.insert(OPERATION_RUNS, status="exploded", pipeline_run_id=None)

    pipe.export(OPERATION_RUNS)

    [letter] = pipe.dead_letters(OPERATION_RUNS)
    assert decoded(letter["record_key"]) == {"run_id": str(row["run_id"])}
    stored = decoded(letter["row_json"])
    assert (stored["run_id"], stored["org_id"]) == (str(row["run_id"]), str(row["org_id"]))
    assert stored["pipeline_run_id"] is None
    assert letter["org_id"] == str(row["org_id"])


def test_text_uuids_are_parsed_and_a_malformed_one_is_a_type_cast_failure() -> None:
    """A frame may carry uuids as text (any case, hyphens optional); one that is no uuid must
    become a dead letter, not an error in the warehouse's UUID cast that loses the batch."""
    ds = OPERATION_RUNS
    base = {c.name: default_row(ds)[c.source_name] for c in ds.source_columns}
    good = str(base["run_id"])
    raw = pl.DataFrame(
        [
            {**base, "run_id": good.upper()},
            {**base, "run_id": good.replace("-", "")[:31] + "g"},
        ]
    )

    checked = validate.validate_batch(ds, raw)

    assert checked.valid.select(validate.uuid_text(pl.col("run_id")))["run_id"].to_list() == [
        good.lower()
    ]
    [letter] = checked.dead_letters.to_dicts()
    assert (letter["reason"], letter["failed_checks"]) == ("type_cast_failed", ["run_id:type_cast"])


@pytest.mark.parametrize(
    "value",
    ["infinity", "-infinity", "20240-01-01 00:00+00"],
    ids=["infinity", "minus_infinity", "year_20240"],
)
def test_row_with_out_of_range_timestamp_is_dead_lettered_not_fatal(
    pipe: Pipeline, value: str
) -> None:
    """PostgreSQL accepts timestamps Python cannot hold; one such typo must not block a dataset."""
    pipe.src.insert(OPERATION_RUNS, ended_at=value)
    pipe.src.insert(OPERATION_RUNS)

    result = pipe.export(OPERATION_RUNS)

    assert (result.extracted, result.inserted, result.dead_lettered) == (2, 1, 1)
    [letter] = pipe.dead_letters(OPERATION_RUNS)
    assert letter["reason"] in ("invalid_value", "type_cast_failed")
    assert any("ended_at" in check for check in letter["failed_checks"]), letter["failed_checks"]


@pytest.mark.parametrize("ds", DATASETS, ids=lambda d: d.name)
def test_row_without_cursor_is_dead_lettered_not_skipped(pipe: Pipeline, ds: Dataset) -> None:
    """A row no window can select would silently never be exported; it must surface instead."""
    cursor = ds.column(ds.cursor).source_name
    pipe.src.insert(ds, **{cursor: None})

    result = pipe.export(ds)

    assert (result.extracted, result.inserted) == (1, 0)
    assert result.dead_letters_by_reason == {"null_required_field": 1}
    [letter] = pipe.dead_letters(ds)
    assert f"{ds.cursor}:not_null" in letter["failed_checks"]
    assert letter["cursor_at"] is None
    assert pipe.rows(ds) == []


@pytest.mark.parametrize("value", ["infinity", "-infinity"])
def test_row_with_infinite_cursor_is_dead_lettered_not_skipped(pipe: Pipeline, value: str) -> None:
    """Like a null cursor, an infinite one lies in no window: it must surface, not vanish."""
    pipe.src.insert(OPERATION_RUNS, created_at=value)

    result = pipe.export(OPERATION_RUNS)

    assert (result.extracted, result.inserted, result.dead_lettered) == (1, 0, 1)
    [letter] = pipe.dead_letters(OPERATION_RUNS)
    assert any("created_at" in check for check in letter["failed_checks"]), letter["failed_checks"]


def test_dead_letter_of_a_row_fixed_in_the_source_is_resolved_once_it_loads(
    pipe: Pipeline,
) -> None:
    """Open dead letters are what operators are alerted on; a fixed row must stop alerting."""
    row = pipe.src.insert(OPERATION_RUNS, status="exploded")
    pipe.export(OPERATION_RUNS)
    assert [d["status"] for d in pipe.dead_letters(OPERATION_RUNS)] == ["open"]

    pipe.src.update(OPERATION_RUNS, {"run_id": row["run_id"]}, status="succeeded")
    result = pipe.export(OPERATION_RUNS)

    assert (result.inserted, result.dead_lettered) == (1, 0)
    [letter] = pipe.dead_letters(OPERATION_RUNS)
    assert letter["status"] == "resolved"
    assert letter["resolved_at"] is not None
