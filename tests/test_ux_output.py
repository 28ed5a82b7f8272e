"""Output a person can act on: one line per dataset, one verdict, documented exit codes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from cli_process import run_cli as cli

from export_pipeline.cli import main
from export_pipeline.commands import status as status_command
from export_pipeline.contract import DATASETS, OPERATION_EVENTS
from export_pipeline.source import create_source_schema, seed_source
from export_pipeline.terminal import ExitCode

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(source_dsn: str, tmp_path: Path) -> dict:
    create_source_schema(source_dsn)
    seed_source(
        source_dsn,
        scale=0.0005,
        days=2,
        violations=True,
        end=datetime.now(UTC) - timedelta(minutes=5),
    )
    (tmp_path / "dagster_home").mkdir()
    return {
        "EXPORT_SOURCE_DSN": source_dsn,
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "EXPORT_SAFETY_LAG_SECONDS": "0",
        "EXPORT_ENV_FILE": str(tmp_path / "no.env"),
    }


def _table_datasets(stdout: str) -> list[str]:
    names = {ds.name for ds in DATASETS}
    return [
        line.split()[0] for line in stdout.splitlines() if line.split()[:1] in ([n] for n in names)
    ]


def test_a_failing_dataset_gives_a_short_output_naming_it_and_its_error_and_exit_2(
    env: dict, source_dsn: str
) -> None:
    """A failed run printed 160-410 lines of Dagster stack traces; an operator needs the
    dataset and the error, and the stack in the log file."""
    with psycopg.connect(source_dsn, autocommit=True) as src:
        src.execute("ALTER TABLE ops.operation_events RENAME TO operation_events_gone")
    done = cli("run", env=env)
    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == ExitCode.FAILED == 2
    assert len(output) < 15, "\n".join(output)
    assert "Traceback" not in done.stdout + done.stderr
    last = output[-1]
    assert OPERATION_EVENTS.name in last and "does not exist" in last
    assert "see Dagster logs" not in last
    assert last.count(OPERATION_EVENTS.name + ":") == 1
    assert sorted(_table_datasets(done.stdout)) == sorted(ds.name for ds in DATASETS)
    log = (Path(env["EXPORT_DATA_DIR"]) / "logs" / "export_pipeline.log").read_text()
    assert "Stack Trace" in log or "Traceback" in log
    assert "export_pipeline.log" in last

    verbose = cli("run", "--verbose", env=env)
    assert verbose.returncode == 2
    assert len((verbose.stdout + verbose.stderr).splitlines()) > len(output)


def test_run_lists_each_dataset_once_when_it_also_retries_dead_letters(env: dict) -> None:
    """A dataset listed twice (its batch and its dead-letter retry) reads as two outcomes."""
    env = env | {"EXPORT_DEAD_LETTER_RETRY_SECONDS": "0"}
    done = cli("run", env=env)
    assert done.returncode == 0, done.stderr
    listed = _table_datasets(done.stdout)
    assert sorted(listed) == sorted(ds.name for ds in DATASETS)
    header, *rows = [line for line in done.stdout.splitlines() if line.strip()][:6]
    retried = header.split().index("retried")
    assert any(int(row.split()[retried].replace(",", "")) > 0 for row in rows)
    assert done.stdout.strip().splitlines()[-1].startswith("micro-batch succeeded for 5 datasets")


def test_exhausted_dead_letters_make_run_and_status_exit_3(env: dict) -> None:
    """Exhausted letters need an operator (the contract's alerting); exit 0 hid them."""
    env = env | {"EXPORT_DEAD_LETTER_RETRY_SECONDS": "0", "EXPORT_DEAD_LETTER_MAX_ATTEMPTS": "1"}
    done = cli("run", env=env)
    assert done.returncode == ExitCode.ATTENTION == 3, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "exhausted" in last and "dead-letter list --status exhausted" in last
    status = cli("status", env=env)
    assert status.returncode == 3, status.stderr
    assert "dead letters exhausted" in status.stderr.strip().splitlines()[-1]
    as_json = cli("status", "--json", env=env)
    assert as_json.returncode == 3
    assert all(r["exhausted_dead_letters"] > 0 for r in json.loads(as_json.stdout))


def test_an_unexpected_error_is_one_line_with_the_stack_in_the_log_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A bug must still end in one line that says where the stack trace went, and exit 1; the
    source password stays out of both."""

    dsn = "postgresql://exporter:S3cret-Pw@db.internal:5432/dx"

    def boom(settings: object) -> list:
        raise RuntimeError(f"boom: an unexpected bug talking to {dsn}")

    monkeypatch.setenv("EXPORT_SOURCE_DSN", dsn)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EXPORT_ENV_FILE", str(tmp_path / "no.env"))
    (tmp_path / "warehouse.duckdb").touch()
    monkeypatch.setattr(status_command, "dataset_status", boom)
    assert main(["status"]) == ExitCode.INTERNAL_ERROR == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "boom: an unexpected bug" in err[0]
    assert str(tmp_path / "logs" / "export_pipeline.log") in err[0]
    log = (tmp_path / "logs" / "export_pipeline.log").read_text()
    assert "Traceback" in log and "raise RuntimeError" in log
    assert "S3cret-Pw" not in err[0] + log  # secrets never in output or logs


def test_exit_codes_are_one_table_in_the_readme_and_the_help() -> None:
    """Scripts and monitors branch on exit codes: the README and `--help` must say the same."""
    done = cli("--help", env={})
    readme = (REPO / "README.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\s+{int(code)}\s+\S", done.stdout, re.MULTILINE), code
        assert re.search(rf"^\| `{int(code)}` \|", readme, re.MULTILINE), code


def test_seed_and_backfill_show_progress_on_stderr(env: dict) -> None:
    """Steps that take minutes at scale must show they are moving (reconcile ran 6 min silent)."""
    own = urlsplit(env["EXPORT_SOURCE_DSN"]).path.strip("/")  # the test's own database
    seeded = cli(
        "source", "seed", "--scale", "0.0005", "--days", "3", "--i-own-this-database", own, env=env
    )
    assert seeded.returncode == 0, seeded.stderr
    steps = [line for line in seeded.stderr.splitlines() if line.startswith("  ... seeding")]
    assert len(steps) == 5 and "(5/5," in steps[-1]
    assert "ops.operation_runs" in seeded.stdout  # the summary stays on stdout
    today = datetime.now(UTC).date()
    start, end = (today - timedelta(days=2)).isoformat(), today.isoformat()
    backfill = cli(
        "backfill", "--start", start, "--end", end, "--dataset", OPERATION_EVENTS.name, env=env
    )
    assert backfill.returncode == 0, backfill.stderr
    progress = [
        line for line in backfill.stderr.splitlines() if "backfill" in line and "/3 days" in line
    ]
    assert [p.split("backfill ")[1][:8] for p in progress] == ["1/3 days", "2/3 days", "3/3 days"]
    assert (
        backfill.stdout.strip().splitlines()[-1].startswith(f"backfill {start} .. {end} succeeded")
    )
