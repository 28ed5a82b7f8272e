"""Source and warehouse faults: a source that stops mid-extract or is too slow, a warehouse file
another process holds, a disk that fills during a load. Each either completes after retries or
fails cleanly, with the previous state (rows, dead letters, watermark) untouched."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pytest
from rows import ORG_ID, SourceRows, ago

from export_pipeline.batch import BatchResult, run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import OPERATION_EVENTS, OPERATION_RUNS
from export_pipeline.source import create_source_schema, seed_source
from export_pipeline.warehouse import (
    WarehouseBusyError,
    fetch_dicts,
    get_watermark,
    open_warehouse,
    run_sql,
)

pytestmark = pytest.mark.reliability


def _settings(data_dir: Path, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "EXPORT_DATA_DIR": str(data_dir),
            "EXPORT_SAFETY_LAG_SECONDS": "0",
            "EXPORT_BATCH_SIZE": "1000",
            "EXPORT_TRANSIENT_RETRIES": "4",
            "EXPORT_TRANSIENT_BACKOFF_SECONDS": "1",
            **extra,
        }
    )


def _ledger(con: Any, dataset: str) -> list[dict]:
    return fetch_dicts(
        con,
        "SELECT status, error, extracted FROM _export_batches WHERE dataset = $d "
        "ORDER BY started_at",
        {"d": dataset},
    )


def _keys(con: Any) -> tuple[int, int]:
    ((rows, keys),) = run_sql(
        con, f'SELECT count(*), count(DISTINCT event_id) FROM "{OPERATION_EVENTS.name}"'
    )
    return rows, keys


# --- the source stops mid-extract ----------------------------------------------------------------


@pytest.fixture(scope="module")
def own_server() -> Iterator[Any]:
    """A PostgreSQL server of this module's own, which its tests stop and start."""
    import pgserver

    root = Path(tempfile.mkdtemp(prefix="export_pipeline_faults_pg_"))
    server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        seed_source(server.get_uri(), scale=0.01, days=2, end=ago(hours=1))
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _pg_ctl_stop(server: Any, mode: str) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user)


def _extract_in_flight(server: Any) -> bool:
    try:
        with psycopg.connect(server.get_uri(), autocommit=True, connect_timeout=2) as conn:
            ((n,),) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query ILIKE 'COPY%%' AND pid <> pg_backend_pid()"
            ).fetchall()
            return n > 0
    except psycopg.OperationalError:
        return False


def _batch_in_thread(server: Any, settings: Settings) -> tuple[threading.Thread, dict]:
    """Start an events batch in a thread; return once its extract is streaming."""
    dsn = server.get_uri()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with open_warehouse(settings.warehouse_path) as con:
                try:
                    outcome["result"] = run_dataset_batch(
                        OPERATION_EVENTS, source_dsn=dsn, con=con, settings=settings
                    )
                except Exception as exc:  # noqa: BLE001 - the test inspects it
                    outcome["error"] = exc
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 60
    while not _extract_in_flight(server):
        assert time.monotonic() < deadline and thread.is_alive(), f"no extract seen: {outcome}"
        time.sleep(0.05)
    return thread, outcome


@pytest.mark.parametrize(
    ("mode", "comes_back"), [("fast", True), ("immediate", True), ("immediate", False)]
)
def test_source_stopping_mid_extract_is_retried_to_completion_or_fails_cleanly(
    mode: str,
    comes_back: bool,
    own_server: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    figures: dict,
) -> None:
    """A PostgreSQL restart (failover, upgrade, crash) must neither lose nor double a row."""
    settings = _settings(tmp_path)
    dsn = own_server.get_uri()
    with psycopg.connect(dsn) as conn:
        ((in_scope,),) = conn.execute(
            "SELECT count(*) FROM ops.operation_events WHERE entity_type IS DISTINCT FROM 'job'"
        ).fetchall()
    with caplog.at_level(logging.WARNING, logger="export_pipeline.batch"):
        thread, outcome = _batch_in_thread(own_server, settings)
        _pg_ctl_stop(own_server, mode)
        if comes_back:
            time.sleep(1.0)
            own_server.ensure_postgres_running()
        thread.join(timeout=120)
    if not comes_back:
        own_server.ensure_postgres_running()
    assert not thread.is_alive()

    with open_warehouse(settings.warehouse_path) as con:
        ledger = _ledger(con, OPERATION_EVENTS.name)
        assert ledger[0]["status"] == "failed", ledger
        assert "transient error" in caplog.text
        if comes_back:
            result: BatchResult = outcome["result"]
            assert result.extracted == result.accounted == in_scope
            assert ledger[-1]["status"] == "succeeded"
        else:
            assert "error" in outcome and len(ledger) == settings.transient_retries + 1
            assert all(row["status"] == "failed" for row in ledger)
            assert _keys(con) == (0, 0), "nothing half-loaded"
            assert get_watermark(con, OPERATION_EVENTS) is None, "watermark unmoved"
            # Once the source is back, the next run completes from where the last commit left.
            result = run_dataset_batch(OPERATION_EVENTS, source_dsn=dsn, con=con, settings=settings)
            assert result.extracted == result.accounted == in_scope
        rows, keys = _keys(con)
        assert rows == keys == result.inserted, "every row once"
    figures.setdefault("source outages survived (pg_ctl stop mode, restarted)", []).append(
        f"{mode}/{'restarted' if comes_back else 'stayed down'}"
    )


# --- a slow source: statement timeout ------------------------------------------------------------


