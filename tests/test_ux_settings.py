"""Settings read one way, paths independent of the working directory, and starting over."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from cli_process import run_cli as cli

from export_pipeline import source
from export_pipeline.config import PROJECT_ROOT, Settings, dagster_home, read_env_file
from export_pipeline.source import create_source_schema, seed_source

REPO = Path(__file__).resolve().parent.parent


# --- one way to read settings ------------------------------------------------------------------


def test_env_file_is_read_under_the_environment_by_settings_and_by_the_schedules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI, `make ui` and runs must agree: a `.env` value applies everywhere, and a variable
    set in the environment wins over it (the UI said 5 minutes while the CLI's SLA stayed 30)."""
    from export_pipeline.defs.operations import build_schedules

    env_file = tmp_path / ".env"
    env_file.write_text(
        'EXPORT_LAG_SLA_MINUTES=5\nEXPORT_MICROBATCH_MINUTES=5\nEXPORT_RECONCILE_CRON="0 4 * * *"\n'
    )
    monkeypatch.setenv("EXPORT_ENV_FILE", str(env_file))
    for name in ("EXPORT_LAG_SLA_MINUTES", "EXPORT_MICROBATCH_MINUTES", "EXPORT_RECONCILE_CRON"):
        monkeypatch.delenv(name, raising=False)
    assert Settings.from_env().lag_sla_seconds == 300
    microbatch, reconcile = build_schedules()
    assert (microbatch.cron_schedule, reconcile.cron_schedule) == ("*/5 * * * *", "0 4 * * *")

    monkeypatch.setenv("EXPORT_LAG_SLA_MINUTES", "45")
    monkeypatch.setenv("EXPORT_MICROBATCH_MINUTES", "15")
    assert Settings.from_env().lag_sla_seconds == 45 * 60
    assert build_schedules()[0].cron_schedule == "*/15 * * * *"


def test_importing_the_schedules_module_reads_no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad schedule setting must not break an import (the CLI imports run tags from it); it is
    read, and refused, when the definitions are built."""
    monkeypatch.setenv("EXPORT_RECONCILE_CRON", "61 3 * * *")
    code = (
        "import export_pipeline.defs.operations as o; print(o.RECONCILE_START_TAG)\n"
        "try:\n    o.defs\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert first == "export_pipeline/reconcile_start"
    assert second.startswith("ConfigError EXPORT_RECONCILE_CRON=")


def test_env_example_lists_every_setting_with_the_codes_defaults() -> None:
    """`.env.example` is what a newcomer copies: it said 1GB where the code used 600MB."""
    text = (REPO / ".env.example").read_text()
    uncommented = REPO / ".env.example"
    values = read_env_file(uncommented)  # the commented lines are not read ...
    assert not {k for k in values if k.startswith("EXPORT_")}, "settings must stay commented"
    lines = [re.sub(r"^# ?", "", line) for line in text.splitlines()]
    example = {}
    for line in lines:
        match = re.match(r"^([A-Z_]+)=(.*)$", line)
        if match:
            example[match.group(1)] = match.group(2).strip().strip('"')
    # Examples of a real URL and of a relation mapping, not defaults (unset means the default).
    examples = {"EXPORT_SOURCE_DSN", "EXPORT_SOURCE_SCHEMA", "EXPORT_LAKE_URI"}
    defaults = {
        k: v
        for k, v in example.items()
        if k not in examples and not k.startswith("EXPORT_SOURCE_RELATION_")
    }
    assert Settings.from_env(defaults) == Settings.from_env({})
    in_code = set(
        re.findall(r'"(EXPORT_[A-Z_]+)"', (REPO / "export_pipeline/config.py").read_text())
    ) - {"EXPORT_SOURCE_RELATION_"}  # a prefix: EXPORT_SOURCE_RELATION_<DATASET>, in the README
    readme = (REPO / "README.md").read_text()
    assert in_code - {"EXPORT_ENV_FILE"} <= set(example) | {"EXPORT_SOURCE_DSN"}
    assert {name for name in in_code if f"`{name}`" not in readme} == set()


def test_env_file_is_ignored_by_git() -> None:
    """A `.env` holds a source password: it must never be committed by accident."""
    done = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
    assert done.returncode == 0


# --- paths that do not depend on the current directory -----------------------------------------


def test_data_dir_and_dagster_home_are_the_projects_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From another directory `query` returned 0 rows and `status` a breach: paths default to,
    and relative values are taken under, the project root, never the current directory."""
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({}).data_dir == PROJECT_ROOT / "data"
    assert Settings.from_env({"EXPORT_DATA_DIR": "out/x"}).data_dir == PROJECT_ROOT / "out" / "x"
    assert Settings.from_env({"EXPORT_DATA_DIR": str(tmp_path)}).data_dir == tmp_path
    assert dagster_home({}) == PROJECT_ROOT / "dagster_home"
    assert dagster_home({"DAGSTER_HOME": "state/dh"}) == PROJECT_ROOT / "state" / "dh"


