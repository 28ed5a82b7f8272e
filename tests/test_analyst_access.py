"""Analysts query DuckDB without ever blocking the pipeline, and always see a consistent state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from export_pipeline import analytics, lake
from export_pipeline.batch import run_dataset_batch
from export_pipeline.cli import main
from export_pipeline.config import Settings
from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    ENTITY_SNAPSHOTS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
)
from export_pipeline.defs.lake import LAKE_COMMIT_VERIFIED
from export_pipeline.extract import quote_ident
from export_pipeline.source import create_source_schema, seed_source
from export_pipeline.warehouse import open_warehouse, run_sql
from tests.rows import SourceRows, ago

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pipeline_env(source_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.0005, days=2, end=datetime.now(UTC) - timedelta(minutes=5))
    env = {
        "EXPORT_SOURCE_DSN": source_dsn,
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "EXPORT_SAFETY_LAG_SECONDS": "0",
    }
    (tmp_path / "dagster_home").mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _microbatch(instance: dg.DagsterInstance) -> bool:
    """One scheduled micro-batch of the export and lake assets (reconciliation left out for
    speed); every lake commit of the run verified."""
    from export_pipeline.definitions import defs

    job = defs.resolve_job_def("export_microbatch_job")
    ops = [ds.name for ds in DATASETS] + [f"lake__{ds.name}" for ds in DATASETS]
    result = job.execute_in_process(
        instance=instance,
        op_selection=ops,
        raise_on_error=False,
    )
    checks = result.get_asset_check_evaluations()
    lake_checks = [c for c in checks if c.check_name == LAKE_COMMIT_VERIFIED]
    assert len(lake_checks) == len(DATASETS) and all(c.passed for c in lake_checks)
    return result.success


def _row_hash(ds) -> str:  # noqa: ANN001
    return f"hash({', '.join(quote_ident(c) for c in ds.column_names)})"


def _state_query() -> str:
    """count and checksum of every dataset, in one query (one snapshot)."""
    return " UNION ALL ".join(
        f"SELECT '{ds.name}' AS dataset, count(*) AS n, "
        f"CAST(coalesce(sum({_row_hash(ds)}), 0) AS VARCHAR) AS h FROM {ds.name}"
        for ds in DATASETS
    )


def _warehouse_states(data_dir: Path) -> dict[str, tuple[int, str]]:
    with open_warehouse(data_dir / "warehouse.duckdb") as con:
        return {name: (int(n), h) for name, n, h in run_sql(con, _state_query())}


_ANALYST = textwrap.dedent(
    """
    import json, os, sys, time
    import duckdb

    path, query, out, stop = sys.argv[1:5]
    config = {"threads": 1}  # leave the CPU to the pipeline
    held = duckdb.connect(path, read_only=True, config=config)  # opened once, kept throughout

    def observe(con):
        return {d: [n, h] for d, n, h in con.execute(query).fetchall()}

    with open(out, "w") as fh:
        while not os.path.exists(stop):
            for kind in ("held", "fresh"):
                try:
                    if kind == "held":
                        obs = observe(held)
                    else:
                        con = duckdb.connect(path, read_only=True, config=config)
                        try:
                            obs = observe(con)
                        finally:
                            con.close()
                    fh.write(json.dumps({"kind": kind, "obs": obs}) + "\\n")
                except Exception as exc:
                    fh.write(json.dumps({"kind": kind, "error": repr(exc)}) + "\\n")
                fh.flush()
            time.sleep(0.05)
    """
)


def _observations(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def test_analyst_holding_analytics_db_open_never_blocks_runs_and_sees_only_published_states(
    pipeline_env, source_dsn, tmp_path
):
    """An analyst's open notebook must not break scheduled loads, nor read half a batch."""
    data_dir = Path(pipeline_env["EXPORT_DATA_DIR"])
    published: dict[str, set[tuple[int, str]]] = {ds.name: set() for ds in DATASETS}

    def record() -> dict[str, tuple[int, str]]:
        states = _warehouse_states(data_dir)
        for name, state in states.items():
            published[name].add(state)
        return states

    with dg.instance_for_test() as instance:
        assert _microbatch(instance)
        first = record()
        out, stop = tmp_path / "observations.jsonl", tmp_path / "stop"
        analyst = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _ANALYST,
                str(analytics.analytics_path(data_dir)),
                _state_query(),
                str(out),
                str(stop),
            ],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while len(_observations(out)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            source = SourceRows(source_dsn)
            try:
                for i in range(2):
                    run = source.insert(OPERATION_RUNS, created_at=ago(seconds=30))
                    source.insert(
                        OPERATION_EVENTS, run_id=run["run_id"], occurred_at=ago(seconds=20)
                    )
                    source.insert(COMPANY_ENTITIES, updated_at=ago(seconds=20))
                    source.insert(
                        ENTITY_SNAPSHOTS, record_version=i + 1, captured_at=ago(seconds=20)
                    )
                    assert _microbatch(instance), f"run {i + 2} failed while an analyst was reading"
                    last = record()
            finally:
                source.close()
            # Reconnecting shows the newest state: wait for the analyst to see it.
            while time.monotonic() < deadline:
                fresh = [o for o in _observations(out) if o["kind"] == "fresh" and "obs" in o]
                if fresh and {d: tuple(v) for d, v in fresh[-1]["obs"].items()} == last:
                    break
                time.sleep(0.05)
        finally:
            stop.touch()
            try:
                analyst.wait(timeout=30)
            finally:
                analyst.kill()

    observations = _observations(out)
    errors = [o["error"] for o in observations if "error" in o]
    assert errors == [], errors[:3]
    assert analyst.returncode == 0, analyst.stderr.read() if analyst.stderr else ""
    held = [o["obs"] for o in observations if o["kind"] == "held"]
    fresh = [o["obs"] for o in observations if o["kind"] == "fresh"]
    assert len(held) > 10 and len(fresh) > 10
    for obs in held + fresh:
        for name, (n, h) in obs.items():
            assert (n, h) in published[name], f"{name}: ({n}, {h}) was never published"
    # The held connection is a stable snapshot (as of when it was opened) ...
    assert all(obs == held[0] for obs in held)
    assert {d: tuple(v) for d, v in held[0].items()} == first
    # ... and a reconnect sees the newest publish, which moved.
    assert {d: tuple(v) for d, v in fresh[-1].items()} == last != first


@pytest.fixture(scope="module")
def published_env(pg_server, tmp_path_factory) -> Iterator[dict]:
    """One exported and published lake shared by the read-only tests below (plain code, no
    Dagster: the two-process test above covers the scheduled path)."""
    import psycopg

    name = f"analyst_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = pg_server.get_uri(database=name)
    create_source_schema(dsn)
    seed_source(dsn, scale=0.0005, days=2)
    data_dir = tmp_path_factory.mktemp("analyst") / "data"
    settings = Settings.from_env({"EXPORT_DATA_DIR": str(data_dir)})
    with open_warehouse(settings.warehouse_path) as con:
        for ds in DATASETS:
            run_dataset_batch(ds, source_dsn=dsn, con=con, settings=settings)
        lake.sync(con, lake.lake_for(settings), DATASETS)
    analytics.refresh_catalog(data_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPORT_DATA_DIR", str(data_dir))
        yield {"EXPORT_DATA_DIR": str(data_dir)}
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_convenience_views_answer_the_common_questions_consistently(published_env):
    """Analysts start from these views; their totals must agree with the contract tables."""
    data_dir = Path(published_env["EXPORT_DATA_DIR"])

    def one(sql: str) -> tuple:
        return analytics.run_query(data_dir, sql)[1][0]

    (runs,) = one("SELECT count(*) FROM dx_operation_runs_v1")
    assert runs > 0
    assert one("SELECT sum(runs) FROM runs_per_day") == (runs,)
    assert one("SELECT sum(runs) FROM cost_per_org_per_day") == (runs,)
    assert one("SELECT sum(runs) FROM provider_retries_and_errors") == (runs,)
    assert one("SELECT sum(cost_usd) FROM cost_per_org_per_day") == one(
        "SELECT coalesce(sum(cost_usd), 0) FROM dx_operation_runs_v1"
    )
    (companies,) = one("SELECT count(*) FROM dx_company_entities_v1")
    assert one(
        "SELECT sum(entities) FROM current_entities_per_org WHERE entity_type = 'company'"
    ) == (companies,)
    (snapshots,) = one("SELECT count(*) FROM dx_entity_snapshots_v1")
    assert one("SELECT count(*) FROM entity_version_history") == (snapshots,)
    con = duckdb.connect(str(analytics.analytics_path(data_dir)), read_only=True)
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    finally:
        con.close()
    assert {ds.name for ds in DATASETS} | {
        "runs_per_day",
        "cost_per_org_per_day",
        "provider_retries_and_errors",
        "current_entities_per_org",
        "entity_version_history",
    } <= views


def test_query_command_prints_table_csv_and_json(published_env, capsys):
    """People without a Python shell get the same answers in the format their tool needs."""
    sql = "SELECT status, count(*) AS runs FROM dx_operation_runs_v1 GROUP BY ALL ORDER BY 1"
    assert main(["query", sql, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records and set(records[0]) == {"status", "runs"}
    assert main(["query", sql, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "status,runs" and len(lines) == len(records) + 1
    assert main(["query", sql]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["status", "|", "runs"] and table[-1] == f"({len(records)} rows)"


def test_query_command_refuses_statements_that_write(published_env, capsys):
    """`query` is read-only by contract: a typo must never change anything."""
    assert main(["query", "CREATE TABLE x AS SELECT 1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only" in err[0]
    assert main(["query", "SELECT 1; DROP VIEW runs_per_day"]) == 2


def test_query_works_while_a_run_holds_the_warehouse_write_lock(published_env):
    """The pipeline holds warehouse.duckdb for writing; analysts must not depend on it."""
    data_dir = Path(published_env["EXPORT_DATA_DIR"])
    holder = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "export_pipeline.cli", "query"]
            + ["SELECT count(*) AS n FROM dx_operation_events_v1", "--format", "csv"],
            env={**os.environ, **published_env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.close()
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.splitlines()[1]) > 0


def test_lake_reads_back_equal_to_the_warehouse_with_deltalake_polars_and_the_catalog(
    published_env,
):
    """Whichever reader an analyst picks, each table has the warehouse's rows: same count, same
    checksum; and uuids reach Polars as text, never as raw bytes."""
    data_dir = Path(published_env["EXPORT_DATA_DIR"])
    settings = Settings.from_env({"EXPORT_DATA_DIR": str(data_dir)})
    target = lake.lake_for(settings)
    with open_warehouse(settings.warehouse_path, read_only=True) as con:
        warehouse = {
            ds.name: run_sql(
                con,
                f"SELECT {lake.checksum_sql(ds)} FROM "
                f"(SELECT {lake.select_list(ds)} FROM {quote_ident(ds.name)})",
            )[0]
            for ds in DATASETS
        }
        contract_typed = dict((name, (n, int(h))) for name, n, h in run_sql(con, _state_query()))
    catalog = duckdb.connect(str(analytics.analytics_path(data_dir)), read_only=True)
    reader = duckdb.connect()
    try:
        for ds in DATASETS:
            assert warehouse[ds.name][0] > 0, ds.name
            by_deltalake = (
                reader.from_arrow(
                    pa.table(
                        QueryBuilder()
                        .register("t", DeltaTable(target.uri(ds)))
                        .execute("SELECT * FROM t")
                        .read_all()
                    )
                )
                .aggregate(lake.checksum_sql(ds))
                .fetchall()[0]
            )
            frame = pl.scan_delta(target.uri(ds)).collect()
            assert frame.schema["org_id"] == pl.String, frame.schema
            uuid.UUID(frame["org_id"][0])  # canonical text
            by_polars = (
                reader.from_arrow(frame.to_arrow()).aggregate(lake.checksum_sql(ds)).fetchall()[0]
            )
            assert by_deltalake == warehouse[ds.name], ds.name
            assert by_polars == warehouse[ds.name], ds.name
            ((n, h),) = catalog.execute(
                f"SELECT count(*), coalesce(sum({_row_hash(ds)}), 0) FROM {quote_ident(ds.name)}"
            ).fetchall()
            assert (n, int(h)) == contract_typed[ds.name], ds.name
    finally:
        catalog.close()
        reader.close()
