"""The lake as Delta tables: one commit per batch of changes, exactly once, verified, readable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from export_pipeline import analytics, lake
from export_pipeline.config import Settings
from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    ENTITY_SNAPSHOTS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    Dataset,
)
from export_pipeline.extract import quote_ident
from export_pipeline.faults import CRASH_ENV
from export_pipeline.warehouse import open_warehouse, run_sql
from tests.conftest import Pipeline
from tests.rows import ORG_ID, ago

REPO = Path(__file__).resolve().parent.parent


def _target(pipe: Pipeline) -> lake.Lake:
    return lake.lake_for(pipe.settings)


def _sync(pipe: Pipeline, *datasets: Dataset) -> list[lake.SyncResult]:
    return lake.sync(pipe.con, _target(pipe), datasets or DATASETS)


def _table(pipe: Pipeline, ds: Dataset) -> DeltaTable:
    table = lake.open_table(_target(pipe), ds)
    assert table is not None, ds.name
    return table


def _read(table: DeltaTable) -> pa.Table:
    """The table's rows through deltalake's own query engine (DataFusion).

    Not ``to_pyarrow_table``: with Polars loaded, deltalake's Arrow file system now and then
    aborts the interpreter at exit (see ``lake.files_view``).
    """
    return pa.table(QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all())


def _equal(pipe: Pipeline, ds: Dataset) -> lake.LakeCheck:
    check = lake.check_table(pipe.con, _target(pipe), ds)
    assert check.passed, check
    return check


def _pending(pipe: Pipeline) -> int:
    ((n,),) = run_sql(pipe.con, "SELECT count(*) FROM _lake_changes")
    return int(n)


def _last_batch(pipe: Pipeline, ds: Dataset) -> str:
    return pipe.ledger(ds)[-1]["batch_id"]


def test_each_dataset_is_a_delta_table_partitioned_per_contract_equal_to_the_warehouse(
    pipe: Pipeline,
):
    """Other engines find the contract's partitions as real columns; nothing lost on the way."""
    for ds in DATASETS:
        pipe.src.insert(ds)
        pipe.export(ds)
    results = {r.dataset: r for r in _sync(pipe)}
    assert _pending(pipe) == 0
    for ds in DATASETS:
        table = _table(pipe, ds)
        assert table.metadata().partition_columns == list(ds.partition_by), ds.name
        assert results[ds.name].rows == 1
        assert _equal(pipe, ds).lake_rows == 1
        (commit,) = table.history()
        assert json.loads(commit[lake.META_BATCHES]) == [_last_batch(pipe, ds)]
    dates = {p["_date"] for p in _table(pipe, OPERATION_RUNS).partitions()}
    assert dates == {datetime.now(UTC).date().isoformat()} or len(dates) == 1
    assert {p["org_id"] for p in _table(pipe, OPERATION_RUNS).partitions()} == {ORG_ID}


def test_new_rows_are_one_append_commit_that_reads_only_the_change(pipe: Pipeline):
    """A micro-batch's cost follows its change: an append adds files and rewrites none."""
    for _ in range(5):
        pipe.src.insert(OPERATION_RUNS, created_at=ago(minutes=30))
    pipe.export(OPERATION_RUNS)
    _sync(pipe, OPERATION_RUNS)
    pipe.src.insert(OPERATION_RUNS)
    pipe.src.insert(OPERATION_RUNS)
    batch = pipe.export(OPERATION_RUNS)
    (result,) = _sync(pipe, OPERATION_RUNS)
    assert (result.kind, result.rows, result.batches) == ("append", batch.inserted, 1)
    commit = _table(pipe, OPERATION_RUNS).history(1)[0]
    assert commit["operation"] == "WRITE" and commit[lake.META_KIND] == "append"
    assert commit["operationMetrics"]["num_removed_files"] == 0
    assert commit["operationMetrics"]["num_added_rows"] == 2
    assert json.loads(commit[lake.META_BATCHES]) == [batch.batch_id]
    assert _equal(pipe, OPERATION_RUNS).lake_rows == 7
    assert _sync(pipe, OPERATION_RUNS) == []  # nothing pending: no commit, no work


