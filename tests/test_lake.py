"""The Parquet lake: layout, incremental and atomic publishing, crash safety, rebuild, GC."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from export_pipeline import analytics, publish
from export_pipeline.batch import run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, OPERATION_RUNS, Dataset
from export_pipeline.source import create_source_schema, seed_source
from export_pipeline.warehouse import open_warehouse, run_sql
from tests.rows import SourceRows, ago

REPO = Path(__file__).resolve().parent.parent
OTHER_ORG = "5f1e6c0a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"

#: Hive path of a partition, per the contract's partition_by.
LAYOUT = {
    ("_date", "org_id"): re.compile(r"^_date=\d{4}-\d{2}-\d{2}/org_id=[0-9a-f-]{36}$"),
    ("_date",): re.compile(r"^_date=\d{4}-\d{2}-\d{2}$"),
    ("org_id",): re.compile(r"^org_id=[0-9a-f-]{36}$"),
}


def _settings(data_dir: Path) -> Settings:
    return Settings.from_env({"EXPORT_DATA_DIR": str(data_dir), "EXPORT_SAFETY_LAG_SECONDS": "0"})


def _export(dsn: str, settings: Settings, datasets: tuple[Dataset, ...] = DATASETS) -> None:
    with open_warehouse(settings.warehouse_path) as con:
        for ds in datasets:
            run_dataset_batch(ds, source_dsn=dsn, con=con, settings=settings)


def _publish(settings: Settings, datasets: tuple[Dataset, ...] = DATASETS, **kw):
    with open_warehouse(settings.warehouse_path) as con:
        return [publish.publish_dataset(con, ds, settings.data_dir, **kw) for ds in datasets]


def _lake_state(data_dir: Path, ds: Dataset) -> tuple[int, int]:
    """(rows, checksum) of what a reader of lake/<dataset> sees now."""
    sql = publish.lake_select_sql(ds, publish.current_version_dir(data_dir, ds))
    con = duckdb.connect()
    try:
        ((n, h),) = run_sql(
            con, f"SELECT count(*), coalesce(sum({publish.row_hash_sql(ds)}), 0) FROM ({sql})"
        )
    finally:
        con.close()
    return int(n), int(h)


def _warehouse_state(settings: Settings, ds: Dataset) -> tuple[int, int]:
    with open_warehouse(settings.warehouse_path) as con:
        check = publish.check_lake(con, ds, settings.data_dir)
    return check.warehouse_rows, check.warehouse_checksum


@pytest.fixture
def rows(source_dsn):
    create_source_schema(source_dsn)
    source = SourceRows(source_dsn)
    yield source
    source.close()


def test_lake_is_hive_partitioned_per_contract_zstd_and_equals_the_warehouse(source_dsn, tmp_path):
    """External readers rely on the documented layout; the check proves nothing was lost."""
    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.0005, days=2)
    settings = _settings(tmp_path)
    _export(source_dsn, settings)
    results = _publish(settings)
    assert all(r.changed and r.rows > 0 for r in results)
    con = duckdb.connect()
    for ds in DATASETS:
        link = publish.lake_root(tmp_path) / ds.name
        assert link.is_symlink()
        files = sorted(link.rglob("*.parquet"))
        partitions = {f.parent.relative_to(link).as_posix() for f in files}
        assert partitions and all(LAYOUT[ds.partition_by].match(p) for p in partitions), ds.name
        meta = run_sql(
            con,
            "SELECT DISTINCT compression FROM parquet_metadata($files)",
            {"files": [str(f) for f in files]},
        )
        assert meta == [("ZSTD",)]
        describe = "DESCRIBE SELECT * FROM read_parquet($f, hive_partitioning = false)"
        schema = {r[0] for r in run_sql(con, describe, {"f": str(files[0])})}
        assert schema == set(publish.file_columns(ds)), "partition keys live in the path only"
    con.close()
    with open_warehouse(settings.warehouse_path) as wh:
        checks = [publish.check_lake(wh, ds, tmp_path) for ds in DATASETS]
    assert all(c.passed and c.lake_rows > 0 for c in checks), checks


def test_republish_rewrites_only_touched_partitions_and_links_the_rest(rows, source_dsn, tmp_path):
    """Rewriting the whole lake every five minutes would not scale; untouched files stay."""
    settings = _settings(tmp_path)
    rows.insert(OPERATION_RUNS, created_at=ago(minutes=2))
    rows.insert(OPERATION_RUNS, org_id=OTHER_ORG, created_at=ago(minutes=2))
    _export(source_dsn, settings, (OPERATION_RUNS,))
    (first,) = _publish(settings, (OPERATION_RUNS,))
    before = publish.current_version_dir(tmp_path, OPERATION_RUNS)
    assert (first.partitions, first.partitions_written) == (2, 2)

    (again,) = _publish(settings, (OPERATION_RUNS,))
    assert not again.changed and publish.current_version_dir(tmp_path, OPERATION_RUNS) == before

    rows.insert(OPERATION_RUNS, org_id=OTHER_ORG, created_at=ago(minutes=1))
    _export(source_dsn, settings, (OPERATION_RUNS,))
    (second,) = _publish(settings, (OPERATION_RUNS,))
    after = publish.current_version_dir(tmp_path, OPERATION_RUNS)
    assert after != before and before.is_dir(), "the old version stays for readers mid-query"
    assert (second.partitions_written, second.partitions_linked) == (1, 1)
    untouched = next(p for p in after.rglob("*.parquet") if OTHER_ORG not in str(p))
    assert untouched.stat().st_ino == (before / untouched.relative_to(after)).stat().st_ino
    assert _lake_state(tmp_path, OPERATION_RUNS) == _warehouse_state(settings, OPERATION_RUNS)


_CRASHING_PUBLISH = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from export_pipeline import publish
    from export_pipeline.contract import OPERATION_RUNS
    from export_pipeline.warehouse import open_warehouse

    data_dir, step = Path(sys.argv[1]), sys.argv[2]

    def crash(reached):
        if reached == step:
            os.kill(os.getpid(), signal.SIGKILL)

    with open_warehouse(data_dir / "warehouse.duckdb") as con:
        publish.publish_dataset(con, OPERATION_RUNS, data_dir, on_step=crash)
    """
)


