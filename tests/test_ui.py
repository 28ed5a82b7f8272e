"""`make ui`: the real Dagster webserver and daemon, driven through the UI's GraphQL API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from export_pipeline import dead_letters
from export_pipeline.contract import COMPANY_ENTITIES, DATASETS, OPERATION_RUNS
from export_pipeline.defs.assets import (
    BACKFILL_START_TAG,
    NO_ROWS_DEAD_LETTERED,
    BackfillWindow,
)
from export_pipeline.source import create_source_schema, seed_source

REPO = Path(__file__).resolve().parent.parent
LOCATION = "export_pipeline.definitions"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@contextmanager
def webserver_on(env: dict[str, str]) -> Iterator[int]:
    """`dagster-webserver` over workspace.yaml on a free port, with ``env`` added, once it has
    loaded the code location; killed with its whole process group. Yields the port."""
    port = _free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
        ],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(
            lambda: _graphql(port, "{ assetNodes { id } }")["assetNodes"],
            timeout=180,
            what="the Dagster webserver to load the code location",
        )
        yield port
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def ui(source_dsn: str, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`dagster dev` on a free port over a seeded source; killed with its whole process group."""
    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.001, days=5)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "EXPORT_SOURCE_DSN": source_dsn,
        "EXPORT_DATA_DIR": str(tmp_path / "data"),
    }
    dagster = Path(sys.executable).parent / "dagster"
    process = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # `dagster dev` ignores SIGTERM; kill its group outright
    )
    try:
        _wait(
            lambda: _graphql(port, "{ assetNodes { id } }")["assetNodes"],
            timeout=180,
            what="the Dagster webserver to load the code location",
        )
        yield port, tmp_path / "data"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


ASSETS_QUERY = """
{ assetNodes { assetKey { path } isPartitioned assetChecksOrError {
    ... on AssetChecks { checks { name } } } } }
"""
SCHEDULES_QUERY = """
query($location: String!) {
  schedulesOrError(repositorySelector: {repositoryLocationName: $location,
                                        repositoryName: "__repository__"}) {
    ... on Schedules { results { name cronSchedule executionTimezone } }
  }
}
"""
LAUNCH_RUN_MUTATION = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_QUERY = """
query($id: ID!) {
  runOrError(runId: $id) {
    ... on Run { status tags { key value } }
  }
}
"""