def test_embedded_postgres_is_one_per_checkout_under_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One checkout's demo re-seeded another's source: each checkout gets its own data dir."""
    here = source.default_data_dir()
    assert here == source.default_data_dir()
    monkeypatch.setattr(source, "PROJECT_ROOT", tmp_path / "other-checkout")
    other = source.default_data_dir()
    assert other != here and other.parent == here.parent
    assert not here.is_relative_to(PROJECT_ROOT) and not here.is_relative_to(Path.home())


@pytest.fixture
def project_relative_env(source_dsn: str) -> dict:
    """A seeded source, and a relative EXPORT_DATA_DIR / DAGSTER_HOME (under the project)."""
    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.0005, days=2, violations=True)
    name = f"test-ux-{uuid.uuid4().hex[:8]}"
    env = {
        "EXPORT_SOURCE_DSN": source_dsn,
        "EXPORT_DATA_DIR": f"data/{name}",
        "DAGSTER_HOME": f"data/{name}-dagster",
        "EXPORT_SAFETY_LAG_SECONDS": "0",
    }
    yield env
    shutil.rmtree(PROJECT_ROOT / "data" / name, ignore_errors=True)
    shutil.rmtree(PROJECT_ROOT / "data" / f"{name}-dagster", ignore_errors=True)


def test_query_dead_letters_and_status_answer_the_same_from_any_directory(
    project_relative_env: dict, tmp_path: Path
) -> None:
    """Operators run commands from wherever their shell is; the answer must not change."""
    env = project_relative_env
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = cli("run", env=env, cwd=elsewhere)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (PROJECT_ROOT / env["EXPORT_DATA_DIR"] / "warehouse.duckdb").exists()
    assert not (elsewhere / "data").exists()

    def answers(cwd: Path) -> tuple:
        query = cli("query", "SELECT count(*) AS n FROM dx_operation_runs_v1", env=env, cwd=cwd)
        letters = cli("dead-letter", "list", "--json", env=env, cwd=cwd)
        status = cli("status", "--json", env=env, cwd=cwd)
        assert query.returncode == letters.returncode == 0, query.stderr + letters.stderr
        rows = {
            r["dataset"]: (r["rows"], r["watermark"], r["open_dead_letters"])
            for r in json.loads(status.stdout)
        }
        return query.stdout, json.loads(letters.stdout), rows

    from_elsewhere, from_root = answers(elsewhere), answers(PROJECT_ROOT)
    assert from_elsewhere == from_root
    assert "(1 row)" in from_root[0] and " 0\n" not in from_root[0]
    assert from_root[1] and all(n > 0 for n, _, _ in from_root[2].values())
    assert not (elsewhere / "data").exists()


# --- bad input: one line, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["status"], {"EXPORT_RECONCILE_CRON": "61 3 * * *"}, "EXPORT_RECONCILE_CRON"),
        (["status"], {"EXPORT_RECONCILE_CRON": "every day"}, "EXPORT_RECONCILE_CRON"),
        (["source", "seed", "--scale", "-1"], {}, "--scale"),
        (["source", "seed", "--days", "0"], {}, "--days"),
    ],
)
def test_a_bad_setting_or_argument_is_one_line_and_exit_2(
    args: list[str], env: dict, names: str, tmp_path: Path
) -> None:
    """A raw traceback for a typo tells a newcomer nothing; one line naming the culprit does."""
    done = cli(*args, env={"EXPORT_DATA_DIR": str(tmp_path), **env}, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0], done.stderr
    assert done.stdout == ""


def test_version_prints_the_package_version() -> None:
    """Bug reports need the version that ran."""
    from importlib.metadata import version

    done = cli("--version", env={}, cwd=REPO)
    assert done.returncode == 0
    assert done.stdout.strip() == f"export-pipeline {version('export-pipeline')}"


# --- reset ---------------------------------------------------------------------------------


def test_reset_asks_for_yes_then_removes_warehouse_lake_and_history_but_not_a_dsn_source(
    source_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting over must be one command that forgets everything the pipeline built, and never
    touch a configured source: that database is someone else's."""
    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.0005, days=2, end=datetime.now(UTC) - timedelta(minutes=5))
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "EXPORT_SOURCE_DSN": source_dsn,
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(home),
    }
    assert cli("run", env=env, cwd=tmp_path).returncode == 0
    data = tmp_path / "data"
    assert (data / "warehouse.duckdb").exists() and (data / "lake").exists()

    asked = cli("reset", env=env, cwd=tmp_path)
    assert asked.returncode == 2
    assert "--yes" in asked.stderr and "1 run(s)" in asked.stdout
    assert "never touched" in asked.stdout
    assert (data / "warehouse.duckdb").exists()

    done = cli("reset", "--yes", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in data.iterdir() if p.name != "logs"] == []
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_records() == []
        assert instance.get_asset_keys() == []
    assert (home / "dagster.yaml").exists()
    with psycopg.connect(source_dsn) as src:
        ((runs,),) = src.execute("SELECT count(*) FROM ops.operation_runs").fetchall()
    assert runs > 0


def test_reset_drops_the_embedded_sources_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """After a reset the next `make demo` starts from an empty embedded source, not a stale one
    under a kept warehouse (every entity dead-lettered by the next backfill)."""
    from export_pipeline.cli import main

    pgdata = tmp_path / "pgdata"
    monkeypatch.setattr(source, "default_data_dir", lambda: pgdata)
    dsn = source.embedded_postgres(pgdata)
    create_source_schema(dsn)
    monkeypatch.delenv("EXPORT_SOURCE_DSN", raising=False)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("EXPORT_ENV_FILE", str(tmp_path / "no.env"))
    assert main(["reset", "--yes"]) == 0
    assert "schemas ops, entities" in capsys.readouterr().out
    with psycopg.connect(dsn) as con:
        schemas = {s for (s,) in con.execute("SELECT nspname FROM pg_namespace").fetchall()}
    assert not {"ops", "entities"} & schemas


def test_reset_refuses_a_data_dir_that_is_not_the_pipelines(tmp_path: Path) -> None:
    """EXPORT_DATA_DIR pointed at the wrong directory must not wipe someone's files."""
    (tmp_path / "thesis.tex").write_text("years of work")
    done = cli(
        "reset",
        "--yes",
        env={"EXPORT_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dh")},
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "not the pipeline's" in done.stderr
    assert (tmp_path / "thesis.tex").exists()
