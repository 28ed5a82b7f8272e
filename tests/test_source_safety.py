"""The source is someone else's production database: never write to it, never lose its rows.

Against the real embedded PostgreSQL: every source session is read-only and named; the commands
that create and seed tables refuse a database they were not told they own; the micro-batch window
stops before an open transaction's start; a role that row-level security or a missing privilege
would blind fails loudly instead of exporting nothing; permanent errors are not retried; and
`status` reports every dataset when one of them is broken.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import adbc_driver_postgresql.dbapi as adbc
import duckdb
import psycopg
import pytest
from psycopg import sql
from rows import SourceRows

from export_pipeline import cli, extract, source_session
from export_pipeline.batch import is_transient, run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, OPERATION_EVENTS, OPERATION_RUNS
from export_pipeline.source import create_source_schema
from export_pipeline.source_session import SourceAccessError
from export_pipeline.warehouse import fetch_dicts, get_watermark, open_warehouse


def _settings(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "EXPORT_DATA_DIR": str(tmp_path / "data"),
            "EXPORT_SAFETY_LAG_SECONDS": "0",
            "EXPORT_TRANSIENT_BACKOFF_SECONDS": "0.1",
            **extra,
        }
    )


def _database(dsn: str) -> str:
    return urlsplit(dsn).path.strip("/")


def _as_role(pg_server: Any, dsn: str, role: str) -> str:
    """The same database, logged in as ``role`` (the embedded server trusts local sockets)."""
    socket_dir = pg_server.get_postmaster_info().socket_dir
    return f"postgresql://{role}:@/{_database(dsn)}?host={socket_dir}"


@pytest.fixture
def admin(source_dsn: str) -> Iterator[psycopg.Connection]:
    """The reference schema, and an autocommit superuser connection to it."""
    create_source_schema(source_dsn)
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def reader(admin: psycopg.Connection, pg_server: Any, source_dsn: str) -> Iterator[str]:
    """A plain login role (no superuser, no BYPASSRLS, no pg_monitor) with SELECT on the
    source tables; yields its DSN."""
    role = f"reader_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    for schema in ("ops", "entities"):
        admin.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA {s} TO {r}; GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}"
            ).format(s=sql.Identifier(schema), r=sql.Identifier(role))
        )
    yield _as_role(pg_server, source_dsn, role)
    admin.execute(
        sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=sql.Identifier(role))
    )  # fmt: skip


# --- 3. never write to a source we do not own ----------------------------------------------------


def test_every_source_session_is_read_only_named_and_bounded(admin: Any, source_dsn: str) -> None:
    """The pipeline must be unable to change the producer's database, even by a bug of ours, and
    a DBA must see who is reading (application_name) with our timeouts in force."""
    settings = _settings(Path("/nonexistent"), EXPORT_SOURCE_STATEMENT_TIMEOUT_SECONDS="7")
    with extract.connect(settings.source_session_dsn(source_dsn)) as src, src.cursor() as cur:
        cur.execute(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'),"
            " current_setting('lock_timeout'), current_setting('transaction_read_only'),"
            " current_setting('row_security')"
        )
        assert cur.fetchall() == [("export_pipeline", "7s", "30s", "on", "off")]
        with pytest.raises(Exception, match="read-only transaction"):
            cur.execute("DELETE FROM ops.operation_runs")
    # The bare DSN a test or a library caller passes gets the same guard.
    with extract.connect(source_dsn) as src, src.cursor() as cur:
        with pytest.raises(Exception, match="read-only transaction"):
            cur.execute("CREATE TABLE ops.intruder (id int)")
    assert admin.execute("SELECT to_regclass('ops.intruder')").fetchone() == (None,)


def test_session_options_keep_the_dsns_own_parameters_and_are_added_once() -> None:
    """A DBA's connect_timeout, TLS mode or options must survive; the read-only options must
    always be there (after the DSN's own, so they win), and adding them twice changes nothing."""
    dsn = (
        "postgresql://exporter:pw@db.internal:6543/prod?sslmode=require&connect_timeout=3"
        "&application_name=etl&options=-c%20search_path%3Dexport"
    )
    session = source_session.session_uri(dsn)
    params = dict(parse_qsl(urlsplit(session).query))
    assert params["sslmode"] == "require" and params["connect_timeout"] == "3"
    assert params["application_name"] == "export_pipeline[etl]"
    assert params["options"].startswith("-c search_path=export -c default_transaction_read_only=on")
    assert "-c row_security=off" in params["options"]
    assert urlsplit(session).netloc == "exporter:pw@db.internal:6543"
    assert source_session.session_uri(session) == session


def test_the_per_transaction_guard_holds_where_a_pooler_drops_startup_options(
    admin: Any, source_dsn: str
) -> None:
    """PgBouncer in transaction mode drops startup options: the guard run at the start of each
    use of a connection must make that transaction read-only and RLS-strict on its own."""
    conn = adbc.connect(source_dsn)  # no options at all, as behind such a proxy
    try:
        source_session.guard(conn)
        with conn.cursor() as cur:
            with pytest.raises(Exception, match="read-only transaction"):
                cur.execute("INSERT INTO ops.operation_runs (run_id) VALUES (gen_random_uuid())")
    finally:
        conn.close()


def _producer_tables(admin: psycopg.Connection) -> list[tuple]:
    return admin.execute(
        "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2"
    ).fetchall()


@pytest.mark.parametrize(
    "argv",
    [
        ["source", "init"],
        ["source", "seed", "--scale", "0.001", "--days", "1"],
        ["demo", "--scale", "0.001", "--days", "1"],
        ["source", "seed", "--i-own-this-database", "somebody_elses_db"],
    ],
    ids=["init", "seed", "demo", "seed-naming-another-database"],
)
def test_seed_init_and_demo_never_touch_export_source_dsn_unless_told_they_own_it(
    argv: list[str],
    admin: psycopg.Connection,
    source_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`make demo` against a producer's DSN once truncated its tables with exit 0: these
    commands must refuse, before touching anything, and say how to proceed."""
    src = SourceRows(source_dsn)
    try:
        for _ in range(3):
            src.insert(OPERATION_RUNS)
        before_rows = src.execute("SELECT * FROM ops.operation_runs ORDER BY run_id")
    finally:
        src.close()
    before_tables = _producer_tables(admin)
    monkeypatch.setenv("EXPORT_SOURCE_DSN", source_dsn)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))

    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing" in err, err
    assert f"--i-own-this-database {_database(source_dsn)}" in err
    assert admin.execute("SELECT * FROM ops.operation_runs ORDER BY run_id").fetchall() == (
        before_rows
    )
    assert _producer_tables(admin) == before_tables
    assert not (tmp_path / "data" / "warehouse.duckdb").exists()


def test_naming_the_database_lets_init_create_the_reference_schema_there(
    source_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A developer who owns a scratch database can still set it up, by naming it."""
    monkeypatch.setenv("EXPORT_SOURCE_DSN", source_dsn)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["source", "init", "--i-own-this-database", _database(source_dsn)]) == 0
    with psycopg.connect(source_dsn) as conn:
        assert conn.execute("SELECT to_regclass('ops.operation_runs')").fetchone()[0]


# --- 4. no silent loss: the window stops before open transactions --------------------------------


def test_a_row_committed_late_by_an_open_transaction_is_loaded_by_the_next_microbatch(
    admin: Any, source_dsn: str, tmp_path: Path
) -> None:
    """A producer transaction that started before a micro-batch commits a row whose cursor is
    its start time (now()) after the batch: with a tiny lookback, a window ending at the
    source's clock would move the watermark past it and lose the row for good."""
    settings = _settings(tmp_path, EXPORT_LOOKBACK_MINUTES="0")
    producer = psycopg.connect(source_dsn)  # one transaction, held open
    try:
        ((started,),) = producer.execute("SELECT now()").fetchall()
        with open_warehouse(settings.warehouse_path) as con:
            first = run_dataset_batch(
                OPERATION_RUNS, source_dsn=source_dsn, con=con, settings=settings
            )
            assert first.window_end < started
            assert first.window_note and "transaction open since" in first.window_note
            assert get_watermark(con, OPERATION_RUNS) < started
            writer = SourceRows.__new__(SourceRows)  # its helpers, on the open transaction
            writer.conn = producer
            writer.insert(OPERATION_RUNS, created_at=started)  # = now() inside the transaction
            producer.commit()
            second = run_dataset_batch(
                OPERATION_RUNS, source_dsn=source_dsn, con=con, settings=settings
            )
            assert second.inserted == 1 and second.window_note is None
            ledger = fetch_dicts(
                con, "SELECT window_note FROM _export_batches ORDER BY started_at"
            )  # fmt: skip
            assert "transaction open since" in ledger[0]["window_note"]
    finally:
        producer.close()


def test_a_role_that_cannot_see_other_sessions_is_warned_that_only_the_lookback_protects_it(
    reader: str,
) -> None:
    """Without pg_read_all_stats a role sees no other role's transactions: the pipeline must say
    so (and what to grant), not pretend the window is safe."""
    with extract.connect(reader) as src:
        horizon = source_session.read_horizon(src)
    assert horizon.bound is None and not horizon.standby
    assert horizon.blind_spot and "pg_monitor" in horizon.blind_spot
    assert "EXPORT_LOOKBACK_MINUTES" in horizon.blind_spot


# --- 4. no silent loss: a role that cannot read everything fails loudly ---------------------------


def test_rls_hiding_rows_fails_the_dataset_naming_the_fix_and_keeps_its_watermark(
    admin: Any, reader: str, source_dsn: str, tmp_path: Path
) -> None:
    """The real producer enables RLS on every table with no policy: a plain role reads zero rows
    without an error, and the watermark would move past data never exported."""
    src = SourceRows(source_dsn)
    try:
        src.insert(OPERATION_RUNS)
        src.insert(OPERATION_EVENTS)
    finally:
        src.close()
    admin.execute("ALTER TABLE ops.operation_runs ENABLE ROW LEVEL SECURITY")
    settings = _settings(tmp_path)
    with open_warehouse(settings.warehouse_path) as con:
        with pytest.raises(SourceAccessError) as raised:
            run_dataset_batch(OPERATION_RUNS, source_dsn=reader, con=con, settings=settings)
        message = str(raised.value)
        assert "ops.operation_runs" in message and "row-level security" in message
        assert "BYPASSRLS" in message and "GRANT SELECT" in message
        assert get_watermark(con, OPERATION_RUNS) is None
        assert not is_transient(raised.value)
        # The other datasets still run.
        events = run_dataset_batch(OPERATION_EVENTS, source_dsn=reader, con=con, settings=settings)
        assert events.inserted == 1


def test_without_select_privilege_the_dataset_fails_with_the_grant_to_run(
    admin: Any, reader: str, source_dsn: str, tmp_path: Path
) -> None:
    """A missing grant must name the relation and the statement that fixes it."""
    role = urlsplit(reader).username
    admin.execute(
        sql.SQL("REVOKE SELECT ON ops.operation_runs FROM {}").format(sql.Identifier(role))
    )
    settings = _settings(tmp_path)
    with open_warehouse(settings.warehouse_path) as con:
        with pytest.raises(
            SourceAccessError, match=f"GRANT SELECT ON ops.operation_runs TO {role}"
        ):
            run_dataset_batch(OPERATION_RUNS, source_dsn=reader, con=con, settings=settings)
        assert get_watermark(con, OPERATION_RUNS) is None


def test_without_usage_on_the_schema_the_dataset_fails_with_the_grant_to_run(
    admin: Any, reader: str, tmp_path: Path
) -> None:
    """A role that cannot even look into the schema must be told which GRANT USAGE it needs."""
    role = urlsplit(reader).username
    admin.execute(sql.SQL("REVOKE USAGE ON SCHEMA ops FROM {}").format(sql.Identifier(role)))
    settings = _settings(tmp_path)
    with open_warehouse(settings.warehouse_path) as con:
        with pytest.raises(SourceAccessError, match=f"GRANT USAGE ON SCHEMA ops TO {role}"):
            run_dataset_batch(OPERATION_RUNS, source_dsn=reader, con=con, settings=settings)
        assert get_watermark(con, OPERATION_RUNS) is None


def test_views_created_by_the_table_owner_pass_and_invoker_views_over_rls_do_not(
    admin: Any, reader: str
) -> None:
    """The supported set-up (export views owned by the table owner, the reader holding SELECT on
    the views only) must pass; a security_invoker view reads with the reader's rights: RLS."""
    role = sql.Identifier(urlsplit(reader).username)
    admin.execute("ALTER TABLE ops.operation_runs ENABLE ROW LEVEL SECURITY")
    admin.execute("CREATE SCHEMA export")
    admin.execute("CREATE VIEW export.runs AS SELECT * FROM ops.operation_runs")
    admin.execute("CREATE VIEW export.runs_on_runs AS SELECT * FROM export.runs")
    admin.execute(
        "CREATE VIEW export.runs_invoker WITH (security_invoker = true) "
        "AS SELECT * FROM ops.operation_runs"
    )
    admin.execute(sql.SQL("REVOKE SELECT ON ops.operation_runs FROM {}").format(role))
    admin.execute(sql.SQL("GRANT USAGE ON SCHEMA export TO {}").format(role))
    admin.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA export TO {}").format(role))
    with extract.connect(reader) as src:
        assert source_session.rls_hides_rows(src, "export.runs") is None
        assert source_session.rls_hides_rows(src, "export.runs_on_runs") is None
        assert source_session.access_problem(src, "export.runs", ["run_id"]) is None
        problem = source_session.rls_hides_rows(src, "export.runs_invoker")
        assert problem and "ops.operation_runs" in problem
        assert source_session.rls_hides_rows(src, "ops.operation_runs")
        with src.cursor() as cur:  # the rows are there, through the owner's view
            cur.execute("SELECT count(*) FROM export.runs")
            assert cur.fetchall() == [(0,)]


def test_a_query_rls_would_filter_errors_instead_of_returning_fewer_rows(
    admin: Any, reader: str, source_dsn: str
) -> None:
    """Belt and braces: even a read the access check did not foresee cannot silently come back
    short, because the session runs with row_security=off."""
    src = SourceRows(source_dsn)
    try:
        src.insert(OPERATION_RUNS)
    finally:
        src.close()
    admin.execute("ALTER TABLE ops.operation_runs ENABLE ROW LEVEL SECURITY")
    admin.execute("CREATE POLICY everything ON ops.operation_runs USING (true)")
    with extract.connect(reader) as src, src.cursor() as cur:
        with pytest.raises(Exception, match="row-level security"):
            cur.execute("SELECT count(*) FROM ops.operation_runs")


# --- 4. permanent errors fail at once; only transient ones retry ---------------------------------


class _TcpToUnix:
    """A TCP port forwarding to the embedded server's unix socket (it listens on no TCP port),
    so that libpq negotiates TLS with the real server: a socket connection never does."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.socket_path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def password_role(pg_server: Any, admin: Any) -> Iterator[tuple[str, str]]:
    """A role the server asks a password of (scram-sha-256 for it in pg_hba.conf)."""
    role, password = f"pw_{secrets.token_hex(4)}", f"Pw-{secrets.token_hex(8)}"
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    ((hba_file,),) = admin.execute("SHOW hba_file").fetchall()
    hba = Path(hba_file)
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\n" + original)
    admin.execute("SELECT pg_reload_conf()")
    try:
        yield role, password
    finally:
        hba.write_text(original)
        admin.execute("SELECT pg_reload_conf()")
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _wrong_password_refused(dsn: str) -> bool:
    for _ in range(100):  # pg_hba reloads asynchronously
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
        except psycopg.OperationalError:
            return True
        threading.Event().wait(0.05)
    return False


def _attempts(caplog: pytest.LogCaptureFixture) -> int:
    return 1 + sum("transient error" in r.getMessage() for r in caplog.records)


def test_auth_unknown_database_and_tls_errors_fail_at_once_without_retries(
    pg_server: Any,
    source_dsn: str,
    password_role: tuple[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong password or sslmode=require against a server without TLS was retried as transient
    (20 attempts, 73 s): nothing a retry can fix may be retried."""
    role, _password = password_role
    socket_dir = pg_server.get_postmaster_info().socket_dir
    tcp = _TcpToUnix(str(Path(socket_dir) / ".s.PGSQL.5432"))
    db = _database(source_dsn)
    cases = {
        "wrong password": (
            f"postgresql://{role}:wrong@/{db}?host={socket_dir}",
            "password authentication failed",
        ),
        "unknown database": (
            f"postgresql://postgres:@/no_such_db_{secrets.token_hex(3)}?host={socket_dir}",
            "does not exist",
        ),
        "TLS required, server has none": (
            f"postgresql://postgres:@127.0.0.1:{tcp.port}/{db}?sslmode=require",
            "does not support SSL",
        ),
    }
    assert _wrong_password_refused(cases["wrong password"][0])
    settings = _settings(tmp_path, EXPORT_TRANSIENT_RETRIES="3")
    try:
        with open_warehouse(settings.warehouse_path) as con:
            for what, (dsn, expected) in cases.items():
                caplog.clear()
                with caplog.at_level(logging.WARNING), pytest.raises(Exception) as raised:
                    run_dataset_batch(OPERATION_RUNS, source_dsn=dsn, con=con, settings=settings)
                assert expected in str(raised.value), (what, raised.value)
                assert not is_transient(raised.value), what
                assert _attempts(caplog) == 1, what
            # The same TLS path, without the TLS requirement, is a working source.
            plain = f"postgresql://postgres:@127.0.0.1:{tcp.port}/{db}?sslmode=prefer"
            create_source_schema(source_dsn)
            run_dataset_batch(OPERATION_RUNS, source_dsn=plain, con=con, settings=settings)
    finally:
        tcp.close()


def test_only_transient_errors_are_retried() -> None:
    """The markers used to match "connection" in every libpq message, permanent ones included."""
    transient = [
        "connection to server on socket failed: server closed the connection unexpectedly",
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "FATAL: terminating connection due to administrator command",
        "FATAL: the database system is starting up",
        "SSL SYSCALL error: EOF detected",
    ]
    permanent = [
        'connection to server failed: FATAL: password authentication failed for user "x"',
        'connection to server failed: FATAL: database "nope" does not exist',
        "connection to server at 127.0.0.1 failed: server does not support SSL, but SSL was "
        "required",
        'connection failed: FATAL: no pg_hba.conf entry for host "10.0.0.1"',
        "permission denied for table operation_runs",
        "query would be affected by row-level security policy for table operation_runs",
        "cannot execute INSERT in a read-only transaction",
        'connection failed: FATAL: unrecognized configuration parameter "x"',
    ]
    assert all(is_transient(RuntimeError(m)) for m in transient)
    assert not any(is_transient(RuntimeError(m)) for m in permanent)


def test_a_server_that_accepts_and_never_answers_fails_the_connect_with_a_clear_message() -> None:
    """A silent server made `run` hang forever holding the warehouse lock: our connect timeout
    must end the attempt and say what happened (the retries are then bounded too)."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        dsn = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/db"
        limits = source_session.SessionLimits(connect_timeout_seconds=1)
        with pytest.raises(source_session.SourceTimeoutError) as raised:
            source_session.connect_interruptibly(
                adbc.connect, source_session.session_uri(dsn, limits)
            )
        assert "did not complete the connection within 1s" in str(raised.value)
        assert is_transient(raised.value)
    finally:
        silent.close()


# --- 6. partial failure is visible ---------------------------------------------------------------


def test_status_reports_every_dataset_when_one_relation_is_missing(
    admin: Any,
    source_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`status` crashed with a traceback when one relation was missing: an operator must see
    every dataset, the broken one with its error and its last good state."""
    settings = _settings(tmp_path)
    with open_warehouse(settings.warehouse_path) as con:
        for ds in DATASETS:
            run_dataset_batch(ds, source_dsn=source_dsn, con=con, settings=settings)
        admin.execute("DROP TABLE ops.operation_events CASCADE")
        with pytest.raises(Exception, match="does not exist"):
            run_dataset_batch(OPERATION_EVENTS, source_dsn=source_dsn, con=con, settings=settings)
    monkeypatch.setenv("EXPORT_SOURCE_DSN", source_dsn)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EXPORT_SAFETY_LAG_SECONDS", "0")

    assert cli.main(["status", "--json"]) == 3
    out, err = capsys.readouterr()
    rows = {r["dataset"]: r for r in json.loads(out)}
    assert set(rows) == {ds.name for ds in DATASETS}
    broken = rows[OPERATION_EVENTS.name]
    assert "ops.operation_events does not exist" in broken["error"]
    assert broken["last_batch_status"] == "failed" and broken["last_success_at"]
    assert broken["failing_since"] and broken["watermark"]
    assert all(r["error"] is None for n, r in rows.items() if n != OPERATION_EVENTS.name)
    assert "Traceback" not in err and OPERATION_EVENTS.name in err

    assert cli.main(["status"]) == 3
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = [line for line in out.splitlines() if "error:" in line or "failing since" in line]
    assert any("ops.operation_events does not exist" in line for line in lines), out
    assert all(ds.name in out for ds in DATASETS)


def test_status_says_the_window_is_held_back_by_an_open_transaction(
    admin: Any,
    source_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An operator who sees the watermark stall must be told why (and by whom)."""
    settings = _settings(tmp_path)
    with open_warehouse(settings.warehouse_path) as con:
        for ds in DATASETS:
            run_dataset_batch(ds, source_dsn=source_dsn, con=con, settings=settings)
    monkeypatch.setenv("EXPORT_SOURCE_DSN", source_dsn)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))
    with psycopg.connect(source_dsn, application_name="producer_worker") as producer:
        producer.execute("SELECT 1")
        cli.main(["status"])
        out = capsys.readouterr().out
    assert "window held back: a transaction open since" in out
    assert "producer_worker" in out


def test_dagster_shows_the_dataset_rls_blinds_with_its_fix_and_last_good_state(
    admin: Any,
    reader: str,
    source_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the UI the failing dataset must say what is wrong and how to fix it, with its last
    good state, while the other datasets export."""
    import dagster as dg

    from export_pipeline.definitions import defs
    from export_pipeline.defs.assets import BATCH_FITS_CONTRACT

    admin.execute("ALTER TABLE ops.operation_runs ENABLE ROW LEVEL SECURITY")
    monkeypatch.setenv("EXPORT_SOURCE_DSN", reader)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))
    job = defs.resolve_job_def("export_microbatch_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, partition_key="2026-01-01"
        )
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"}
    assert failed == {OPERATION_RUNS.name}
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == OPERATION_RUNS.name
        and e.check_name == BATCH_FITS_CONTRACT
    ]
    assert not evaluation.passed
    assert "BYPASSRLS" in evaluation.metadata["error"].value
    (materialization,) = result.asset_materializations_for_node(OPERATION_RUNS.name)
    assert "row-level security" in materialization.metadata["rejected"].value
    assert materialization.metadata["last_success_at"].value == "never"


