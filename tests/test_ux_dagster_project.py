"""Dagster's project conventions (`dg`) and the instance settings every DAGSTER_HOME gets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from export_pipeline.config import INSTANCE_SETTINGS_FILE, Settings
from export_pipeline.contract import DATASETS
from export_pipeline.source import create_source_schema

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

JOBS = {
    "export_microbatch_job",
    "export_backfill_job",
    "reconcile_job",
    "lake_check_job",
    "lake_maintenance_job",
}
SCHEDULES = {
    "export_microbatch_schedule",
    "reconcile_schedule",
    "lake_check_schedule",
    "lake_maintenance_schedule",
}


def _clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without this project's settings or DAGSTER_HOME, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EXPORT_") and k not in ("DAGSTER_HOME", "VIRTUAL_ENV")
    }
    # An empty settings file: a developer's own `.env` must not change what is listed.
    return {**env, "EXPORT_ENV_FILE": os.devnull, **extra}


def dg_cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    """Dagster's `dg` on the project as `make defs` runs it: from DAGSTER_HOME (Dagster loads a
    `.env` of its working directory over the environment; the project's settings do not)."""
    return subprocess.run(
        [str(BIN / "dg"), *args, "--target-path", str(REPO)],
        env=_clean_env(DAGSTER_HOME=str(home), **env),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
    )