@pytest.mark.parametrize("step", publish.STEPS)
def test_kill_9_at_any_publish_step_leaves_old_or_new_lake_and_next_publish_heals(
    step, rows, source_dsn, tmp_path
):
    """A crash must never expose a broken partition, and recovery must need no operator."""
    settings = _settings(tmp_path)
    rows.insert(OPERATION_RUNS, created_at=ago(minutes=2))
    _export(source_dsn, settings, (OPERATION_RUNS,))
    _publish(settings, (OPERATION_RUNS,))
    old = _lake_state(tmp_path, OPERATION_RUNS)
    rows.insert(OPERATION_RUNS, created_at=ago(minutes=1))
    rows.insert(OPERATION_RUNS, org_id=OTHER_ORG, created_at=ago(minutes=1))
    _export(source_dsn, settings, (OPERATION_RUNS,))
    new = _warehouse_state(settings, OPERATION_RUNS)

    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_PUBLISH, str(tmp_path), step],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    seen = _lake_state(tmp_path, OPERATION_RUNS)
    assert seen == (new if step == "swapped" else old)
    for version in publish.versions_dir(tmp_path, OPERATION_RUNS).iterdir():
        assert _lake_state_of(version) in (old, new), "every version on disk is complete"

    (healed,) = _publish(settings, (OPERATION_RUNS,))
    assert _lake_state(tmp_path, OPERATION_RUNS) == new
    assert healed.changed == (step != "swapped")
    staging = publish.staging_root(tmp_path)
    assert not staging.exists() or not any(staging.iterdir()), "orphaned staging is cleaned"