def test_ui_shows_unpartitioned_assets_with_checks_and_backfills_three_days_by_job(ui):
    """What an operator does in the UI (see lineage and checks, backfill three days by launching
    export_backfill_job with its tags, as the Launchpad does) must work against the real
    webserver and daemon, as one run for the range, with no partitions to show as missing."""
    port, data_dir = ui
    nodes = {"/".join(n["assetKey"]["path"]): n for n in _graphql(port, ASSETS_QUERY)["assetNodes"]}
    for ds in DATASETS:
        node = nodes[ds.name]
        assert not node["isPartitioned"]
        assert not nodes[f"lake/{ds.name}"]["isPartitioned"]
        checks = {c["name"] for c in node["assetChecksOrError"]["checks"]}
        assert "batch_fits_contract" in checks
        recon = nodes[f"reconciliation/{ds.name}"]
        recon_checks = {c["name"] for c in recon["assetChecksOrError"]["checks"]}
        assert {"rows_match_source", "content_matches_source"} <= recon_checks
        assert "source/" + ds.source_table.replace(".", "/") in nodes

    schedules = _graphql(port, SCHEDULES_QUERY, {"location": LOCATION})["schedulesOrError"]
    by_name = {s["name"]: s for s in schedules["results"]}
    assert by_name["export_microbatch_schedule"]["cronSchedule"] == "*/10 * * * *"
    assert by_name["reconcile_schedule"]["cronSchedule"] == "0 3 * * *"
    assert {s["executionTimezone"] for s in by_name.values()} == {"UTC"}

    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=3), today - timedelta(days=1)
    window = BackfillWindow(first, last)
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": "export_backfill_job",
            "assetSelection": [{"path": [OPERATION_RUNS.name]}, {"path": [COMPANY_ENTITIES.name]}],
        },
        "runConfigData": {},
        "executionMetadata": {
            "tags": [{"key": k, "value": v} for k, v in window.tags().items()],
        },
    }
    launched = _graphql(port, LAUNCH_RUN_MUTATION, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished() -> dict | None:
        run = _graphql(port, RUN_QUERY, {"id": run_id})["runOrError"]
        return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    run = _wait(finished, timeout=300, what="the backfill run to finish")
    assert run["status"] == "SUCCESS", run
    assert {t["key"]: t["value"] for t in run["tags"]}[BACKFILL_START_TAG] == first.isoformat()

    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        batches = con.execute(
            "SELECT dataset, count(*) FROM _export_batches WHERE mode = 'backfill' "
            "AND status = 'succeeded' AND run_id = ? GROUP BY ALL",
            [run_id],
        ).fetchall()
        ((runs,),) = con.execute(f"SELECT count(*) FROM {OPERATION_RUNS.name}").fetchall()
        ((days_loaded,),) = con.execute(
            "SELECT count(DISTINCT CAST(timezone('UTC', created_at) AS DATE)) "
            f"FROM {OPERATION_RUNS.name} "
            "WHERE CAST(timezone('UTC', created_at) AS DATE) BETWEEN ? AND ?",
            [first, last],
        ).fetchall()
        ((outside,),) = con.execute(
            f"SELECT count(*) FROM {OPERATION_RUNS.name} "
            "WHERE CAST(timezone('UTC', created_at) AS DATE) NOT BETWEEN ? AND ?",
            [first, last],
        ).fetchall()
    finally:
        con.close()
    # One batch per day per dataset, those days' rows and no others.
    assert dict(batches) == {OPERATION_RUNS.name: 3, COMPANY_ENTITIES.name: 3}
    assert runs > 0 and days_loaded == 3 and outside == 0
    # The run selected warehouse assets only; the lake follows all the same.
    from deltalake import DeltaTable

    assert DeltaTable(str(data_dir / "lake" / OPERATION_RUNS.name)).count() == runs


def test_dead_letter_check_stays_failing_while_letters_are_open_and_clears_when_resolved(
    source_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The UI's no_rows_dead_lettered must not turn green on a clean batch while the letters an
    earlier batch wrote are still open: an operator would think nothing needs them."""
    from export_pipeline.definitions import defs

    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.001, days=2, violations=True)
    monkeypatch.setenv("EXPORT_SOURCE_DSN", source_dsn)
    monkeypatch.setenv("EXPORT_DATA_DIR", str(tmp_path / "data"))
    job = defs.resolve_job_def("export_microbatch_job")

    def check_of(instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
        result = job.execute_in_process(instance=instance)
        (evaluation,) = [
            e
            for e in result.get_asset_check_evaluations()
            if e.asset_key == dg.AssetKey(OPERATION_RUNS.name)
            and e.check_name == NO_ROWS_DEAD_LETTERED
        ]
        return evaluation

    with dg.instance_for_test() as instance:
        first = check_of(instance)
        assert not first.passed and first.severity == dg.AssetCheckSeverity.WARN
        unresolved = first.metadata["unresolved"].value
        assert unresolved > 0
        assert sum(v.value for k, v in first.metadata.items() if k.startswith("reason_")) == (
            unresolved
        )

        second = check_of(instance)  # nothing new to dead-letter, the letters still open
        assert second.metadata["dead_lettered_this_run"].value == 0
        assert not second.passed
        assert second.metadata["unresolved"].value == unresolved

        con = duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"))
        try:
            for letter in dead_letters.list_letters(con, OPERATION_RUNS.name, "open", None):
                assert dead_letters.resolve(con, letter["dead_letter_id"], "checked by hand")
        finally:
            con.close()
        third = check_of(instance)
        assert third.passed and third.metadata["unresolved"].value == 0