def test_statement_timeout_is_transient_retried_and_reported(
    source_dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source too busy to answer in time is a retry, recorded in the ledger, not a lost batch."""
    create_source_schema(source_dsn)
    src = SourceRows(source_dsn)
    for _ in range(3):
        src.insert(OPERATION_RUNS)
    # The pipeline's own statement timeout (a startup option of its sessions, which takes
    # precedence over a database or role default).
    settings = _settings(tmp_path, EXPORT_SOURCE_STATEMENT_TIMEOUT_SECONDS="0.3")
    with psycopg.connect(source_dsn) as locker:
        locker.execute("LOCK TABLE ops.operation_runs IN ACCESS EXCLUSIVE MODE")
        outcome: dict[str, Any] = {}

        def work() -> None:
            with open_warehouse(settings.warehouse_path) as con:
                outcome["result"] = run_dataset_batch(
                    OPERATION_RUNS,
                    source_dsn=settings.source_session_dsn(source_dsn),
                    con=con,
                    settings=settings,
                )

        with caplog.at_level(logging.WARNING, logger="export_pipeline.batch"):
            thread = threading.Thread(target=work)
            thread.start()
            time.sleep(2.5)  # long enough for at least one attempt to time out
            locker.rollback()  # the source answers again
            thread.join(timeout=60)
    src.close()
    assert outcome["result"].inserted == 3
    assert "statement timeout" in caplog.text and "transient error" in caplog.text
    with open_warehouse(settings.warehouse_path) as con:
        ledger = _ledger(con, OPERATION_RUNS.name)
    assert [r["status"] for r in ledger][-1] == "succeeded"
    assert any("statement timeout" in (r["error"] or "") for r in ledger if r["status"] == "failed")


# --- the warehouse file is held by an analyst ----------------------------------------------------

HOLD_READ_ONLY = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.sql("SELECT count(*) FROM _export_batches").fetchall()
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_analyst_holding_the_warehouse_read_only_makes_a_run_wait_then_fail_clearly(
    pipe: Any,
) -> None:
    """An analyst's read-only session on the warehouse file must not corrupt or lose a run."""
    pipe.src.insert(OPERATION_RUNS)
    pipe.export(OPERATION_RUNS)
    path = pipe.settings.warehouse_path
    pipe.con.close()
    pipe.src.insert(OPERATION_RUNS)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_READ_ONLY, str(path), "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(WarehouseBusyError, match="locked by another process"):
            with open_warehouse(path, lock_timeout_seconds=0.5):
                pytest.fail("wrote a warehouse an analyst holds open")
        with open_warehouse(path, lock_timeout_seconds=30) as con:
            assert run_sql(con, f'SELECT count(*) FROM "{OPERATION_RUNS.name}"') == [(1,)]
            result = run_dataset_batch(
                OPERATION_RUNS, source_dsn=pipe.src.dsn, con=con, settings=pipe.settings
            )
            assert (result.inserted, result.unchanged) == (1, 1)
    finally:
        holder.wait(timeout=30)
    pipe.con = open_warehouse(path).__enter__()


# --- the disk fills during a load ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs (root can mount one here); skipped, saying why, where mounting is refused."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_filling_during_a_load_rolls_back_with_a_clear_error_and_the_next_run_completes(
    source_dsn: str, small_disk: Path
) -> None:
    """A full disk must roll the batch back (no half-load, watermark unmoved), never corrupt."""
    create_source_schema(source_dsn)
    src = SourceRows(source_dsn)
    src.insert(OPERATION_EVENTS, occurred_at=ago(hours=2))
    settings = Settings.from_env(
        {
            "EXPORT_DATA_DIR": str(small_disk),
            "EXPORT_SAFETY_LAG_SECONDS": "0",
            "EXPORT_TRANSIENT_RETRIES": "0",
        }
    )
    with open_warehouse(settings.warehouse_path) as con:
        first = run_dataset_batch(
            OPERATION_EVENTS, source_dsn=source_dsn, con=con, settings=settings
        )
        watermark = get_watermark(con, OPERATION_EVENTS)
    assert first.inserted == 1
    # 30k events of ~1.5 kB each (about 45 MB) cannot fit beside a filler leaving ~8 MB free.
    src.execute(
        "INSERT INTO ops.operation_events (event_id, run_id, event_type, event_sequence, "
        "occurred_at, org_id, company_id, entity_type, entity_id, provider, http_status, "
        "payload_hash, error_message, metadata_json) "
        "SELECT gen_random_uuid(), gen_random_uuid(), 'provider_call', 0, "
        "now() - interval '1 minute', %s, gen_random_uuid(), 'company', gen_random_uuid(), "
        "'prospeo', 200, md5(g::text), repeat(md5(g::text), 40), '{}'::jsonb "
        "FROM generate_series(1, 30000) AS g",
        (ORG_ID,),
    )
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - 8 * 2**20, 0))

    with open_warehouse(settings.warehouse_path) as con:
        with pytest.raises(Exception, match="(?i)no space left|disk|write") as failure:
            run_dataset_batch(OPERATION_EVENTS, source_dsn=source_dsn, con=con, settings=settings)
    message = str(failure.value)
    assert len(message) < 2000 and "space" in message.lower(), message

    filler.unlink()
    with open_warehouse(settings.warehouse_path) as con:
        # Rolled back: the first batch only, its watermark, nothing half-loaded.
        assert _keys(con) == (1, 1)
        assert get_watermark(con, OPERATION_EVENTS) == watermark
        second = run_dataset_batch(
            OPERATION_EVENTS, source_dsn=source_dsn, con=con, settings=settings
        )
        assert second.inserted == 30000
        assert _keys(con) == (30001, 30001)
    src.close()
    assert os.path.exists(settings.warehouse_path)