def _lake_state_of(version: Path) -> tuple[int, int]:
    con = duckdb.connect()
    try:
        sql = publish.lake_select_sql(OPERATION_RUNS, version)
        ((n, h),) = run_sql(
            con,
            f"SELECT count(*), coalesce(sum({publish.row_hash_sql(OPERATION_RUNS)}), 0) "
            f"FROM ({sql})",
        )
    finally:
        con.close()
    return int(n), int(h)


def test_publish_rebuild_recreates_a_deleted_lake_from_the_warehouse(rows, source_dsn, tmp_path):
    """The lake is derived data: losing it must cost one command, not an export."""
    settings = _settings(tmp_path)
    rows.insert(OPERATION_RUNS)
    _export(source_dsn, settings)
    _publish(settings)
    import shutil

    shutil.rmtree(publish.lake_root(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "export_pipeline.cli", "publish", "--rebuild"],
        env={**os.environ, "EXPORT_DATA_DIR": str(tmp_path)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "MISMATCH" not in result.stdout
    assert _lake_state(tmp_path, OPERATION_RUNS) == _warehouse_state(settings, OPERATION_RUNS)
    assert analytics.analytics_path(tmp_path).is_symlink()


_HOLD_CATALOG = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    print(con.sql("SELECT count(*) FROM dx_operation_runs_v1").fetchall()[0][0], flush=True)
    sys.stdin.read()
    print(con.sql("SELECT count(*) FROM dx_operation_runs_v1").fetchall()[0][0], flush=True)
    """
)


def test_garbage_collection_spares_versions_an_open_analyst_catalog_still_reads(
    rows, source_dsn, tmp_path
):
    """Old versions must go eventually, but never from under an analyst's open connection."""
    settings = _settings(tmp_path)
    rows.insert(OPERATION_RUNS, created_at=ago(minutes=3))
    _export(source_dsn, settings, (OPERATION_RUNS,))
    _publish(settings, (OPERATION_RUNS,))
    held = analytics.refresh_catalog(tmp_path).path
    held_version = publish.current_version_dir(tmp_path, OPERATION_RUNS)
    analyst = subprocess.Popen(
        [sys.executable, "-c", _HOLD_CATALOG, str(analytics.analytics_path(tmp_path))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert analyst.stdout.readline().strip() == "1"
        for minutes in (2, 1):
            rows.insert(OPERATION_RUNS, created_at=ago(minutes=minutes))
            _export(source_dsn, settings, (OPERATION_RUNS,))
            _publish(settings, (OPERATION_RUNS,))
            analytics.refresh_catalog(tmp_path, grace_seconds=0)
        assert held.exists() and held_version.is_dir()
        assert len(list(publish.versions_dir(tmp_path, OPERATION_RUNS).iterdir())) == 2
        out, _ = analyst.communicate("", timeout=60)
        assert out.strip() == "1", "the held connection kept its snapshot"
    finally:
        analyst.kill()
        analyst.wait()
    result = analytics.refresh_catalog(tmp_path, grace_seconds=0)
    assert not held.exists() and not held_version.exists()
    assert result.removed_catalogs >= 1 and result.removed_versions == 1
    assert list(publish.versions_dir(tmp_path, OPERATION_RUNS).iterdir()) == [
        publish.current_version_dir(tmp_path, OPERATION_RUNS)
    ]


def test_lake_assets_follow_their_warehouse_assets_with_a_blocking_lake_check():
    """Publishing must run only after a successful load, and a lake mismatch must stop a run."""
    from export_pipeline.definitions import defs
    from export_pipeline.defs.lake import LAKE_MATCHES_WAREHOUSE, lake_key

    graph = defs.resolve_asset_graph()
    for ds in DATASETS:
        node = graph.get(lake_key(ds))
        assert node.parent_keys == {dg.AssetKey(ds.name)}
        assert dg.AssetCheckKey(lake_key(ds), LAKE_MATCHES_WAREHOUSE) in graph.asset_check_keys
    assert defs.resolve_job_def("lake_publish_job").executor_def.name == "in_process"


def test_publish_fingerprints_only_the_partitions_loads_marked_and_follows_a_moved_row(
    rows, source_dsn, tmp_path
):
    """Re-hashing the whole warehouse each micro-batch grows with the table; only what a load
    touched is recomputed, including the partition an updated row left."""
    settings = _settings(tmp_path)
    moving = rows.insert(OPERATION_RUNS, created_at=ago(days=2))
    rows.insert(OPERATION_RUNS, created_at=ago(days=2))
    rows.insert(OPERATION_RUNS, created_at=ago(minutes=5))
    _export(source_dsn, settings, (OPERATION_RUNS,))
    _publish(settings, (OPERATION_RUNS,))
    with open_warehouse(settings.warehouse_path) as con:
        assert publish.dirty_partitions(con, OPERATION_RUNS) == set()
    # The source moves one row to today: its old day and today are dirty, nothing else.
    rows.update(OPERATION_RUNS, {"run_id": moving["run_id"]}, created_at=ago(minutes=1))
    with open_warehouse(settings.warehouse_path) as con:
        run_dataset_batch(
            OPERATION_RUNS,
            source_dsn=source_dsn,
            con=con,
            settings=settings,
            mode="backfill",
            window=_whole_history(),
        )
        dirty = publish.dirty_partitions(con, OPERATION_RUNS)
        days = {p.split("/")[0] for p in dirty}
        assert days == {f"_date={ago(days=2).date()}", f"_date={ago(minutes=1).date()}"}
        result = publish.publish_dataset(con, OPERATION_RUNS, settings.data_dir)
        assert set(result.written) <= dirty and result.written
        assert publish.dirty_partitions(con, OPERATION_RUNS) == set()
        assert publish.check_lake(con, OPERATION_RUNS, settings.data_dir).passed  # full check
        quick = publish.check_lake(con, OPERATION_RUNS, settings.data_dir, written=result.written)
        assert quick.passed and quick.lake_rows == 3


def test_quick_lake_check_catches_a_missing_file_and_a_rewritten_partition_that_differs(
    rows, source_dsn, tmp_path
):
    """The quick check the micro-batch runs must still fail on a lake that lost or mangled rows."""
    settings = _settings(tmp_path)
    for days in (1, 2):
        rows.insert(OPERATION_RUNS, created_at=ago(days=days))
    _export(source_dsn, settings, (OPERATION_RUNS,))
    (result,) = _publish(settings, (OPERATION_RUNS,))
    current = publish.current_version_dir(settings.data_dir, OPERATION_RUNS)
    first, second = sorted(result.written)
    with open_warehouse(settings.warehouse_path) as con:
        assert publish.check_lake(con, OPERATION_RUNS, settings.data_dir, written=()).passed
        # A rewritten partition whose file holds other content fails the checksum.
        (victim,) = list((current / first).glob("*.parquet"))
        data = duckdb.connect()
        run_sql(
            data,
            f"COPY (SELECT * REPLACE (attempt_count + 1 AS attempt_count) FROM "
            f"read_parquet('{victim}')) TO '{victim}.tmp' (FORMAT parquet)",
        )
        data.close()
        os.replace(f"{victim}.tmp", victim)
        mangled = publish.check_lake(con, OPERATION_RUNS, settings.data_dir, written=[first])
        assert not mangled.passed and mangled.warehouse_checksum != mangled.lake_checksum
        # A partition whose file is gone fails the per-partition row counts.
        for f in (current / second).glob("*.parquet"):
            f.unlink()
        lost = publish.check_lake(con, OPERATION_RUNS, settings.data_dir, written=())
        assert not lost.passed and second in lost.partitions_differing


def _whole_history():
    from export_pipeline.extract import Window

    return Window(start=None, end=ago(seconds=0))