def test_analysts_see_a_failing_dataset_in_the_freshness_view_with_its_last_good_state(
    admin: Any, source_dsn: str, tmp_path: Path
) -> None:
    """Analysts read the lake, not the pipeline's logs: a dataset that stopped exporting must
    show there, with when it last succeeded and why it fails, even if no publish ran since."""
    from export_pipeline import analytics

    settings = _settings(tmp_path)
    with open_warehouse(settings.warehouse_path) as con:
        for ds in (OPERATION_RUNS, OPERATION_EVENTS):
            run_dataset_batch(ds, source_dsn=source_dsn, con=con, settings=settings)
    analytics.refresh_catalog(settings.data_dir)
    admin.execute("DROP TABLE ops.operation_events CASCADE")
    with open_warehouse(settings.warehouse_path) as con:
        with pytest.raises(Exception, match="does not exist"):
            run_dataset_batch(OPERATION_EVENTS, source_dsn=source_dsn, con=con, settings=settings)
    # No publish since the failure: the same catalog already shows it.
    columns, rows = analytics.run_query(
        settings.data_dir, "SELECT * FROM dx_export_freshness ORDER BY dataset"
    )
    view = {r["dataset"]: r for r in (dict(zip(columns, row, strict=True)) for row in rows)}
    assert set(view) == {OPERATION_RUNS.name, OPERATION_EVENTS.name}
    failing = view[OPERATION_EVENTS.name]
    assert "ops.operation_events does not exist" in failing["last_error"]
    assert failing["last_batch_status"] == "failed"
    assert failing["failing_since"] > failing["last_success_at"]
    assert failing["watermark"] is not None and failing["lag"] is not None
    healthy = view[OPERATION_RUNS.name]
    assert healthy["last_error"] is None and healthy["failing_since"] is None
    # The catalog file an analyst keeps open shows the same.
    catalog = duckdb.connect(str(analytics.analytics_path(settings.data_dir)), read_only=True)
    try:
        ((error,),) = catalog.execute(
            "SELECT last_error FROM dx_export_freshness WHERE dataset = $d",
            {"d": OPERATION_EVENTS.name},
        ).fetchall()
    finally:
        catalog.close()
    assert "ops.operation_events does not exist" in error


