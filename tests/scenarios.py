"""Scenarios for the reliability tests: seeded source databases cloned per test, the real CLI
run in a subprocess, and the state a run leaves behind compared by content checksums."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from export_pipeline import lake
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, Dataset
from export_pipeline.extract import quote_ident
from export_pipeline.faults import CRASH_ENV
from export_pipeline.warehouse import get_watermark, open_warehouse, run_sql

REPO = Path(__file__).resolve().parents[1]


# --- the source: seeded templates, cloned per scenario -----------------------------------------


def admin_connection(pg_server: Any) -> psycopg.Connection:
    return psycopg.connect(pg_server.get_uri(), autocommit=True)


def create_db(pg_server: Any, name: str, template: str | None = None) -> str:
    with admin_connection(pg_server) as admin:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        admin.execute(query)
    return pg_server.get_uri(database=name)


def drop_db(pg_server: Any, name: str) -> None:
    with admin_connection(pg_server) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def copy_rows(
    conn: psycopg.Connection, table: str, key: str, cursor: str, n: int, renumber: str = ""
) -> None:
    """Insert ``n`` copies of rows: new keys, cursor 20 minutes ago, ``renumber`` column + 1M."""
    schema, name = table.split(".")
    columns = [
        c
        for (c,) in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, name),
        )
    ]
    exprs = []
    for c in columns:
        if c == key:
            exprs.append(sql.SQL("gen_random_uuid()"))
        elif c == cursor:
            exprs.append(sql.SQL("now() - interval '20 minutes'"))
        elif c == renumber:
            exprs.append(sql.SQL("{} + 1000000").format(sql.Identifier(c)))
        else:
            exprs.append(sql.Identifier(c))
    conn.execute(
        sql.SQL("INSERT INTO {t} ({cols}) SELECT {exprs} FROM {t} ORDER BY {key} LIMIT %s").format(
            t=sql.Identifier(schema, name),
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            exprs=sql.SQL(", ").join(exprs),
            key=sql.Identifier(key),
        ),
        (n,),
    )


def change_source(dsn: str) -> None:
    """An incremental change: new runs and events, ~2% of entities get a new version."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        copy_rows(conn, "ops.operation_runs", "run_id", "created_at", 150)
        copy_rows(conn, "ops.operation_events", "event_id", "occurred_at", 600, "event_sequence")
        for table in ("entities.company_entities", "entities.person_entities"):
            schema, name = table.split(".")
            conn.execute(
                sql.SQL(
                    "UPDATE {t} SET record_version = record_version + 1, "
                    "updated_at = now() - interval '20 minutes' "
                    "WHERE entity_id IN (SELECT entity_id FROM {t} ORDER BY entity_id LIMIT 40)"
                ).format(t=sql.Identifier(schema, name))
            )


def late_rows(dsn: str, day: datetime) -> None:
    """Events committed now with a cursor on ``day``: beyond the lookback, for repair."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        orgs = [
            o
            for (o,) in conn.execute(
                "SELECT DISTINCT org_id FROM ops.operation_events WHERE org_id IS NOT NULL "
                "ORDER BY org_id LIMIT 3"
            )
        ]
        for hour, org in enumerate(orgs, start=3):
            conn.execute(
                "INSERT INTO ops.operation_events (event_id, run_id, event_type, event_sequence, "
                "occurred_at, org_id, company_id, entity_type, entity_id, provider, http_status, "
                "payload_hash, metadata_json) "
                "SELECT gen_random_uuid(), run_id, event_type, event_sequence + 10000, "
                "%(at)s, org_id, company_id, entity_type, entity_id, provider, http_status, "
                "payload_hash, metadata_json FROM ops.operation_events "
                "WHERE org_id = %(org)s AND entity_type <> 'job' "
                "AND event_type IS NOT NULL AND provider IS NOT NULL "
                "ORDER BY event_id LIMIT 5",
                {"at": day + timedelta(hours=hour), "org": org},
            )


# --- one scenario: its own source clone, data dir and Dagster home -----------------------------


class Scenario:
    """A source database cloned from a template, a data dir and a DAGSTER_HOME."""

    def __init__(self, pg_server: Any, template: str, root: Path) -> None:
        self.db = f"crash_run_{uuid.uuid4().hex}"
        self.dsn = create_db(pg_server, self.db, template)
        self.root = root
        self.data_dir = root / "data"
        (root / "dagster_home").mkdir(parents=True, exist_ok=True)

    def env(self, crash_at: str | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "EXPORT_SOURCE_DSN": self.dsn,
            "EXPORT_DATA_DIR": str(self.data_dir),
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "EXPORT_SAFETY_LAG_SECONDS": "0",
            # One day: the incremental change (20 minutes old) is inside every later window.
            "EXPORT_LOOKBACK_MINUTES": "1440",
            # Small record batches: the extract crash point fires with more batches to come.
            "EXPORT_BATCH_SIZE": "500",
        }
        env.pop(CRASH_ENV, None)
        if crash_at:
            env[CRASH_ENV] = crash_at
        return env

    def cli(self, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "export_pipeline.cli", *args],
            env=self.env(crash_at),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess:
        done = self.cli(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def crashed(self, *args: str, crash_at: str) -> subprocess.CompletedProcess:
        done = self.cli(*args, crash_at=crash_at)
        assert done.returncode == -signal.SIGKILL, (
            f"{crash_at}: expected death by SIGKILL, got {done.returncode}\n"
            + done.stdout
            + done.stderr
        )
        return done

    def settings(self) -> Settings:
        return Settings.from_env({"EXPORT_DATA_DIR": str(self.data_dir)})

    def state(self) -> State:
        return State.read(self.data_dir)

    def adopt(self, other: Scenario) -> None:
        """Start from a copy of another scenario's data dir (warehouse and lake)."""
        shutil.copytree(other.data_dir, self.data_dir, symlinks=True)


