"""The Dagster layer and the CLI, end to end against the embedded PostgreSQL and a temp DuckDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pytest
from cli_process import run_cli

from export_pipeline import extract
from export_pipeline.contract import DATASETS
from export_pipeline.defs.assets import BATCH_FITS_CONTRACT, NO_ROWS_DEAD_LETTERED
from export_pipeline.source import create_source_schema, seed_source

_cli = partial(run_cli, entry="python_m")


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def seeded_dsn(source_dsn: str) -> str:
    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.001, days=2, violations=True)
    return source_dsn


@pytest.fixture
def export_env(seeded_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    env = {
        "EXPORT_SOURCE_DSN": seeded_dsn,
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
    }
    (tmp_path / "dagster_home").mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _run_job(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from export_pipeline.definitions import defs

    job = defs.resolve_job_def("export_microbatch_job")
    return job.execute_in_process(instance=instance, raise_on_error=False)


def test_code_location_declares_five_assets_their_sources_and_checks():
    """The UI's lineage (source -> warehouse -> lake) and checks come from these definitions;
    a rename breaks analysts' references and must be deliberate."""
    from export_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    reconciliations = {f"reconciliation/{ds.name}" for ds in DATASETS}
    assert reconciliations <= keys  # their checks: see below
    keys -= reconciliations
    sources = {"source/" + ds.source_table.replace(".", "/") for ds in DATASETS}
    assert keys == {ds.name for ds in DATASETS} | sources | {f"lake/{ds.name}" for ds in DATASETS}
    for ds in DATASETS:
        parents = {k.to_user_string() for k in graph.get(dg.AssetKey(ds.name)).parent_keys}
        assert parents == {"source/" + ds.source_table.replace(".", "/")}
    checks: dict[str, set[str]] = {}
    for key in graph.asset_check_keys:
        checks.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    every = {
        BATCH_FITS_CONTRACT,
        NO_ROWS_DEAD_LETTERED,
        "no_dead_letters_exhausted",
    }
    for ds in DATASETS:
        assert checks[ds.name] == every
    # Reconciliation checks hang on reconciliation/<dataset>, which only the reconcile job
    # materializes: a micro-batch re-materializing the dataset no longer resets them.
    reconciled = {
        "rows_match_source",
        "content_matches_source",
        "source_regressions_acknowledged",
        "lag_within_sla",
    }
    null_rate = {"critical_fields_null_rate_within_threshold"}
    assert checks["reconciliation/dx_operation_runs_v1"] == reconciled | {
        "status_mix_matches_baseline"
    }
    assert checks["reconciliation/dx_operation_events_v1"] == reconciled
    assert checks["reconciliation/dx_entity_snapshots_v1"] == reconciled
    assert checks["reconciliation/dx_company_entities_v1"] == reconciled | null_rate
    assert checks["reconciliation/dx_person_entities_v1"] == reconciled | null_rate


def test_microbatch_job_exports_every_dataset_each_run_one_materialization_with_plot_metadata(
    export_env, seeded_dsn
):
    """The job a schedule launches must load all five tables and record the run in the
    instance; the UI's asset page must show no "missing" day partitions and its Plots a series:
    the assets are not partitioned, each run is one materialization carrying the plotted numbers."""
    from export_pipeline.definitions import defs

    for ds in DATASETS:
        for key in (dg.AssetKey(ds.name), dg.AssetKey(["lake", ds.name])):
            assert defs.resolve_assets_def(key).partitions_def is None, key
    with dg.instance_for_test() as instance:
        runs = [_run_job(instance) for _ in range(2)]
        assert all(r.success for r in runs)
        result = runs[0]
        assert instance.get_run_by_id(result.run_id) is not None
        for ds in DATASETS:
            key = dg.AssetKey(ds.name)
            records = instance.fetch_materializations(key, limit=10).records
            assert [r.run_id for r in records] == [runs[1].run_id, runs[0].run_id]
            latest = instance.get_latest_materialization_event(key)
            assert latest is not None and latest.run_id == runs[1].run_id
            assert instance.get_materialized_partitions(key) == set()
            inserted = []
            for record in records:
                materialization = record.asset_materialization
                assert materialization is not None and materialization.partition is None
                metadata = materialization.metadata
                for field in ("extracted", "inserted", "dead_lettered", "duration_ms"):
                    assert field in metadata, (ds.name, field)
                assert "lag_seconds" in metadata and metadata["mode"].value == "microbatch"
                inserted.append(metadata["inserted"].value)
            # Newest first: the second batch found nothing new; the first loaded the seed.
            assert inserted[0] == 0 and inserted[1] > 0, ds.name
            lake = instance.fetch_materializations(dg.AssetKey(["lake", ds.name]), limit=10)
            assert len(lake.records) == 2
        checks = {
            (e.asset_key.to_user_string(), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()
        }
    assert all(checks[(ds.name, BATCH_FITS_CONTRACT)] for ds in DATASETS)
    # The seeder planted violations in every dataset, so each one warns about dead letters.
    assert not any(checks[(ds.name, NO_ROWS_DEAD_LETTERED)] for ds in DATASETS)

    warehouse = Path(export_env["EXPORT_DATA_DIR"]) / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse), read_only=True)
    with extract.connect(seeded_dsn) as src:
        for ds in DATASETS:
            in_scope = extract.count_in_scope(src, ds)
            ((rows,),) = con.execute(f'SELECT count(*) FROM "{ds.name}"').fetchall()
            ((dead,),) = con.execute(
                "SELECT count(*) FROM dx_dead_letter WHERE dataset = $d", {"d": ds.name}
            ).fetchall()
            ((versions,),) = con.execute(
                f"SELECT count(*) FROM \"{ds.name}\" WHERE export_schema_version <> 'v1'"
            ).fetchall()
            assert rows > 0 and dead > 0
            assert rows + dead == in_scope, ds.name
            assert versions == 0
    con.close()