def test_a_warehouse_of_the_previous_release_gains_the_window_note_and_its_freshness(
    tmp_path: Path,
) -> None:
    """Existing ledgers must keep working: the new column is added in place and the freshness
    state is filled from the ledger, so analysts see the last good state from the first run."""
    from export_pipeline.warehouse import ensure_schema

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE _export_batches (batch_id VARCHAR PRIMARY KEY, dataset VARCHAR NOT NULL, "
        "run_id VARCHAR, mode VARCHAR NOT NULL, window_start TIMESTAMPTZ, window_end TIMESTAMPTZ "
        "NOT NULL, extracted BIGINT NOT NULL, inserted BIGINT NOT NULL, updated BIGINT NOT NULL, "
        "unchanged BIGINT NOT NULL, stale BIGINT NOT NULL, dead_lettered BIGINT NOT NULL, "
        "started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ NOT NULL, duration_ms BIGINT "
        "NOT NULL, status VARCHAR NOT NULL, error VARCHAR)"
    )
    con.execute(
        "INSERT INTO _export_batches VALUES "
        "('a', 'dx_operation_runs_v1', NULL, 'microbatch', NULL, '2026-01-01', 0, 0, 0, 0, 0, 0,"
        " '2026-01-01 00:00+00', '2026-01-01 00:01+00', 1, 'succeeded', NULL),"
        "('b', 'dx_operation_runs_v1', NULL, 'microbatch', NULL, '2026-01-02', 0, 0, 0, 0, 0, 0,"
        " '2026-01-02 00:00+00', '2026-01-02 00:01+00', 1, 'failed', 'IOException: boom')"
    )
    con.close()
    with open_warehouse(path) as con:
        ensure_schema(con, DATASETS)
        (state,) = fetch_dicts(con, "SELECT * FROM _export_freshness")
        columns = [r[0] for r in con.execute("DESCRIBE _export_batches").fetchall()]
    assert columns[-1] == "window_note"
    assert state["dataset"] == "dx_operation_runs_v1"
    assert state["last_success_at"] == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert (state["last_batch_status"], state["last_error"]) == ("failed", "IOException: boom")
    assert state["failing_since"] == datetime(2026, 1, 2, tzinfo=UTC)
