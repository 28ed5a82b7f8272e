"""Slower source-safety tests (`make test-reliability`): a paused streaming standby holds the
window back, a silent or blocked source cannot hang a run, and Ctrl-C / SIGTERM stop a run
cleanly (rolled back, watermark unmoved, DuckDB lock released, the Dagster run failed)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg
import pytest
from dagster._core.instance.ref import InstanceRef
from rows import SourceRows, ago

from export_pipeline import cli, source_session
from export_pipeline.batch import run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, OPERATION_RUNS
from export_pipeline.source import create_source_schema
from export_pipeline.warehouse import fetch_dicts, get_watermark, open_warehouse

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parent.parent


def _settings(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "EXPORT_DATA_DIR": str(tmp_path / "data"),
            "EXPORT_SAFETY_LAG_SECONDS": "0",
            "EXPORT_LOOKBACK_MINUTES": "0",
            **extra,
        }
    )


def _wait(predicate: Any, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# --- a streaming standby, from pgserver's own binaries --------------------------------------------


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[str, str]]:
    """A primary (pgserver) and a hot standby streaming from it (pg_basebackup -R), started with
    the same PostgreSQL binaries on its own socket directory. Yields (primary DSN, standby DSN)."""
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH

    root = Path(tempfile.mkdtemp(prefix="export_pipeline_standby_"))
    root.chmod(0o755)
    primary = pgserver.get_server(root / "primary", cleanup_mode="delete")
    socket_dir = primary.get_postmaster_info().socket_dir
    run_as: dict[str, Any] = {}
    standby, sockets = root / "standby", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:  # PostgreSQL refuses root; pgserver runs it as `pgserver`
        user = pwd.getpwnam("pgserver")
        run_as = {"user": user.pw_uid, "group": user.pw_gid}
        os.chown(sockets, user.pw_uid, user.pw_gid)
        os.chown(root, user.pw_uid, user.pw_gid)
    bin_dir = Path(POSTGRES_BIN_PATH)
    subprocess.run(
        [bin_dir / "pg_basebackup", "-D", standby, "-R", "-X", "stream", "-c", "fast",
         "-h", str(socket_dir), "-U", "postgres"],
        check=True, capture_output=True, timeout=120, **run_as,
    )  # fmt: skip
    subprocess.run(
        [bin_dir / "pg_ctl", "-D", standby, "-l", root / "standby.log", "-w", "-t", "60",
         "-o", f"-p 5433 -k {sockets} -c listen_addresses=''", "start"],
        check=True, capture_output=True, timeout=120, **run_as,
    )  # fmt: skip
    try:
        yield (
            primary.get_uri(),
            f"postgresql://postgres:@/postgres?host={sockets}&port=5433",
        )
    finally:
        subprocess.run(
            [bin_dir / "pg_ctl", "-D", standby, "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=120, **run_as,
        )  # fmt: skip
        primary.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def test_a_paused_standby_holds_the_window_back_and_status_says_why(
    primary_and_standby: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a replica the window's end came from its clock, not from how far it had replayed: with
    replay paused longer than the lookback, committed rows were skipped for good."""
    primary_dsn, standby_dsn = primary_and_standby
    create_source_schema(primary_dsn)
    producer = SourceRows(primary_dsn)
    observer = psycopg.connect(standby_dsn, autocommit=True)

    def on_standby(query: str) -> Any:
        return observer.execute(query).fetchone()[0]

    try:
        producer.insert(OPERATION_RUNS, created_at=ago(minutes=1))
        _wait(
            lambda: (
                on_standby("SELECT to_regclass('ops.operation_runs') IS NOT NULL")
                and on_standby("SELECT count(*) FROM ops.operation_runs") == 1
            ),
            "the standby to replay the first row",
        )
        settings = _settings(tmp_path)
        with open_warehouse(settings.warehouse_path) as con:
            first = run_dataset_batch(
                OPERATION_RUNS, source_dsn=standby_dsn, con=con, settings=settings
            )
            assert first.inserted == 1

            on_standby("SELECT pg_wal_replay_pause()")
            _wait(lambda: on_standby("SELECT pg_get_wal_replay_pause_state()") == "paused", "pause")
            for _ in range(2):
                producer.insert(OPERATION_RUNS, created_at=ago(seconds=0))
            _wait(
                lambda: on_standby("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()"),
                "the standby to receive WAL it does not replay",
            )
            time.sleep(0.2)  # the standby's clock moves on past the new rows
            replayed_until = on_standby("SELECT pg_last_xact_replay_timestamp()")
            held = run_dataset_batch(
                OPERATION_RUNS, source_dsn=standby_dsn, con=con, settings=settings
            )
            assert held.inserted == 0
            assert held.window_end < replayed_until
            assert get_watermark(con, OPERATION_RUNS) == first.window_end  # not moved on
            assert held.window_note and "replay is paused" in held.window_note
            ledger = fetch_dicts(
                con, "SELECT window_note FROM _export_batches ORDER BY started_at DESC LIMIT 1"
            )
            assert "standby has replayed commits only up to" in ledger[0]["window_note"]
        # What an operator reads (a dataset never exported shows its own error line).
        monkeypatch.setenv("EXPORT_SOURCE_DSN", standby_dsn)
        monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))
        cli.main(["status"])
        out = capsys.readouterr().out
        assert "window held back: standby has replayed commits only up to" in out
        assert "(replay is paused)" in out

        on_standby("SELECT pg_wal_replay_resume()")
        _wait(lambda: on_standby("SELECT count(*) FROM ops.operation_runs") == 3, "resume")
        with open_warehouse(settings.warehouse_path) as con:
            after = run_dataset_batch(
                OPERATION_RUNS, source_dsn=standby_dsn, con=con, settings=settings
            )
            assert after.inserted == 2
    finally:
        observer.close()
        producer.close()