def export_pipeline(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "export-pipeline"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _instance_settings(home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[bool, bool, int]:
    """(telemetry, nux, max concurrent runs) as ``DagsterInstance.get()`` applies them."""
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        return instance.telemetry_enabled, instance.nux_enabled, queue.max_concurrent_runs


# --- the dg project ----------------------------------------------------------------------------


def test_dg_list_defs_shows_every_dataset_job_schedule_and_the_resource(tmp_path: Path) -> None:
    """`dg list defs` is how a maintainer sees what the code location holds: it must load the
    `defs/` folder with no registration by hand, schedules built from the settings read then."""
    done = dg_cli("list", "defs", "--json", home=tmp_path, EXPORT_MICROBATCH_MINUTES="5")
    assert done.returncode == 0, done.stderr[-3000:]
    listed = json.loads(done.stdout)

    assets = {a["asset_key"] for a in listed["assets"]}
    for ds in DATASETS:
        assert {ds.name, f"lake/{ds.name}", f"reconciliation/{ds.name}"} <= assets, ds.name
    assert len(DATASETS) == 5
    assert {j["name"] for j in listed["jobs"]} >= JOBS
    schedules = {s["name"]: s["cron_schedule"] for s in listed["schedules"]}
    assert set(schedules) == SCHEDULES
    assert schedules["export_microbatch_schedule"] == "*/5 * * * *"
    assert [r["name"] for r in listed["resources"]] == ["export"]

    # Exactly what the code location of `make ui` and the CLI (definitions.py) holds.
    from export_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    assert assets == {key.to_user_string() for key in graph.get_all_asset_keys()}
    checks = {(c["asset_key"], c["name"]) for c in listed["asset_checks"]}
    assert checks == {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}


def test_dg_check_defs_loads_the_code_location(tmp_path: Path) -> None:
    """`dg check defs` is the project's one-command check that the definitions load."""
    done = dg_cli("check", "defs", home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_every_definitions_module_is_found_by_dagsters_loader_not_listed_by_hand() -> None:
    """A module added to `defs/` must reach the UI without an edit elsewhere: definitions.py
    names no module, and each module's definitions (lazy ones included) are in the location."""
    import importlib
    import pkgutil

    from export_pipeline import defs as package
    from export_pipeline.definitions import defs

    text = (REPO / "export_pipeline" / "definitions.py").read_text()
    assert "load_from_defs_folder" in text
    graph = defs.resolve_asset_graph()
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    for info in pkgutil.iter_modules(package.__path__):
        assert f"defs.{info.name}" not in text
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if "defs" not in dir(module):
            continue
        own = module.defs
        assert isinstance(own, dg.Definitions), info.name
        own_keys = {key for asset in own.assets or [] for key in getattr(asset, "keys", ())}
        assert own_keys <= set(graph.get_all_asset_keys()), info.name
        assert {j.name for j in own.jobs or []} <= jobs, info.name
        for schedule in own.schedules or []:
            assert defs.resolve_schedule_def(schedule.name).cron_schedule == (
                schedule.cron_schedule
            )


def test_the_export_resource_reads_its_settings_once_when_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run sees one set of settings (from the environment, not frozen at import): an edit
    of `.env` during a run applies to the next run, not to half of this one."""
    from export_pipeline.definitions import defs

    env_file = tmp_path / ".env"
    env_file.write_text("EXPORT_BATCH_SIZE=111\n")
    monkeypatch.setenv("EXPORT_ENV_FILE", str(env_file))
    monkeypatch.delenv("EXPORT_BATCH_SIZE", raising=False)
    resource = defs.resources["export"]
    with dg.build_resources({"export": resource}) as run:
        env_file.write_text("EXPORT_BATCH_SIZE=222\n")
        assert run.export.settings().batch_size == 111
    with dg.build_resources({"export": resource}) as next_run:
        assert next_run.export.settings().batch_size == 222
    assert Settings.from_env().batch_size == 222


# --- the instance settings, for any DAGSTER_HOME -----------------------------------------------


def test_a_fresh_dagster_home_used_by_the_cli_gets_no_telemetry_no_dialog_one_run_at_a_time(
    source_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's own DAGSTER_HOME must behave as the project's: no telemetry sent, no newsletter
    dialog, and never two runs writing the one DuckDB file."""
    create_source_schema(source_dsn)
    home = tmp_path / "my_dagster_home"  # not there yet: the CLI creates it
    env = _clean_env(
        DAGSTER_HOME=str(home),
        EXPORT_SOURCE_DSN=source_dsn,
        EXPORT_DATA_DIR=str(tmp_path / "data"),
    )
    done = export_pipeline("run", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "instance settings" not in done.stderr
    assert _instance_settings(home, monkeypatch) == (False, False, 1)
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_run_records()) == 1  # the run was recorded in that instance


def test_an_existing_dagster_yaml_is_kept_and_the_warning_names_what_it_lacks(
    source_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's own instance file is theirs: never overwritten, but they are told, once, which
    of the project's settings it lacks (runs could otherwise overlap on the DuckDB file)."""
    create_source_schema(source_dsn)
    home = tmp_path / "dagster_home"
    home.mkdir()
    theirs = "telemetry:\n  enabled: true\nrun_monitoring:\n  enabled: true\n"
    (home / "dagster.yaml").write_text(theirs)
    env = _clean_env(
        DAGSTER_HOME=str(home),
        EXPORT_SOURCE_DSN=source_dsn,
        EXPORT_DATA_DIR=str(tmp_path / "data"),
    )
    done = export_pipeline("run", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (home / "dagster.yaml").read_text() == theirs
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stderr
    assert str(home / "dagster.yaml") in warnings[0]
    for lacking in (
        "telemetry.enabled: false (yours: true)",
        "nux.enabled: false",
        "run_queue.max_concurrent_runs: 1",
    ):
        assert lacking in warnings[0]
    assert str(INSTANCE_SETTINGS_FILE) in warnings[0]
    assert _instance_settings(home, monkeypatch) == (True, True, 10)  # theirs, as they wrote it


def test_a_dagster_yaml_with_the_settings_in_dagsters_other_spellings_gets_no_warning(
    tmp_path: Path,
) -> None:
    """A run queue limited through `concurrency.runs` (or a QueuedRunCoordinator) is limited:
    warning about it would teach users to ignore the warning."""
    from export_pipeline.config import ensure_dagster_home

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\nnux: {enabled: false}\n"
        "concurrency:\n  runs:\n    max_concurrent_runs: 1\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", "from export_pipeline.config import ensure_dagster_home as e; e()"],
        env=_clean_env(DAGSTER_HOME=str(home)),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert ensure_dagster_home({"DAGSTER_HOME": str(home)}) == home


def test_a_run_on_an_instance_without_the_settings_says_so_in_its_log(tmp_path: Path) -> None:
    """`dagster dev` started by hand on some DAGSTER_HOME skips the CLI's check: the run's own
    log (in the UI) must say what that instance lacks."""
    from dagster._core.instance.ref import InstanceRef

    from export_pipeline.definitions import defs

    (tmp_path / "dagster.yaml").write_text("")

    @dg.op(required_resource_keys={"export"})
    def uses_the_export_resource() -> None:
        """Nothing: setting the resource up is what is tested."""

    @dg.job(resource_defs={"export": defs.resources["export"]})
    def tiny() -> None:
        uses_the_export_resource()

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        result = tiny.execute_in_process(instance=instance)
        warnings = [
            entry.user_message
            for entry in instance.all_logs(result.run_id)
            if "lacks instance settings of this project" in entry.user_message
        ]
    assert len(warnings) == 1
    assert "telemetry.enabled: false (yours: true)" in warnings[0]
    assert "run_queue.max_concurrent_runs: 1 (yours: 10)" in warnings[0]


def test_dagster_commands_without_dagster_home_in_the_project_get_its_settings() -> None:
    """`dg dev`, `dg check defs` and `dagster dev` run in the project without DAGSTER_HOME use a
    throwaway instance configured from the working directory: it gets the project's settings."""
    code = (
        "from dagster._cli.utils import get_possibly_temporary_instance_for_cli as get\n"
        "with get() as i:\n"
        "    q = i.get_concurrency_config().run_queue_config\n"
        "    print(i.telemetry_enabled, i.nux_enabled, q.max_concurrent_runs)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(), cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "1"]


def test_the_projects_default_dagster_home_uses_the_project_settings_file() -> None:
    """One file holds the instance settings: the default home's copy cannot drift from it."""
    linked = REPO / "dagster_home" / "dagster.yaml"
    assert linked.is_symlink() and linked.resolve() == INSTANCE_SETTINGS_FILE.resolve()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, query: str | None = None) -> str:
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps({"query": query}).encode() if query else None,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def test_make_ui_on_a_fresh_dagster_home_serves_the_location_with_the_projects_settings(
    tmp_path: Path,
) -> None:
    """`make ui` is how a user meets the UI: on their own new DAGSTER_HOME it must load the code
    location, with no newsletter dialog, no telemetry and one run at a time."""
    import signal
    import time

    home = tmp_path / "home"
    port = _free_port()
    env = _clean_env(DAGSTER_HOME=str(home), EXPORT_DATA_DIR=str(tmp_path / "data"))
    process = subprocess.Popen(
        ["make", "-s", "ui", f"UI_ARGS=-p {port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # `dg dev` ignores SIGTERM: its whole group is killed below
    )
    query = (
        "{ shouldShowNux instance { runQueueConfig { maxConcurrentRuns } }"
        " workspaceOrError { ... on Workspace { locationEntries { name"
        " locationOrLoadError { __typename } } } } }"
    )
    try:
        deadline = time.monotonic() + 180
        data = None
        while time.monotonic() < deadline:
            try:
                data = json.loads(_get(port, "/graphql", query))["data"]
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"]:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert data is not None, "make ui did not serve the UI"
        [entry] = data["workspaceOrError"]["locationEntries"]
        assert entry == {
            "name": "export_pipeline.definitions",
            "locationOrLoadError": {"__typename": "RepositoryLocation"},
        }
        assert data["shouldShowNux"] is False
        assert data["instance"]["runQueueConfig"] == {"maxConcurrentRuns": 1}
        telemetry = re.search(r'"telemetryEnabled":\s*(\w+)', _get(port, "/"))
        assert telemetry is not None and telemetry.group(1) == "false"  # what the page sends
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert (home / "dagster.yaml").is_file()
