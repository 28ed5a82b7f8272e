"""Backfill by UTC day window: idempotent, org-scoped, and never disturbing the micro-batch."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
from conftest import Pipeline
from dagster._core.instance.ref import InstanceRef
from rows import new_id

from export_pipeline.batch import run_backfill
from export_pipeline.contract import COMPANY_ENTITIES, DATASETS, OPERATION_RUNS
from export_pipeline.defs.assets import (
    BACKFILL_END_TAG,
    BACKFILL_START_TAG,
    ORG_TAG,
    BackfillWindow,
)
from export_pipeline.extract import Window
from export_pipeline.warehouse import get_watermark, open_warehouse, run_sql

REPO = Path(__file__).resolve().parent.parent


def _at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _fingerprint(con: duckdb.DuckDBPyConnection) -> dict:
    """Every contract table, whole rows (metadata columns included), as comparable values."""
    return {
        ds.name: run_sql(con, f'SELECT count(*), sum(hash(t)) FROM "{ds.name}" AS t')
        for ds in DATASETS
    }


def test_day_window_covers_exactly_the_utc_days_inclusive():
    """A row at 00:00:00.000000 belongs to its day; one at the next midnight does not."""
    window = Window.days(date(2026, 11, 1), date(2026, 11, 3))
    first_instant = _at(date(2026, 11, 1), 0)
    next_midnight = _at(date(2026, 11, 4), 0)
    assert window.start < first_instant <= window.end
    assert window.end < next_midnight


def test_backfill_of_three_days_twice_is_identical_to_once(pipe: Pipeline):
    """Operators re-run backfills freely; a second pass must not change a single row."""
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=d) for d in (5, 4, 3)]
    for day in days:
        for hour in (0, 11, 23):
            pipe.src.insert(OPERATION_RUNS, created_at=_at(day, hour))
        pipe.src.insert(COMPANY_ENTITIES, updated_at=_at(day))
    outside = pipe.src.insert(OPERATION_RUNS, created_at=_at(today - timedelta(days=6)))
    for ds in (OPERATION_RUNS, COMPANY_ENTITIES):
        run_backfill(ds, days[0], days[-1], source_dsn=pipe.src.dsn, con=pipe.con,
                     settings=pipe.settings)  # fmt: skip
    once = _fingerprint(pipe.con)
    for ds in (OPERATION_RUNS, COMPANY_ENTITIES):
        second = run_backfill(
            ds, days[0], days[-1], source_dsn=pipe.src.dsn, con=pipe.con, settings=pipe.settings
        )
        assert sum(r.inserted + r.updated for r in second) == 0
    assert _fingerprint(pipe.con) == once
    run_ids = {r["run_id"] for r in pipe.rows(OPERATION_RUNS)}
    assert len(run_ids) == 9 and outside["run_id"] not in {str(x) for x in run_ids}
    assert len(pipe.rows(COMPANY_ENTITIES)) == 3


def test_backfill_never_moves_the_watermark_nor_rolls_back_a_newer_version(pipe: Pipeline):
    """An old window replays old data: the micro-batch position and newer state must win."""
    old_day = datetime.now(UTC).date() - timedelta(days=3)
    company = pipe.src.insert(COMPANY_ENTITIES, record_version=5, canonical_name="v5")
    pipe.export(COMPANY_ENTITIES)
    watermark = get_watermark(pipe.con, COMPANY_ENTITIES)
    pipe.src.update(
        COMPANY_ENTITIES,
        {"org_id": company["org_id"], "entity_id": company["entity_id"]},
        record_version=4,
        canonical_name="v4 replayed",
        updated_at=_at(old_day),
    )
    (result,) = run_backfill(
        COMPANY_ENTITIES, old_day, old_day, source_dsn=pipe.src.dsn, con=pipe.con,
        settings=pipe.settings,
    )  # fmt: skip
    assert result.stale == 1
    (row,) = pipe.rows(COMPANY_ENTITIES)
    assert (row["record_version"], row["canonical_name"]) == (5, "v5")
    assert get_watermark(pipe.con, COMPANY_ENTITIES) == watermark


def test_backfill_for_one_org_touches_only_that_org(pipe: Pipeline):
    """Backfilling one tenant after an incident must not re-extract everyone else."""
    day = datetime.now(UTC).date() - timedelta(days=2)
    mine, theirs = new_id(), new_id()
    pipe.src.insert(OPERATION_RUNS, org_id=mine, created_at=_at(day))
    pipe.src.insert(OPERATION_RUNS, org_id=theirs, created_at=_at(day))
    (result,) = run_backfill(
        OPERATION_RUNS, day, day, source_dsn=pipe.src.dsn, con=pipe.con, settings=pipe.settings,
        org_id=mine,
    )  # fmt: skip
    assert result.extracted == 1
    assert [str(r["org_id"]) for r in pipe.rows(OPERATION_RUNS)] == [mine]


def test_cli_backfill_is_one_dagster_run_for_the_whole_range(pipe: Pipeline, tmp_path: Path):
    """The range must appear as one run in the instance (the UI's run history), not one per day."""
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=3), today - timedelta(days=1)
    for d in range(4):
        pipe.src.insert(OPERATION_RUNS, created_at=_at(today - timedelta(days=d + 1)))
    pipe.con.close()
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "EXPORT_SOURCE_DSN": pipe.src.dsn,
        "EXPORT_DATA_DIR": str(tmp_path),
        "DAGSTER_HOME": str(home),
    }
    args = ["backfill", "--start", first.isoformat(), "--end", last.isoformat()]
    args += ["--dataset", OPERATION_RUNS.name]
    done = subprocess.run(
        [sys.executable, "-m", "export_pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backfill 3/3 days" in done.stdout + done.stderr
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        runs = instance.get_run_records()
        assert len(runs) == 1
        tags = runs[0].dagster_run.tags
    assert (tags[BACKFILL_START_TAG], tags[BACKFILL_END_TAG]) == (
        first.isoformat(),
        last.isoformat(),
    )
    assert not [t for t in tags if t.startswith("dagster/asset_partition")]
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        ((rows,),) = run_sql(con, f'SELECT count(*) FROM "{OPERATION_RUNS.name}"')
        ((batches,),) = run_sql(con, "SELECT count(*) FROM _export_batches WHERE mode = 'backfill'")
    finally:
        con.close()
    assert rows == 3 and batches == 3


# --- export_backfill_job: the range comes from its own run tags --------------------------------


def _backfill_job(instance: dg.DagsterInstance, tags: dict[str, str], *datasets) -> object:
    from export_pipeline.definitions import defs

    return defs.resolve_job_def("export_backfill_job").execute_in_process(
        instance=instance,
        tags=tags,
        asset_selection=[dg.AssetKey(ds.name) for ds in datasets] or None,
        raise_on_error=False,
    )


def _data_files(data_dir: Path) -> dict[str, str]:
    """Every file under the data directory (warehouse, WAL, lake), by content hash."""
    return {
        str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }


#: Backfill tags a UI user might give, and what the refusal must name.
BAD_RANGES = [
    ({}, [f"{BACKFILL_START_TAG} is missing", f"{BACKFILL_END_TAG} is missing"]),
    ({BACKFILL_START_TAG: "2026-11-02"}, [f"{BACKFILL_END_TAG} is missing"]),
    (
        {BACKFILL_START_TAG: "yesterday", BACKFILL_END_TAG: "2026-11-02"},
        [f"{BACKFILL_START_TAG}='yesterday' is not a date (YYYY-MM-DD)"],
    ),
    (
        {BACKFILL_START_TAG: "2026-11-03", BACKFILL_END_TAG: "2026-11-01"},
        [f"{BACKFILL_END_TAG}=2026-11-01 is before {BACKFILL_START_TAG}=2026-11-03"],
    ),
    (
        {BACKFILL_START_TAG: "2026-11-01", BACKFILL_END_TAG: "2026-11-01", ORG_TAG: "acme"},
        [f"{ORG_TAG}='acme' is not an org uuid"],
    ),
]


def test_backfill_job_without_a_valid_range_fails_at_once_naming_the_tags_and_touches_nothing(
    pipe: Pipeline, dagster_env: dg.DagsterInstance
):
    """A UI user who launches the backfill job without (or with wrong) tags must be told what to
    set, and nothing may be re-extracted, loaded or moved meanwhile (not even the watermark)."""
    pipe.src.insert(OPERATION_RUNS, created_at=_at(datetime.now(UTC).date() - timedelta(days=1)))
    before = _data_files(pipe.settings.data_dir)
    for tags, named in BAD_RANGES:
        result = _backfill_job(dagster_env, tags)
        assert not result.success, tags
        # One failure for the run, before any step starts (the resource checks the range).
        kinds = [e.event_type_value for e in result.all_events]
        assert "STEP_START" not in kinds and "STEP_FAILURE" not in kinds, (tags, kinds)
        (failure,) = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
        message = failure.event_specific_data.error.message
        for text in named:
            assert text in message, (tags, message)
        assert "export_backfill_job's Launchpad, 'Edit tags'" in message
        assert "export-pipeline backfill --start" in message
        # No file under the data directory changed.
        assert _data_files(pipe.settings.data_dir) == before, tags


def test_backfill_job_re_extracts_exactly_the_days_its_tags_name(
    pipe: Pipeline, dagster_env: dg.DagsterInstance
):
    """The UI's way to backfill (export_backfill_job with start/end tags) must load exactly
    those UTC days, leave the watermark alone, and record the days on the materialization."""
    today = datetime.now(UTC).date()
    by_day = {
        today - timedelta(days=d): [
            pipe.src.insert(OPERATION_RUNS, created_at=_at(today - timedelta(days=d), h))
            for h in (0, 23)
        ]
        for d in range(1, 6)
    }
    first, last = today - timedelta(days=4), today - timedelta(days=2)
    result = _backfill_job(dagster_env, BackfillWindow(first, last).tags(), OPERATION_RUNS)
    assert result.success
    (materialization,) = result.asset_materializations_for_node(OPERATION_RUNS.name)
    assert materialization.partition is None
    assert materialization.metadata["backfill_days"].value == f"{first} .. {last}"
    assert materialization.metadata["inserted"].value == 6
    with open_warehouse(pipe.settings.warehouse_path) as con:
        loaded = {str(r[0]) for r in run_sql(con, f'SELECT run_id FROM "{OPERATION_RUNS.name}"')}
        ledger = run_sql(
            con,
            "SELECT mode, count(*) FROM _export_batches WHERE dataset = $d GROUP BY ALL",
            {"d": OPERATION_RUNS.name},
        )
        assert get_watermark(con, OPERATION_RUNS) is None
    wanted = {str(r["run_id"]) for d, rows in by_day.items() if first <= d <= last for r in rows}
    assert loaded == wanted and len(wanted) == 6
    assert ledger == [("backfill", 3)]


def test_backfill_job_for_one_org_re_extracts_only_that_org(
    pipe: Pipeline, dagster_env: dg.DagsterInstance
):
    """The org tag narrows a UI backfill to one tenant, as `--org` does on the CLI."""
    day = datetime.now(UTC).date() - timedelta(days=2)
    mine, theirs = new_id(), new_id()
    pipe.src.insert(OPERATION_RUNS, org_id=mine, created_at=_at(day))
    pipe.src.insert(OPERATION_RUNS, org_id=theirs, created_at=_at(day))
    result = _backfill_job(dagster_env, BackfillWindow(day, day, mine).tags(), OPERATION_RUNS)
    assert result.success
    with open_warehouse(pipe.settings.warehouse_path) as con:
        orgs = [str(r[0]) for r in run_sql(con, f'SELECT org_id FROM "{OPERATION_RUNS.name}"')]
    assert orgs == [mine]


def test_materialize_of_a_warehouse_asset_in_the_ui_is_a_micro_batch_unless_given_backfill_tags(
    pipe: Pipeline, dagster_env: dg.DagsterInstance
):
    """The UI's "Materialize" on an unpartitioned warehouse asset must bring it up to date (a
    micro-batch from the watermark), not fail for want of a range; with the backfill tags in its
    Launchpad it backfills those days."""
    from export_pipeline.definitions import defs

    today = datetime.now(UTC).date()
    old = pipe.src.insert(OPERATION_RUNS, created_at=_at(today - timedelta(days=3)))
    job = defs.resolve_implicit_global_asset_job_def()
    selection = [dg.AssetKey(OPERATION_RUNS.name)]
    first = job.execute_in_process(instance=dagster_env, asset_selection=selection)
    assert first.success
    day = today - timedelta(days=3)
    second = job.execute_in_process(
        instance=dagster_env, asset_selection=selection, tags=BackfillWindow(day, day).tags()
    )
    assert second.success
    with open_warehouse(pipe.settings.warehouse_path) as con:
        modes = run_sql(
            con,
            "SELECT run_id, mode FROM _export_batches WHERE dataset = $d ORDER BY started_at",
            {"d": OPERATION_RUNS.name},
        )
        assert get_watermark(con, OPERATION_RUNS) is not None
        loaded = [str(r[0]) for r in run_sql(con, f'SELECT run_id FROM "{OPERATION_RUNS.name}"')]
    assert modes == [(first.run_id, "microbatch"), (second.run_id, "backfill")]
    assert loaded == [str(old["run_id"])]