# --- what a run leaves behind, by content ------------------------------------------------------


@dataclass(frozen=True)
class DatasetState:
    rows: int
    distinct_keys: int
    content: int  # sum of row hashes over every contract column
    watermark: datetime | None
    dead_letters: tuple[tuple, ...]  # (record_key, reason, status, row_json), sorted
    lake_rows: int
    lake_content: int

    def same_data(self, other: DatasetState) -> bool:
        return (self.rows, self.content, self.dead_letters) == (
            other.rows,
            other.content,
            other.dead_letters,
        )


@dataclass(frozen=True)
class State:
    datasets: dict[str, DatasetState]

    @classmethod
    def read(cls, data_dir: Path) -> State:
        settings = Settings.from_env({"EXPORT_DATA_DIR": str(data_dir)})
        out = {}
        with open_warehouse(settings.warehouse_path, read_only=True) as con:
            for ds in DATASETS:
                out[ds.name] = _dataset_state(con, ds, data_dir)
        return cls(out)


def row_hash_sql(ds: Dataset) -> str:
    """Hash of a row over every contract column (the content checksum's summand)."""
    return f"hash({', '.join(quote_ident(c) for c in ds.column_names)})"


def _dataset_state(con: Any, ds: Dataset, data_dir: Path) -> DatasetState:
    table = quote_ident(ds.name)
    keys = ", ".join(quote_ident(k) for k in ds.primary_key)
    ((rows, distinct, content),) = run_sql(
        con,
        f"SELECT count(*), count(DISTINCT ({keys})), "
        f"coalesce(sum({row_hash_sql(ds)}), 0) FROM {table}",
    )
    letters = run_sql(
        con,
        "SELECT record_key::VARCHAR, reason, status, row_json::VARCHAR FROM dx_dead_letter "
        "WHERE dataset = $dataset ORDER BY ALL",
        {"dataset": ds.name},
    )
    # What an analyst reads: the newest Delta version's files, cast to the contract's types.
    current = lake.table_version(
        lake.lake_for(Settings.from_env({"EXPORT_DATA_DIR": str(data_dir)})), ds
    )
    lake_sql = lake.read_sql_over_files(ds, current.files)
    ((lake_rows, lake_content),) = run_sql(
        con, f"SELECT count(*), coalesce(sum({row_hash_sql(ds)}), 0) FROM ({lake_sql})"
    )
    return DatasetState(
        rows=int(rows),
        distinct_keys=int(distinct),
        content=int(content),
        watermark=get_watermark(con, ds),
        dead_letters=tuple(tuple(r) for r in letters),
        lake_rows=int(lake_rows),
        lake_content=int(lake_content),
    )


def assert_equal_to_uninterrupted(got: State, want: State, context: str) -> None:
    """Same rows, same content, same dead letters, same lake; no key twice."""
    for name, expected in want.datasets.items():
        actual = got.datasets[name]
        where = f"{context}: {name}"
        assert actual.rows == actual.distinct_keys, f"{where}: duplicate keys"
        assert (actual.rows, actual.content) == (expected.rows, expected.content), where
        assert actual.dead_letters == expected.dead_letters, f"{where}: dead letters differ"
        assert (actual.lake_rows, actual.lake_content) == (actual.rows, actual.content), (
            f"{where}: lake differs from the warehouse"
        )
        assert actual.watermark is not None and expected.watermark is not None, where


def assert_old_or_new(after: State, before: State, new: State, context: str) -> None:
    """Per dataset, a crash leaves the previous committed state or the new one, never a mix."""
    for name, old in before.datasets.items():
        got, want = after.datasets[name], new.datasets[name]
        where = f"{context}: {name}"
        assert got.rows == got.distinct_keys, f"{where}: duplicate keys"
        moved = got.watermark != old.watermark
        if moved:
            assert got.same_data(want), f"{where}: watermark moved but data is not the new state"
        else:
            assert got.same_data(old), f"{where}: watermark kept but data changed"
        lake_is_old = (got.lake_rows, got.lake_content) == (old.lake_rows, old.lake_content)
        lake_is_new = (got.lake_rows, got.lake_content) == (want.lake_rows, want.lake_content)
        assert lake_is_old or lake_is_new, f"{where}: lake is neither the old nor the new version"
