"""The analyst's DuckDB: a shell on the catalog with the project's DuckDB, and examples that run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from cli_process import run_cli as cli

from export_pipeline.source import create_source_schema, seed_source

REPO = Path(__file__).resolve().parent.parent
QUERIES = REPO / "docs" / "queries.md"


@pytest.fixture(scope="module")
def published(pg_server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One micro-batch exported and published, shared by this module's read-only tests."""
    import uuid

    import psycopg
    from psycopg import sql

    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = pg_server.get_uri(database=name)
    create_source_schema(dsn)
    seed_source(dsn, scale=0.001, days=2, end=datetime.now(UTC) - timedelta(minutes=5))
    root = tmp_path_factory.mktemp("analyst")
    env = {
        "EXPORT_SOURCE_DSN": dsn,
        "EXPORT_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "EXPORT_SAFETY_LAG_SECONDS": "0",
        "EXPORT_ENV_FILE": str(root / "no.env"),
    }
    done = cli("run", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return env


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", QUERIES.read_text(), re.DOTALL | re.MULTILINE)


def test_sql_shell_reads_the_catalog_with_the_projects_duckdb(published: dict) -> None:
    """The registry's DuckDB CLI (1.5.6) cannot open a 2.0 catalog: the project's shell can."""
    done = cli("sql", "-c", "SELECT count(*) AS n FROM dx_operation_runs_v1", env=published)
    assert done.returncode == 0, done.stderr
    assert re.search(r"│\s+\d{3,}\s+│", done.stdout), done.stdout

    piped = cli("sql", env=published, stdin="SHOW TABLES;\nSELECT 42 AS answer;\n")
    assert piped.returncode == 0, piped.stderr
    assert "runs_per_day" in piped.stdout and "42" in piped.stdout


def test_sql_shell_is_read_only_and_reports_errors_in_one_line(published: dict) -> None:
    """An analyst's shell must never change the catalog, nor hold a lock a run needs."""
    done = cli("sql", "-c", "CREATE TABLE mine AS SELECT 1", env=published)
    assert done.returncode == 2
    assert "read-only" in done.stdout and "Traceback" not in done.stdout + done.stderr
    catalog = Path(published["EXPORT_DATA_DIR"]) / "analytics.duckdb"
    with duckdb.connect(str(catalog), read_only=True) as con:
        assert "mine" not in {t for (t,) in con.sql("SHOW TABLES").fetchall()}


def test_sql_shell_without_a_catalog_says_how_to_make_one(tmp_path: Path) -> None:
    """A newcomer's first command must say what to run first, not fail obscurely."""
    done = cli("sql", "-c", "SELECT 1", env={"EXPORT_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert "export-pipeline run" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_every_sql_example_of_the_query_guide_runs(published: dict) -> None:
    """Documentation that does not run teaches the wrong thing."""
    blocks = _blocks("sql")
    assert len(blocks) >= 4
    for block in blocks:
        done = cli("sql", "-c", block, env=published)
        assert done.returncode == 0 and "Error" not in done.stdout, block + done.stdout


@pytest.mark.parametrize("library", ["duckdb", "polars", "pandas"])
def test_every_python_example_of_the_query_guide_runs(published: dict, library: str) -> None:
    """The DuckDB, Polars and pandas examples run as written, in the project's environment."""
    blocks = [b for b in _blocks("python") if f"import {library}" in b]
    if library == "duckdb":
        blocks = [b for b in blocks if "import polars" not in b and ".df()" not in b]
    if library == "pandas":
        blocks = [b for b in _blocks("python") if ".df()" in b]
    assert blocks, library
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block],
            env={**os.environ, **published},
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 0, block + done.stderr
        assert done.stdout.strip(), block


def test_the_readme_and_the_guide_name_the_duckdb_version_that_reads_the_catalog() -> None:
    """An analyst must know which DuckDB opens the file; the pinned one is the answer."""
    pinned = re.search(r'"duckdb==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned and pinned.group(1) == duckdb.__version__
    for text in ((REPO / "README.md").read_text(), QUERIES.read_text()):
        assert f"DuckDB {duckdb.__version__}" in text
        assert "export-pipeline sql" in text
