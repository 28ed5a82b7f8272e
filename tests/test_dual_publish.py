"""Dual publish: a successor contract version filled from the same extract as v1."""

from __future__ import annotations

import pytest
from conftest import Pipeline

from export_pipeline.contract import OPERATION_RUNS, successor
from export_pipeline.warehouse import fetch_dicts, run_sql

#: A small example v2: one column renamed, the kind of change v1 forbids in place.
RUNS_V2 = successor(OPERATION_RUNS, "v2", {"source_provider": "provider"})


def test_successor_version_renames_a_column_and_gets_its_own_table():
    """v2 must be a new table (v1 consumers keep theirs), reading the same source column."""
    assert RUNS_V2.name == "dx_operation_runs_v2"
    assert "provider" in RUNS_V2.column_names and "source_provider" not in RUNS_V2.column_names
    assert RUNS_V2.column("provider").source_name == "source_provider"
    assert RUNS_V2.column("export_schema_version").allowed == ("v2",)
    assert RUNS_V2.primary_key == OPERATION_RUNS.primary_key
    with pytest.raises(KeyError, match="no_such_column"):
        successor(OPERATION_RUNS, "v2", {"no_such_column": "x"})


def test_one_extract_fills_v1_and_v2_side_by_side(pipe: Pipeline):
    """During the dual-publish window both versions must hold the same rows, each under its
    own column names and version stamp, with one extract and one accounting per table."""
    pipe.src.insert(OPERATION_RUNS, source_provider="prospeo")
    pipe.src.insert(OPERATION_RUNS, source_provider="apollo")
    pipe.src.insert(OPERATION_RUNS, status="exploded")  # dead-lettered once, for both versions

    result = pipe.export(OPERATION_RUNS, also_publish=(RUNS_V2,))

    assert (result.extracted, result.inserted, result.dead_lettered) == (3, 2, 1)
    v1 = fetch_dicts(
        pipe.con,
        "SELECT run_id, source_provider AS provider, export_schema_version AS v "
        "FROM dx_operation_runs_v1 ORDER BY run_id",
    )
    v2 = fetch_dicts(
        pipe.con,
        "SELECT run_id, provider, export_schema_version AS v FROM dx_operation_runs_v2 "
        "ORDER BY run_id",
    )
    assert [(r["run_id"], r["provider"]) for r in v1] == [(r["run_id"], r["provider"]) for r in v2]
    assert {r["v"] for r in v1} == {"v1"} and {r["v"] for r in v2} == {"v2"}
    columns = {
        c for (c,) in run_sql(pipe.con, "SELECT column_name FROM (DESCRIBE dx_operation_runs_v2)")
    }
    assert "provider" in columns and "source_provider" not in columns

    ledger = {r["dataset"]: r for r in pipe.ledger(OPERATION_RUNS)}
    v2_ledger = fetch_dicts(
        pipe.con, "SELECT * FROM _export_batches WHERE dataset = 'dx_operation_runs_v2'"
    )
    assert ledger[OPERATION_RUNS.name]["inserted"] == v2_ledger[0]["inserted"] == 2
    assert v2_ledger[0]["extracted"] == 3 and v2_ledger[0]["dead_lettered"] == 1

    again = pipe.export(OPERATION_RUNS, also_publish=(RUNS_V2,))
    assert again.inserted == again.updated == 0
    ((rows_v2,),) = run_sql(pipe.con, "SELECT count(*) FROM dx_operation_runs_v2")
    assert rows_v2 == 2