def test_entity_updates_are_one_version_guarded_merge(pipe: Pipeline):
    """The contract's upsert rule holds in the lake too: the newer version replaces the row."""
    rows = [pipe.src.insert(COMPANY_ENTITIES, updated_at=ago(minutes=10)) for _ in range(3)]
    pipe.export(COMPANY_ENTITIES)
    _sync(pipe, COMPANY_ENTITIES)
    key = {"org_id": rows[0]["org_id"], "entity_id": rows[0]["entity_id"]}
    pipe.src.update(COMPANY_ENTITIES, key, record_version=2, canonical_name="Acme 2",
                    updated_at=ago(minutes=1))  # fmt: skip
    pipe.src.insert(COMPANY_ENTITIES)
    batch = pipe.export(COMPANY_ENTITIES)
    assert (batch.inserted, batch.updated) == (1, 1)
    (result,) = _sync(pipe, COMPANY_ENTITIES)
    assert (result.kind, result.rows) == ("merge", 2)
    commit = _table(pipe, COMPANY_ENTITIES).history(1)[0]
    assert commit["operation"] == "MERGE"
    (matched,) = json.loads(commit["operationParameters"]["matchedPredicates"])
    assert matched == {"actionType": "update", "predicate": "t.record_version < s.record_version"}
    frame = pl.from_arrow(_read(_table(pipe, COMPANY_ENTITIES)))
    mine = frame.filter(pl.col("entity_id") == str(rows[0]["entity_id"]))
    assert mine["record_version"].to_list() == [2] and mine["canonical_name"][0] == "Acme 2"
    assert _equal(pipe, COMPANY_ENTITIES).lake_rows == 4


def test_a_stale_version_never_overwrites_a_newer_one_and_the_commit_check_says_so(
    pipe: Pipeline,
):
    """Should the lake ever be handed an older version than it holds, the guard refuses it, the
    commit's verification reports the disagreement, and the next sync rewrites from the
    warehouse."""
    row = pipe.src.insert(COMPANY_ENTITIES, record_version=5)
    pipe.export(COMPANY_ENTITIES)
    _sync(pipe, COMPANY_ENTITIES)
    # A change handed to the lake carrying version 4 of the key (not something the warehouse
    # does: it refuses stale versions itself; this aims at the lake's own guard).
    run_sql(pipe.con, "BEGIN TRANSACTION")
    run_sql(
        pipe.con,
        f"UPDATE {quote_ident(COMPANY_ENTITIES.name)} SET record_version = 4, "
        "canonical_name = 'stale', _batch_id = 'stale-batch', _loaded_at = now()",
    )
    lake.record_change(pipe.con, COMPANY_ENTITIES, "stale-batch", 0, 1)
    run_sql(pipe.con, "COMMIT")
    with pytest.raises(lake.LakeVerificationError, match="holds 0 rows"):
        _sync(pipe, COMPANY_ENTITIES)
    lake_rows = _read(_table(pipe, COMPANY_ENTITIES)).to_pylist()
    assert [(r["record_version"], r["canonical_name"]) for r in lake_rows] == [
        (5, row["canonical_name"])
    ]
    (healed,) = _sync(pipe, COMPANY_ENTITIES)  # the failed commit asked for a rewrite
    assert healed.kind == "overwrite"
    _equal(pipe, COMPANY_ENTITIES)


