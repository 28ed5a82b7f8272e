"""Runs the CLI starts, as the Dagster UI sees them: the same code location and job as the runs
the webserver or the schedule launch, so the Overview timeline, the job's page and the Runs list
show them (issue 14: "CLI runs are missing from the Overview timeline").

The GraphQL queries below are the UI's own (dagster-webserver 1.13.27, ui-core
``runs/useRunsForTimeline.tsx``, ``runs/useRunsFeedEntries.tsx``), trimmed to the fields that
decide where a run is shown.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from export_pipeline.source import create_source_schema, seed_source
from tests.test_ui import _graphql, webserver_on

REPO = Path(__file__).resolve().parent.parent
LOCATION = "export_pipeline.definitions"
REPOSITORY = "__repository__"
JOB = "export_microbatch_job"

RUN_QUERY = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId status pipelineName pipelineSnapshotId
      repositoryOrigin { id repositoryName repositoryLocationName
                         repositoryLocationMetadata { key value } }
      tags { key value }
    }
  }
}
"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
# The Overview timeline: finished runs by update time, then placed under the row of
# (repositoryOrigin.repositoryLocationName, repositoryOrigin.repositoryName, pipelineName); a run
# without a repositoryOrigin is dropped (useRunsForTimeline.tsx: `if (!run.repositoryOrigin)`).
COMPLETED_RUN_TIMELINE_QUERY = """
query CompletedRunTimelineQuery($completedFilter: RunsFilter!, $limit: Int!, $cursor: String) {
  completed: runsOrError(filter: $completedFilter, limit: $limit, cursor: $cursor) {
    ... on Runs {
      results {
        id pipelineName externalJobSource
        tags { key value }
        repositoryOrigin { id repositoryName repositoryLocationName }
        status creationTime startTime endTime updateTime
      }
    }
  }
}
"""
# The timeline's rows of the workspace: every job of every code location (FutureTicksQuery).
WORKSPACE_JOBS_QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        locationOrLoadError {
          ... on RepositoryLocation { name repositories { name pipelines { name isJob } } }
        }
      }
    }
  }
}
"""
# The job's page (PipelineRunsFeedRoot.tsx) and the Runs list (RunsFeedRoot.tsx).
RUNS_FEED_QUERY = """
query RunsFeedRootQuery($limit: Int!, $cursor: String, $filter: RunsFilter, $view: RunsFeedView!) {
  runsFeedOrError(limit: $limit, cursor: $cursor, filter: $filter, view: $view) {
    ... on RunsFeedConnection {
      results {
        id jobName
        ... on Run { repositoryOrigin { id repositoryName repositoryLocationName } }
      }
    }
  }
}
"""


@dataclass
class Ui:
    port: int
    cli_run_id: str
    ui_run_id: str
    started: float

    def query(self, query: str, variables: dict | None = None) -> dict:
        return _graphql(self.port, query, variables)

    def run(self, run_id: str) -> dict[str, Any]:
        found = self.query(RUN_QUERY, {"runId": run_id})["runOrError"]
        assert found["__typename"] == "Run", found
        return found


@pytest.fixture(scope="module")
def ui(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """One `export-pipeline run` (the CLI's launch, in this process) over a tiny source, then
    `dagster-webserver` on workspace.yaml over the same DAGSTER_HOME, and one run launched
    through the webserver's GraphQL `launchRun` (it stays queued: no daemon runs here)."""
    import psycopg
    from psycopg import sql

    from export_pipeline.launcher import run_microbatch

    tmp = tmp_path_factory.mktemp("ui_runs")
    database = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    source_dsn = pg_server.get_uri(database=database)
    create_source_schema(source_dsn)
    seed_source(source_dsn, scale=0.001, days=2)
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "EXPORT_SOURCE_DSN": source_dsn,
        "EXPORT_DATA_DIR": str(tmp / "data"),
    }
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        started = time.time()
        ok, cli_run_id, _ledger = run_microbatch()
        assert ok

        try:
            with webserver_on(env) as port:
                selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
                params = {"selector": {**selector, "jobName": JOB}, "runConfigData": {}}
                launched = _graphql(port, LAUNCH_RUN, {"params": params})["launchRun"]
                assert launched["__typename"] == "LaunchRunSuccess", launched
                yield Ui(port, cli_run_id, launched["run"]["runId"], started)
        finally:
            with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )


def test_a_cli_run_has_the_code_location_origin_of_a_run_the_webserver_launches(ui: Ui):
    """The UI places a run by its code-location origin: a CLI run without one, or with another,
    is missing from the timeline and cannot be re-executed from the UI."""
    cli, launched = ui.run(ui.cli_run_id), ui.run(ui.ui_run_id)
    assert cli["status"] == "SUCCESS"
    assert cli["repositoryOrigin"] is not None
    assert cli["repositoryOrigin"] == launched["repositoryOrigin"]
    assert cli["repositoryOrigin"]["repositoryLocationName"] == LOCATION
    assert cli["repositoryOrigin"]["repositoryName"] == REPOSITORY
    assert cli["pipelineName"] == launched["pipelineName"] == JOB
    # The job as the code location defines it (not an in-process copy of it), so the UI shows
    # the run against the job's current snapshot.
    assert cli["pipelineSnapshotId"] == launched["pipelineSnapshotId"]
    # Every tag the webserver gives the job's runs (its own tags, the code location's name).
    cli_tags, launched_tags = (
        {t["key"]: t["value"] for t in run["tags"]} for run in (cli, launched)
    )
    assert launched_tags and launched_tags.items() <= cli_tags.items()


def test_the_overview_timeline_query_returns_the_cli_run_under_its_code_location_and_job(
    ui: Ui,
):
    """The Overview timeline lists finished runs under (code location, job); the CLI's runs were
    absent from it while the schedule's showed."""
    variables = {
        "completedFilter": {
            "statuses": ["FAILURE", "SUCCESS", "CANCELED"],
            "updatedAfter": ui.started - 60,
            "updatedBefore": time.time() + 60,
        },
        "limit": 500,
    }
    results = ui.query(COMPLETED_RUN_TIMELINE_QUERY, variables)["completed"]["results"]
    (run,) = [r for r in results if r["id"] == ui.cli_run_id]
    origin = run["repositoryOrigin"]
    assert origin is not None, "the timeline drops a run without a repositoryOrigin"
    row = (origin["repositoryLocationName"], origin["repositoryName"], run["pipelineName"])
    assert row == (LOCATION, REPOSITORY, JOB)
    assert run["startTime"] and run["endTime"] and run["startTime"] <= run["endTime"]
    # The row is the workspace's own job (where the schedule's future ticks are drawn), not an
    # orphan row of a location the workspace does not have.
    entries = ui.query(WORKSPACE_JOBS_QUERY)["workspaceOrError"]["locationEntries"]
    jobs = {
        (entry["locationOrLoadError"]["name"], repo["name"], job["name"])
        for entry in entries
        for repo in entry["locationOrLoadError"]["repositories"]
        for job in repo["pipelines"]
    }
    assert row in jobs


def test_the_job_page_and_the_runs_list_filtered_by_job_or_location_list_the_cli_run(ui: Ui):
    """An operator looks for a job's runs on its page or by filtering the Runs list (by job, or
    by the code location's tag): a CLI run must be there, linked to its code location."""
    label = {"key": ".dagster/repository", "value": f"{REPOSITORY}@{LOCATION}"}
    job_page = {"pipelineName": JOB, "tags": [label]}
    runs_list = {"pipelineName": JOB}
    by_location = {"tags": [{"key": "dagster/code_location", "value": LOCATION}]}
    for filter_ in (job_page, runs_list, by_location):
        variables = {"limit": 30, "filter": filter_, "view": "RUNS"}
        results = ui.query(RUNS_FEED_QUERY, variables)["runsFeedOrError"]["results"]
        (run,) = [r for r in results if r["id"] == ui.cli_run_id]
        assert run["jobName"] == JOB
        origin = run["repositoryOrigin"]
        assert origin["repositoryLocationName"] == LOCATION
        assert origin["repositoryName"] == REPOSITORY


REEXECUTE = """
mutation($params: ReexecutionParams!) {
  launchRunReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId parentRunId rootRunId pipelineName
                                    repositoryOrigin { repositoryLocationName } } }
    ... on PythonError { message }
  }
}
"""


def test_the_ui_can_re_execute_a_cli_run_in_its_code_location(ui: Ui):
    """The run page's Re-execute finds the job through the run's code-location origin: on a CLI
    run without one the webserver answered 500 (`check.not_none(parent_run.remote_job_origin)`)."""
    params = {"parentRunId": ui.cli_run_id, "strategy": "ALL_STEPS"}
    launched = ui.query(REEXECUTE, {"params": params})["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = launched["run"]
    assert run["parentRunId"] == run["rootRunId"] == ui.cli_run_id
    assert run["pipelineName"] == JOB
    assert run["repositoryOrigin"]["repositoryLocationName"] == LOCATION