def test_an_idle_caught_up_standby_does_not_hold_the_window_back(
    primary_and_standby: tuple[str, str],
) -> None:
    """With nothing new on the primary the replay timestamp stays old although nothing is
    missing: a standby that replayed all it received must not stall the export."""
    primary_dsn, standby_dsn = primary_and_standby
    create_source_schema(primary_dsn)
    with psycopg.connect(standby_dsn, autocommit=True) as observer:
        _wait(
            lambda: observer.execute(
                "SELECT to_regclass('ops.operation_runs') IS NOT NULL "
                "AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
            ).fetchone()[0],
            "the standby to catch up",
        )
    from export_pipeline import extract

    with extract.connect(standby_dsn) as src:
        horizon = source_session.read_horizon(src)
    assert horizon.standby and horizon.bound is None and horizon.held_back is None


# --- silent and blocked sources; Ctrl-C and SIGTERM ------------------------------------------


def test_a_silent_server_fails_the_batch_within_the_retries_bound_with_a_clear_message(
    tmp_path: Path,
) -> None:
    """A server that accepts the connection and never answers made `run` hang forever holding
    the warehouse lock: each attempt now ends at the connect timeout, and the retries end."""
    silent = socket.create_server(("127.0.0.1", 0))
    settings = _settings(
        tmp_path,
        EXPORT_SOURCE_CONNECT_TIMEOUT_SECONDS="1",
        EXPORT_TRANSIENT_RETRIES="2",
        EXPORT_TRANSIENT_BACKOFF_SECONDS="0.2",
    )
    dsn = f"postgresql://exporter@127.0.0.1:{silent.getsockname()[1]}/db"
    started = time.monotonic()
    try:
        with open_warehouse(settings.warehouse_path) as con:
            with pytest.raises(source_session.SourceTimeoutError, match="within 1s"):
                run_dataset_batch(
                    OPERATION_RUNS,
                    source_dsn=settings.source_session_dsn(dsn),
                    con=con,
                    settings=settings,
                )
            assert get_watermark(con, OPERATION_RUNS) is None
            ledger = fetch_dicts(con, "SELECT status, error FROM _export_batches")
            assert ledger and all(r["status"] == "failed" for r in ledger)
    finally:
        silent.close()
    assert time.monotonic() - started < 30  # 3 attempts of 1 s and two short backoffs


def _run_cli(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "export_pipeline.cli", "run"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _assert_stopped_cleanly(proc: subprocess.Popen, env: dict[str, str]) -> str:
    """The run exited non-zero, rolled back, released DuckDB's lock and is FAILED in Dagster."""
    out, err = proc.communicate(timeout=60)  # far below the source timeouts set by the test
    assert proc.returncode != 0, out + err
    assert "Traceback" not in err.split("export-pipeline: error:")[-1]
    warehouse = Path(env["EXPORT_DATA_DIR"]) / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))  # read-write: the lock was released
    try:
        assert con.execute("SELECT count(*) FROM _export_watermarks").fetchone() == (0,)
        for ds in DATASETS:
            table = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = $t", {"t": ds.name}
            ).fetchone()[0]
            if table:
                assert con.execute(f'SELECT count(*) FROM "{ds.name}"').fetchone() == (0,)
        errors = [e for (e,) in con.execute("SELECT error FROM _export_batches").fetchall()]
        assert errors and all("interrupted" in e for e in errors), errors
    finally:
        con.close()
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
        statuses = [r.dagster_run.status for r in instance.get_run_records()]
    assert statuses == [dg.DagsterRunStatus.FAILURE]
    return out + err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_run_hung_on_a_silent_server_cleanly(signum: int, tmp_path: Path) -> None:
    """A run waiting on a server that never answers was deaf to Ctrl-C and SIGTERM."""
    silent = socket.create_server(("127.0.0.1", 0))
    silent.settimeout(120)
    (tmp_path / "dagster_home").mkdir()
    env = {
        "EXPORT_SOURCE_DSN": f"postgresql://exporter@127.0.0.1:{silent.getsockname()[1]}/db",
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "EXPORT_SOURCE_CONNECT_TIMEOUT_SECONDS": "600",
    }
    proc = _run_cli(env)
    try:
        client, _ = silent.accept()  # the run is now waiting for the server's answer
        time.sleep(0.5)
        proc.send_signal(signum)
        _assert_stopped_cleanly(proc, env)
        client.close()
    finally:
        proc.kill()
        silent.close()


def test_sigterm_stops_a_run_blocked_on_a_source_lock_and_cancels_its_query(
    source_dsn: str, tmp_path: Path
) -> None:
    """A migration holding a lock blocks our read; SIGTERM must not wait for the lock timeout,
    and must not leave our query queued on the producer's database."""
    create_source_schema(source_dsn)
    SourceRows(source_dsn).close()
    (tmp_path / "dagster_home").mkdir()
    env = {
        "EXPORT_SOURCE_DSN": source_dsn,
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "EXPORT_SOURCE_LOCK_TIMEOUT_SECONDS": "600",
    }
    tables = ", ".join(ds.source_table for ds in DATASETS)
    with (
        psycopg.connect(source_dsn) as migration,
        psycopg.connect(source_dsn, autocommit=True) as observer,
    ):
        migration.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")

        def ours_waiting() -> int:
            return observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'export_pipeline' AND wait_event_type = 'Lock'"
            ).fetchone()[0]

        proc = _run_cli(env)
        try:
            _wait(lambda: ours_waiting() > 0, "the run to block on the lock", seconds=120)
            proc.send_signal(signal.SIGTERM)
            _assert_stopped_cleanly(proc, env)
            assert ours_waiting() == 0
        finally:
            proc.kill()
            migration.rollback()