def test_an_append_row_changed_in_place_to_another_day_is_moved_not_duplicated(
    pipe: Pipeline,
):
    """The source wins for an append row changed in place, and its day partition follows."""
    row = pipe.src.insert(OPERATION_RUNS, created_at=ago(days=2))
    pipe.src.insert(OPERATION_RUNS)
    pipe.export(OPERATION_RUNS)
    _sync(pipe, OPERATION_RUNS)
    pipe.src.update(OPERATION_RUNS, {"run_id": row["run_id"]}, created_at=ago(seconds=30),
                    status="failed")  # fmt: skip
    batch = pipe.export(OPERATION_RUNS)
    assert batch.updated == 1
    (result,) = _sync(pipe, OPERATION_RUNS)
    assert result.kind == "merge"
    table = _table(pipe, OPERATION_RUNS)
    rows = [r for r in _read(table).to_pylist() if r["run_id"] == row["run_id"]]
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert rows[0]["_date"] == datetime.now(UTC).date() or rows[0]["_date"] == date.today()
    assert _equal(pipe, OPERATION_RUNS).lake_rows == 2


def test_several_pending_batches_become_one_commit(pipe: Pipeline):
    """A lake that was unreachable for a while catches up in one commit per dataset."""
    pipe.src.insert(OPERATION_EVENTS)
    pipe.export(OPERATION_EVENTS)
    _sync(pipe, OPERATION_EVENTS)
    before = _table(pipe, OPERATION_EVENTS).version()
    batches = []
    for _ in range(3):
        pipe.src.insert(OPERATION_EVENTS)
        batches.append(pipe.export(OPERATION_EVENTS).batch_id)
    (result,) = _sync(pipe, OPERATION_EVENTS)
    table = _table(pipe, OPERATION_EVENTS)
    assert table.version() == before + 1 and result.batches == 3
    assert json.loads(table.history(1)[0][lake.META_BATCHES]) == batches
    assert _equal(pipe, OPERATION_EVENTS).lake_rows == 4


_CRASHING_SYNC = textwrap.dedent(
    """
    from export_pipeline import lake
    from export_pipeline.config import Settings
    from export_pipeline.contract import dataset
    from export_pipeline.warehouse import open_warehouse
    import sys

    settings = Settings.from_env()
    with open_warehouse(settings.warehouse_path) as con:
        lake.sync(con, lake.lake_for(settings), (dataset(sys.argv[1]),))
    """
)


def _killed_sync(pipe: Pipeline, ds: Dataset, point: str) -> None:
    """Run a sync in a subprocess killed at ``point`` (the warehouse is handed over meanwhile)."""
    pipe.con.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORT_")}
    env |= {"EXPORT_DATA_DIR": str(pipe.settings.data_dir), CRASH_ENV: f"{point}:{ds.name}"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CRASHING_SYNC, ds.name],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        pipe.con = duckdb.connect(str(pipe.settings.warehouse_path))
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("ds", "point"),
    [
        (OPERATION_EVENTS, "lake.writing"),
        (OPERATION_EVENTS, "lake.committed"),
        (COMPANY_ENTITIES, "lake.writing"),
        (COMPANY_ENTITIES, "lake.committed"),
    ],
    ids=lambda v: v.name if isinstance(v, Dataset) else v,
)
def test_a_kill_inside_or_after_the_delta_commit_applies_the_batch_exactly_once(
    pipe: Pipeline, ds: Dataset, point: str
):
    """Warehouse committed, lake maybe: the next sync applies exactly the missing batch (kill
    inside the Delta commit) or nothing (kill after it), never twice."""
    first = pipe.src.insert(ds, **({"record_version": 1} if ds is COMPANY_ENTITIES else {}))
    pipe.export(ds)
    _sync(pipe, ds)
    if ds is COMPANY_ENTITIES:
        key = {"org_id": first["org_id"], "entity_id": first["entity_id"]}
        pipe.src.update(ds, key, record_version=2, updated_at=ago(seconds=10))
    pipe.src.insert(ds)
    batch = pipe.export(ds)
    before = _table(pipe, ds).version()

    _killed_sync(pipe, ds, point)

    committed = _table(pipe, ds).version() - before
    assert committed == (1 if point == "lake.committed" else 0)
    assert _pending(pipe) == 1  # the warehouse still remembers the change
    results = _sync(pipe, ds)
    table = _table(pipe, ds)
    assert table.version() == before + 1  # exactly one commit carries the batch
    assert json.loads(table.history(1)[0][lake.META_BATCHES]) == [batch.batch_id]
    if point == "lake.committed":
        assert results[0].already_applied == 1 and results[0].kind is None
    assert _pending(pipe) == 0
    assert _equal(pipe, ds).lake_rows == 2


