"""Shared fixtures: a real embedded PostgreSQL (pgserver), one fresh database per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from rows import SourceRows

from export_pipeline.batch import BatchResult, run_dataset_batch
from export_pipeline.config import Settings
from export_pipeline.contract import Dataset
from export_pipeline.source import create_source_schema
from export_pipeline.warehouse import fetch_dicts, open_warehouse

#: Figures the reliability tests report (cases tried, crash points, seeds, state-machine steps),
#: printed at the end of the run under "reliability figures" and quoted in the README.
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def figures() -> dict[str, Any]:
    """Where a test records a figure worth quoting: ``figures["crash points"] = 10``."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One PostgreSQL server for the whole session, with its data in a private temp dir.

    Not under pytest's numbered ``basetemp``: concurrent pytest sessions can race on those
    numbers and rotate each other's directories away, which kills a running server.
    Yields the ``pgserver`` server object: ``get_uri()`` for the admin database,
    ``get_uri(database=name)`` for another one. The server and its data are removed at the end.
    """
    import pgserver

    root = Path(tempfile.mkdtemp(prefix="export_pipeline_test_pg_"))
    server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def source_dsn(pg_server: Any) -> Iterator[str]:
    """URI of a new, empty database (``test_<uuid hex>``) on the session server; dropped after."""
    import psycopg
    from psycopg import sql

    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.get_uri(database=name)
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@dataclass
class Pipeline:
    """A source with the reference schema, a warehouse file, and the settings of one test."""

    src: SourceRows
    con: duckdb.DuckDBPyConnection
    settings: Settings

    def export(self, ds: Dataset, **kwargs: Any) -> BatchResult:
        return run_dataset_batch(
            ds, source_dsn=self.src.dsn, con=self.con, settings=self.settings, **kwargs
        )

    def rows(self, ds: Dataset) -> list[dict[str, Any]]:
        """The warehouse table of ``ds``, every column, ordered by primary key."""
        order = ", ".join(f'"{c}"' for c in ds.primary_key)
        return fetch_dicts(self.con, f'SELECT * FROM "{ds.name}" ORDER BY {order}')

    def dead_letters(self, ds: Dataset) -> list[dict[str, Any]]:
        return fetch_dicts(
            self.con,
            "SELECT * FROM dx_dead_letter WHERE dataset = $dataset ORDER BY first_seen_at, reason",
            {"dataset": ds.name},
        )

    def ledger(self, ds: Dataset) -> list[dict[str, Any]]:
        return fetch_dicts(
            self.con,
            "SELECT * FROM _export_batches WHERE dataset = $dataset ORDER BY started_at",
            {"dataset": ds.name},
        )


@pytest.fixture
def pipe(source_dsn: str, tmp_path: Path) -> Iterator[Pipeline]:
    """The reference schema in a fresh source, a warehouse file, and no safety lag."""
    create_source_schema(source_dsn)
    settings = Settings.from_env(
        {"EXPORT_DATA_DIR": str(tmp_path), "EXPORT_SAFETY_LAG_SECONDS": "0"}
    )
    src = SourceRows(source_dsn)
    try:
        with open_warehouse(settings.warehouse_path) as con:
            yield Pipeline(src, con, settings)
    finally:
        src.close()


@pytest.fixture
def dagster_env(pipe: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Dagster instance whose runs see the test's source and warehouse (connection closed)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    for key, value in {
        "EXPORT_SOURCE_DSN": pipe.src.dsn,
        "EXPORT_DATA_DIR": str(pipe.settings.data_dir),
        "EXPORT_SAFETY_LAG_SECONDS": "0",
        "DAGSTER_HOME": str(home),
    }.items():
        monkeypatch.setenv(key, value)
    pipe.con.close()
    with dg.instance_for_test() as instance:
        yield instance
    pipe.con = duckdb.connect(str(pipe.settings.warehouse_path))
