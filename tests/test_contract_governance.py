"""The contract as the single source of truth: generated dictionary, additive-only versions,
and warehouses that migrate themselves when the contract gains a column."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from export_pipeline.batch import run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import COMPANY_ENTITIES
from export_pipeline.contract_docs import (
    DICTIONARY_PATH,
    breaking_changes,
    load_snapshot,
    render_dictionary,
    snapshot,
)
from export_pipeline.source import create_source_schema
from export_pipeline.warehouse import ensure_schema, open_warehouse, run_sql
from tests.rows import SourceRows

REPO = Path(__file__).resolve().parent.parent
RUNS = "dx_operation_runs_v1"


def _columns(snap: dict, dataset: str) -> list[dict]:
    return snap["datasets"][dataset]["columns"]


def _column(snap: dict, dataset: str, name: str) -> dict:
    return next(c for c in _columns(snap, dataset) if c["name"] == name)


@pytest.fixture
def released() -> dict:
    return load_snapshot("v1")


def test_committed_data_dictionary_is_what_the_contract_generates():
    """docs/contract_v1.md is what analysts read; it must never drift from contract.py."""
    assert DICTIONARY_PATH.read_text(encoding="utf-8") == render_dictionary()
    result = subprocess.run(
        [sys.executable, "-m", "export_pipeline.cli", "contract", "docs", "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_data_dictionary_documents_every_dataset_column_key_and_partitioning():
    """A column missing from the dictionary is a column analysts cannot interpret."""
    text = render_dictionary()
    for name, ds in snapshot()["datasets"].items():
        assert f"## {name}" in text
        for col in ds["columns"]:
            assert f"| `{col['name']}` | {col['type']} |" in text
    for phrase in ("upsert", "append-only", "Uniqueness guard", "_date=<date of created_at"):
        assert phrase in text
    assert "Choices where the contract is silent" in text


def test_contract_in_code_has_no_breaking_change_against_released_v1(released):
    """v1 is released: consumers depend on every column, type and nullability in it."""
    assert breaking_changes(released, snapshot()) == []


def test_removed_column_is_a_breaking_change_named_in_the_report(released):
    """Removing a column breaks every consumer that selects it."""
    new = copy.deepcopy(released)
    new["datasets"][RUNS]["columns"] = [
        c for c in _columns(new, RUNS) if c["name"] != "error_message"
    ]
    assert breaking_changes(released, new) == [f"{RUNS}.error_message: column removed"]


def test_renamed_column_is_a_breaking_change_with_a_rename_hint(released):
    """A rename is a removal for consumers; v2 and a dual-publish window are the way."""
    new = copy.deepcopy(released)
    _column(new, RUNS, "error_code")["name"] = "failure_code"
    assert breaking_changes(released, new) == [
        f"{RUNS}.error_code: column removed (renamed to failure_code?)"
    ]


def test_type_change_is_a_breaking_change(released):
    """A retyped column breaks readers' schemas and casts."""
    new = copy.deepcopy(released)
    _column(new, RUNS, "attempt_count")["type"] = "text"
    assert breaking_changes(released, new) == [
        f"{RUNS}.attempt_count: type changed from int to text"
    ]


def test_nullable_to_required_is_a_breaking_change(released):
    """Existing rows hold nulls there; requiring it would reject history."""
    new = copy.deepcopy(released)
    _column(new, RUNS, "workflow_id")["nullable"] = False
    assert breaking_changes(released, new) == [
        f"{RUNS}.workflow_id: changed from nullable to required"
    ]


def test_added_nullable_column_and_new_dataset_are_not_breaking(released):
    """Additive changes are what v1 allows: they must pass the gate."""
    new = copy.deepcopy(released)
    _columns(new, RUNS).append({"name": "region", "type": "text", "nullable": True})
    new["datasets"]["dx_new_v1"] = copy.deepcopy(new["datasets"][RUNS])
    assert breaking_changes(released, new) == []


def test_added_required_column_is_a_breaking_change(released):
    """Old rows cannot satisfy a new required column."""
    new = copy.deepcopy(released)
    _columns(new, RUNS).append({"name": "region", "type": "text", "nullable": False})
    assert breaking_changes(released, new) == [
        f"{RUNS}.region: column added as required, not nullable"
    ]


def test_warehouse_created_by_previous_contract_gains_new_column_with_old_rows_intact(
    source_dsn, tmp_path
):
    """Adding a column must need no manual step and lose no data on existing warehouses."""
    create_source_schema(source_dsn)
    rows = SourceRows(source_dsn)
    try:
        old_row = rows.insert(COMPANY_ENTITIES, source_priority="zoominfo")
        previous = dataclasses.replace(
            COMPANY_ENTITIES,
            columns=tuple(c for c in COMPANY_ENTITIES.columns if c.name != "source_priority"),
        )
        settings = Settings.from_env(
            {"EXPORT_DATA_DIR": str(tmp_path), "EXPORT_SAFETY_LAG_SECONDS": "0"}
        )
        con = duckdb.connect(str(settings.warehouse_path))
        ensure_schema(con, (previous,))
        run_dataset_batch(previous, source_dsn=source_dsn, con=con, settings=settings)
        before = run_sql(con, f"SELECT * FROM {COMPANY_ENTITIES.name}")
        con.close()
        assert len(before) == 1

        with open_warehouse(settings.warehouse_path) as con:
            columns = [r[0] for r in run_sql(con, f"DESCRIBE {COMPANY_ENTITIES.name}")]
            assert "source_priority" in columns
            old_names = [c for c in columns if c != "source_priority"]
            after = run_sql(con, f"SELECT {', '.join(old_names)} FROM {COMPANY_ENTITIES.name}")
            assert after == before
            assert run_sql(con, f"SELECT source_priority FROM {COMPANY_ENTITIES.name}") == [(None,)]
            new_row = rows.insert(COMPANY_ENTITIES, source_priority="apollo")
            run_dataset_batch(COMPANY_ENTITIES, source_dsn=source_dsn, con=con, settings=settings)
            loaded = dict(
                run_sql(
                    con, f"SELECT entity_id::VARCHAR, source_priority FROM {COMPANY_ENTITIES.name}"
                )
            )
        assert loaded[new_row["entity_id"]] == "apollo"
        # The old row was not re-read (unchanged) or, if re-read, now carries its value.
        assert loaded[old_row["entity_id"]] in (None, "zoominfo")
    finally:
        rows.close()