def test_a_new_warehouse_or_an_old_lake_rewrites_the_table_once(pipe: Pipeline, tmp_path: Path):
    """A lake this warehouse never wrote (or a rebuild) is replaced by the warehouse's content,
    and the incremental path resumes from there."""
    pipe.src.insert(ENTITY_SNAPSHOTS)
    pipe.export(ENTITY_SNAPSHOTS)
    _sync(pipe, ENTITY_SNAPSHOTS)
    run_sql(pipe.con, "UPDATE _warehouse_identity SET warehouse_id = 'another-warehouse'")
    pipe.src.insert(ENTITY_SNAPSHOTS)
    pipe.export(ENTITY_SNAPSHOTS)
    (result,) = _sync(pipe, ENTITY_SNAPSHOTS)
    assert (result.kind, result.rows) == ("overwrite", 2)
    lake.request_rewrite(pipe.con, ENTITY_SNAPSHOTS)
    (result,) = _sync(pipe, ENTITY_SNAPSHOTS)
    assert result.kind == "overwrite"
    pipe.src.insert(ENTITY_SNAPSHOTS)
    pipe.export(ENTITY_SNAPSHOTS)
    assert _sync(pipe, ENTITY_SNAPSHOTS)[0].kind == "append"
    assert _equal(pipe, ENTITY_SNAPSHOTS).lake_rows == 3


def test_an_older_version_reads_as_it_was(pipe: Pipeline):
    """Time travel: an analyst can ask what the lake held at an earlier version."""
    pipe.src.insert(OPERATION_RUNS)
    pipe.export(OPERATION_RUNS)
    _sync(pipe, OPERATION_RUNS)
    first = _table(pipe, OPERATION_RUNS).version()
    pipe.src.insert(OPERATION_RUNS)
    pipe.export(OPERATION_RUNS)
    _sync(pipe, OPERATION_RUNS)
    query = f"SELECT count(*) FROM {OPERATION_RUNS.name}"
    data_dir = pipe.settings.data_dir
    assert analytics.run_query(data_dir, query)[1] == [(2,)]
    old = analytics.run_query(data_dir, query, versions={OPERATION_RUNS.name: first})
    assert old[1] == [(1,)]
    assert pl.scan_delta(_target(pipe).uri(OPERATION_RUNS), version=first).collect().height == 1
    with pytest.raises(analytics.QueryError, match="cannot read the lake"):
        analytics.run_query(data_dir, query, versions={OPERATION_RUNS.name: first + 10})


def test_compaction_merges_small_files_and_vacuum_keeps_what_readers_still_need(
    pipe: Pipeline,
):
    """Many micro-batches leave many small files: compaction merges them without changing the
    content; vacuum then removes only files no retained or pinned version needs."""
    for _ in range(4):
        pipe.src.insert(OPERATION_EVENTS)
        pipe.export(OPERATION_EVENTS)
        _sync(pipe, OPERATION_EVENTS)
    target = _target(pipe)
    pinned = _table(pipe, OPERATION_EVENTS).version()
    files_before = len(_table(pipe, OPERATION_EVENTS).file_uris())
    assert files_before == 4
    compacted = lake.optimize(target, OPERATION_EVENTS)
    assert (compacted.files_removed, compacted.files_added) == (4, 1)
    assert len(_table(pipe, OPERATION_EVENTS).file_uris()) == 1
    _equal(pipe, OPERATION_EVENTS)
    # Within the retention nothing goes: the pre-compaction version still reads.
    assert lake.vacuum(target, OPERATION_EVENTS, 168).files_removed == 0
    assert lake.table_version(target, OPERATION_EVENTS, pinned).files
    # Past it, only files of versions nobody pins go.
    kept = lake.vacuum(target, OPERATION_EVENTS, 0, keep_versions=[pinned])
    assert kept.files_removed == 0
    gone = lake.vacuum(target, OPERATION_EVENTS, 0)
    assert gone.files_removed == 4
    _equal(pipe, OPERATION_EVENTS)