def test_schema_mismatch_fails_only_its_dataset_through_dagster(export_env, seeded_dsn):
    """A dropped source column must fail its own asset loudly (blocking check) while the other
    datasets still export."""
    with psycopg.connect(seeded_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE entities.person_entities DROP COLUMN phone_e164")
    with dg.instance_for_test() as instance:
        result = _run_job(instance)
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    assert failed == {"dx_person_entities_v1"}
    evaluation = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "dx_person_entities_v1"
        and e.check_name == BATCH_FITS_CONTRACT
    )
    assert not evaluation.passed
    assert "phone_e164" in evaluation.metadata["error"].value


def test_cli_run_twice_is_a_noop_and_status_reports_each_dataset(export_env):
    """A second run with no source change must change nothing; status is what operators read."""
    first = _cli("run", env=export_env)
    assert first.returncode == 0, first.stderr
    warehouse = Path(export_env["EXPORT_DATA_DIR"]) / "warehouse.duckdb"

    def snapshot() -> dict:
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            return {
                ds.name: con.execute(
                    f'SELECT count(*), sum(hash(t)) FROM "{ds.name}" AS t'
                ).fetchall()
                for ds in DATASETS
            } | {"dead": con.execute("SELECT count(*) FROM dx_dead_letter").fetchall()}
        finally:
            con.close()

    before = snapshot()
    second = _cli("run", env=export_env)
    assert second.returncode == 0, second.stderr
    assert snapshot() == before
    con = duckdb.connect(str(warehouse), read_only=True)
    ((writes,),) = con.execute(
        "SELECT sum(inserted + updated) FROM _export_batches WHERE run_id = ("
        "SELECT run_id FROM _export_batches ORDER BY started_at DESC LIMIT 1)"
    ).fetchall()
    con.close()
    assert writes == 0

    status = _cli("status", "--json", env=export_env)
    assert status.returncode == 0, status.stderr
    rows = {r["dataset"]: r for r in json.loads(status.stdout)}
    assert set(rows) == {ds.name for ds in DATASETS}
    assert all(r["last_batch_status"] == "succeeded" and r["watermark"] for r in rows.values())
    assert all(r["open_dead_letters"] > 0 for r in rows.values())


def test_cli_rejects_a_bad_setting_with_one_line_naming_it(tmp_path):
    """A typo in configuration must stop the run before it touches anything, and say where."""
    result = _cli("run", env={"EXPORT_LOOKBACK_MINUTES": "-5", "EXPORT_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "EXPORT_LOOKBACK_MINUTES" in lines[0]
    assert not (tmp_path / "warehouse.duckdb").exists()


def test_workspace_loads_for_the_ui(tmp_path):
    """`make ui` loads workspace.yaml; a code location that fails to load shows nothing."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"]
        + ["-w", "workspace.yaml"],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout


def test_every_job_runs_in_process_so_steps_never_contend_for_the_duckdb_lock():
    """DuckDB allows one writer process per file; a multiprocess executor would fail steps."""
    from export_pipeline.definitions import defs

    for job in defs.resolve_all_job_defs():
        assert job.executor_def.name == "in_process", job.name


def test_commands_started_at_once_on_a_new_dagster_home_all_open_the_instance(tmp_path):
    """A manual run during the first scheduled one must not crash creating the instance's tables
    (sqlite `table ... already exists` when two processes create the storage at once)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    opener = (
        "import time, sys\n"
        "from export_pipeline.launcher import dagster_instance\n"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
        "with dagster_instance() as instance:\n"
        "    print(len(instance.get_runs()))\n"
    )
    start_at = str(datetime.now(UTC).timestamp() + 8)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", opener, start_at],
            env={**os.environ, "DAGSTER_HOME": str(home)},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == ["0"] * 4