def test_lake_maintenance_command_and_job_run_outside_the_micro_batch(
    pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """Operators compact and vacuum by command or schedule; the micro-batch never does."""
    from export_pipeline.cli import main
    from export_pipeline.definitions import defs

    for _ in range(2):
        pipe.src.insert(OPERATION_RUNS)
        pipe.export(OPERATION_RUNS)
        _sync(pipe, OPERATION_RUNS)
    pipe.con.close()
    monkeypatch.setenv("EXPORT_DATA_DIR", str(pipe.settings.data_dir))
    monkeypatch.setenv("EXPORT_SOURCE_DSN", pipe.src.dsn)
    assert main(["lake", "optimize"]) == 0
    assert f"{OPERATION_RUNS.name:<24} version 2: compacted 2 files into 1" in (
        capsys.readouterr().out
    )
    assert main(["lake", "check"]) == 0
    assert "checksums equal" in capsys.readouterr().out
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("lake_maintenance_job").execute_in_process(instance=instance)
        assert result.success
        checks = defs.resolve_job_def("lake_check_job").execute_in_process(instance=instance)
        evaluations = checks.get_asset_check_evaluations()
        assert len(evaluations) == len(DATASETS) and all(e.passed for e in evaluations)
    assert main(["lake", "history", OPERATION_RUNS.name]) == 0
    history = capsys.readouterr().out.splitlines()
    assert history[0].startswith("v2  OPTIMIZE") and "append" in history[1]
    for name in ("export_microbatch_job", "export_backfill_job"):
        nodes = {n.name for n in defs.resolve_job_def(name).graph.node_defs}
        assert "compact_and_vacuum_lake" not in nodes, name
        assert not [n for n in nodes if n.endswith("lake_matches_warehouse")], name
    pipe.con = duckdb.connect(str(pipe.settings.warehouse_path))


def _lake_rows(settings: Settings, ds: Dataset) -> int:
    return lake.open_table(lake.lake_for(settings), ds).count()


def test_a_ui_backfill_of_warehouse_assets_alone_reaches_the_lake(pipe: Pipeline, dagster_env):
    """A backfill launched from the UI on the warehouse assets (no lake asset selected) must not
    leave the lake stale: the warehouse asset drains its own changes."""
    from export_pipeline.definitions import defs
    from export_pipeline.defs.assets import BackfillWindow

    day = datetime.now(UTC).date() - timedelta(days=2)
    for hour in (3, 9):
        pipe.src.insert(OPERATION_RUNS, created_at=datetime(day.year, day.month, day.day, hour,
                                                             tzinfo=UTC))  # fmt: skip
    result = defs.resolve_job_def("export_backfill_job").execute_in_process(
        instance=dagster_env,
        asset_selection=[dg.AssetKey(OPERATION_RUNS.name)],
        tags=BackfillWindow(day, day).tags(),
    )
    assert result.success
    assert _lake_rows(pipe.settings, OPERATION_RUNS) == 2
    with open_warehouse(pipe.settings.warehouse_path) as con:
        assert lake.check_table(con, lake.lake_for(pipe.settings), OPERATION_RUNS).passed
        ((pending,),) = run_sql(con, "SELECT count(*) FROM _lake_changes")
    assert pending == 0


def test_a_reconciliation_repair_reaches_the_lake(pipe: Pipeline, dagster_env):
    """Rows only the daily reconciliation finds (committed past the lookback) reach the lake in
    the same run."""
    from export_pipeline.definitions import defs
    from export_pipeline.defs.operations import RECONCILE_END_TAG, RECONCILE_START_TAG

    day = datetime.now(UTC).date() - timedelta(days=2)
    at = datetime(day.year, day.month, day.day, 8, tzinfo=UTC)
    pipe.src.insert(OPERATION_RUNS, created_at=at)
    with open_warehouse(pipe.settings.warehouse_path) as con:
        from export_pipeline.batch import run_dataset_batch

        run_dataset_batch(OPERATION_RUNS, source_dsn=pipe.src.dsn, con=con, settings=pipe.settings)
        lake.sync(con, lake.lake_for(pipe.settings), (OPERATION_RUNS,))
    pipe.src.insert(OPERATION_RUNS, created_at=at + timedelta(hours=6))  # behind the watermark
    result = defs.resolve_job_def("reconcile_job").execute_in_process(
        instance=dagster_env,
        tags={RECONCILE_START_TAG: day.isoformat(), RECONCILE_END_TAG: day.isoformat()},
        raise_on_error=False,
    )
    assert result.success
    assert _lake_rows(pipe.settings, OPERATION_RUNS) == 2
    with open_warehouse(pipe.settings.warehouse_path) as con:
        assert lake.check_table(con, lake.lake_for(pipe.settings), OPERATION_RUNS).passed


# --- object storage --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3-compatible server (moto's server mode) on loopback, with a bucket ``lake``.

    In its own process: delta-rs holds the GIL in some calls, which would starve a server thread.
    """
    import socket
    import time

    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client(
            "s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
            region_name="us-east-1",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.create_bucket(Bucket="lake")
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_lake_on_object_storage_syncs_verifies_and_reads_back(pipe: Pipeline, s3_endpoint: str):
    """EXPORT_LAKE_URI=s3://... works through delta-rs's object store: appends, merges, the
    whole-table check, and every reader."""
    env = {
        "EXPORT_DATA_DIR": str(pipe.settings.data_dir),
        "EXPORT_LAKE_URI": "s3://lake/export",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    settings = Settings.from_env(env)
    target = lake.lake_for(settings, env)
    assert target.storage_options["AWS_CONDITIONAL_PUT"] == "etag"
    assert "test" not in repr(target)  # credentials never printed
    row = pipe.src.insert(COMPANY_ENTITIES)
    pipe.src.insert(OPERATION_RUNS)
    pipe.export(COMPANY_ENTITIES)
    pipe.export(OPERATION_RUNS)
    lake.sync(pipe.con, target, (COMPANY_ENTITIES, OPERATION_RUNS))
    key = {"org_id": row["org_id"], "entity_id": row["entity_id"]}
    pipe.src.update(COMPANY_ENTITIES, key, record_version=2, updated_at=ago(seconds=5))
    pipe.src.insert(OPERATION_RUNS)
    pipe.export(COMPANY_ENTITIES)
    pipe.export(OPERATION_RUNS)
    kinds = {r.dataset: r.kind for r in lake.sync(pipe.con, target, DATASETS)}
    assert kinds == {COMPANY_ENTITIES.name: "merge", OPERATION_RUNS.name: "append"}
    for ds in (COMPANY_ENTITIES, OPERATION_RUNS):
        assert lake.check_table(pipe.con, target, ds).passed
    frame = pl.scan_delta(target.uri(OPERATION_RUNS), storage_options=target.options()).collect()
    assert frame.height == 2
    names, rows = analytics.run_query(
        pipe.settings.data_dir,
        f"SELECT record_version FROM {COMPANY_ENTITIES.name}",
        lake=target,
    )
    assert rows == [(2,)]
    assert analytics.refresh_catalog(pipe.settings.data_dir, lake=target).path is None
