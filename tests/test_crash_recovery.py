"""Crash recovery: SIGKILL at every stage, then a normal run, equals one uninterrupted run.

Every scenario runs the real CLI (a Dagster run in the process, DuckDB file, Delta lake) against a
copy of a seeded PostgreSQL database. ``EXPORT_CRASH_AT`` (``export_pipeline.faults``) kills the
process at a named point; the random-kill test kills a real run at a random moment instead.
After each kill we compare content checksums per table (warehouse, dead letters, lake), not
just counts, with what an uninterrupted run produced from the same source.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from scenarios import (
    Scenario,
    State,
    assert_equal_to_uninterrupted,
    assert_old_or_new,
    change_source,
    create_db,
    drop_db,
    late_rows,
)

from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    PERSON_ENTITIES,
)
from export_pipeline.faults import CRASH_POINTS
from export_pipeline.source import seed_source
from export_pipeline.warehouse import open_warehouse, run_sql

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parents[1]
#: Seeded history ends this long before the module starts; the incremental change lies after it.
SEED_END_AGO = timedelta(hours=2)
SEED_DAYS = 3
#: Kills at random moments of a real run: EXPORT_CRASH_SEEDS=5 tries more.
RANDOM_KILL_SEEDS = [int(s) for s in os.environ.get("EXPORT_CRASH_SEEDS", "1,2,3").split(",")]


@dataclass(frozen=True)
class Templates:
    seeded: str  # the seeded history (with planted contract violations)
    changed: str  # seeded + an incremental change
    late: str  # seeded + late rows beyond the lookback (for reconciliation repair)
    late_day: datetime


@pytest.fixture(scope="module")
def templates(pg_server: Any) -> Iterator[Templates]:
    tag = uuid.uuid4().hex[:8]
    names = Templates(f"crash_seeded_{tag}", f"crash_changed_{tag}", f"crash_late_{tag}", None)
    end = datetime.now(UTC).replace(microsecond=0) - SEED_END_AGO
    seed_source(
        create_db(pg_server, names.seeded),
        scale=0.002,
        days=SEED_DAYS,
        violations=True,
        end=end,
    )
    change_source(create_db(pg_server, names.changed, names.seeded))
    late_day = (end - timedelta(days=2)).replace(hour=0, minute=0, second=0)
    late_rows(create_db(pg_server, names.late, names.seeded), late_day)
    try:
        yield Templates(names.seeded, names.changed, names.late, late_day)
    finally:
        for name in (names.seeded, names.changed, names.late):
            drop_db(pg_server, name)


@pytest.fixture
def scenarios(pg_server: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[Scenario] = []

    def make(template: str) -> Scenario:
        scenario = Scenario(pg_server, template, tmp_path / f"s{len(made)}")
        made.append(scenario)
        return scenario

    yield make
    for scenario in made:
        drop_db(pg_server, scenario.db)


# --- the uninterrupted runs every crash is compared with ----------------------------------------


@dataclass
class Reference:
    initial: Scenario  # one run over the seeded source
    initial_state: State
    incremental_state: State  # the same, then one run after the incremental change


@pytest.fixture(scope="module")
def reference(
    pg_server: Any, templates: Templates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    root = tmp_path_factory.mktemp("reference")
    initial = Scenario(pg_server, templates.seeded, root / "initial")
    incremental = Scenario(pg_server, templates.changed, root / "incremental")
    try:
        initial.ok("run")
        incremental.adopt(initial)
        incremental.ok("run")
        yield Reference(initial, initial.state(), incremental.state())
    finally:
        drop_db(pg_server, initial.db)
        drop_db(pg_server, incremental.db)


def test_reference_runs_load_every_dataset_with_dead_letters_and_a_lake(
    reference: Reference,
) -> None:
    """The comparisons below are only meaningful if the reference run exercised everything."""
    for name, state in reference.incremental_state.datasets.items():
        assert state.rows > 0 and state.lake_rows == state.rows, name
        assert state.dead_letters, f"{name}: the seed plants violations in every dataset"
    changed = [
        name
        for name, state in reference.incremental_state.datasets.items()
        if state.content != reference.initial_state.datasets[name].content
    ]
    assert {
        d.name for d in (OPERATION_RUNS, OPERATION_EVENTS, COMPANY_ENTITIES, PERSON_ENTITIES)
    } <= set(changed)


# --- kills at named points ----------------------------------------------------------------------

BATCH_POINTS = ["extract", "validated", "load", "committed"]
#: A dataset to kill in that is not the first: others have committed, or are still to come.
SECOND = DATASETS[1].name
#: Kills inside the Delta commit (rows streaming into new files) and right after it (before the
#: warehouse forgets the change): an append dataset, and an entity merge.
LAKE_POINTS = [
    *(p for p in CRASH_POINTS if p.startswith("lake.")),
    f"lake.writing:{COMPANY_ENTITIES.name}",
    f"lake.committed:{PERSON_ENTITIES.name}",
]


@pytest.mark.parametrize(
    "crash_at", [*BATCH_POINTS, f"load:{SECOND}", f"committed:{SECOND}", *LAKE_POINTS]
)
def test_kill_during_an_incremental_run_then_a_normal_run_equals_an_uninterrupted_run(
    crash_at: str,
    reference: Reference,
    templates: Templates,
    scenarios: Any,
    figures: dict,
) -> None:
    """A SIGKILL at any stage loses nothing and doubles nothing once the next run completes."""
    scenario = scenarios(templates.changed)
    scenario.adopt(reference.initial)
    scenario.crashed("run", crash_at=crash_at)
    assert_old_or_new(
        scenario.state(), reference.initial_state, reference.incremental_state, crash_at
    )
    rerun = scenario.ok("run")
    assert "marked run" in rerun.stdout and "failed" in rerun.stdout, rerun.stdout
    assert_equal_to_uninterrupted(scenario.state(), reference.incremental_state, crash_at)
    figures.setdefault("crash points killed at (SIGKILL), then recovered", set()).add(crash_at)


@pytest.mark.parametrize("crash_at", ["extract", "load", f"load:{SECOND}"])
def test_kill_during_the_initial_load_then_a_normal_run_equals_an_uninterrupted_run(
    crash_at: str, reference: Reference, templates: Templates, scenarios: Any, figures: dict
) -> None:
    """The first load of an empty warehouse is as safe to kill as an incremental one."""
    scenario = scenarios(templates.seeded)
    scenario.crashed("run", crash_at=crash_at)
    scenario.ok("run")
    assert_equal_to_uninterrupted(scenario.state(), reference.initial_state, f"initial {crash_at}")
    figures.setdefault("crash points killed at (SIGKILL), then recovered", set()).add(
        f"initial {crash_at}"
    )


def test_kill_inside_a_backfill_then_the_same_backfill_equals_an_uninterrupted_one(
    templates: Templates, scenarios: Any, figures: dict
) -> None:
    """A backfill killed after its first day finishes the range when run again, nothing doubled."""
    end = datetime.now(UTC) - SEED_END_AGO
    days = [
        "--start",
        (end - timedelta(days=2)).date().isoformat(),
        "--end",
        end.date().isoformat(),
    ]
    clean = scenarios(templates.seeded)
    clean.ok("backfill", *days)
    killed = scenarios(templates.seeded)
    killed.crashed("backfill", *days, crash_at="backfill.day@2")
    killed.ok("backfill", *days)
    want, got = clean.state(), killed.state()
    for name, expected in want.datasets.items():
        actual = got.datasets[name]
        assert actual.rows == actual.distinct_keys, name
        assert (actual.rows, actual.content, actual.dead_letters) == (
            expected.rows,
            expected.content,
            expected.dead_letters,
        ), name
        assert actual.watermark is None, f"{name}: a backfill never moves the watermark"
    figures.setdefault("crash points killed at (SIGKILL), then recovered", set()).add(
        "backfill.day"
    )


def test_kill_inside_a_reconciliation_repair_then_reconciling_again_repairs_everything(
    reference: Reference, templates: Templates, scenarios: Any, figures: dict
) -> None:
    """Repair re-extracts bucket by bucket; a kill between buckets is finished by the next one."""
    day = templates.late_day.date().isoformat()
    clean = scenarios(templates.late)
    clean.adopt(reference.initial)
    clean.ok("reconcile", "--date", day)
    killed = scenarios(templates.late)
    killed.adopt(reference.initial)
    killed.crashed("reconcile", "--date", day, crash_at=f"repair.bucket:{OPERATION_EVENTS.name}")
    killed.ok("reconcile", "--date", day)
    want, got = clean.state(), killed.state()
    events = want.datasets[OPERATION_EVENTS.name]
    assert events.rows > reference.initial_state.datasets[OPERATION_EVENTS.name].rows, (
        "the late rows were repaired into the clean run's warehouse"
    )
    for name, expected in want.datasets.items():
        actual = got.datasets[name]
        assert actual.rows == actual.distinct_keys, name
        assert (actual.rows, actual.content, actual.dead_letters) == (
            expected.rows,
            expected.content,
            expected.dead_letters,
        ), name
    figures.setdefault("crash points killed at (SIGKILL), then recovered", set()).add(
        "repair.bucket"
    )


# --- kills at random moments --------------------------------------------------------------------


@pytest.mark.parametrize("seed", RANDOM_KILL_SEEDS)
def test_kill_at_a_random_moment_then_a_normal_run_equals_an_uninterrupted_run(
    seed: int, reference: Reference, templates: Templates, scenarios: Any, figures: dict
) -> None:
    """Named points cannot cover every instruction: real runs are killed at random instants."""
    rng = random.Random(seed)
    scenario = scenarios(templates.changed)
    scenario.adopt(reference.initial)
    process = subprocess.Popen(
        [sys.executable, "-m", "export_pipeline.cli", "run"],
        env=scenario.env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # A run takes several seconds here (interpreter and Dagster start-up, then five datasets).
    delay = rng.uniform(2.0, 9.0)
    time.sleep(delay)
    finished_first = process.poll() is not None
    if not finished_first:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert_old_or_new(
        scenario.state(),
        reference.initial_state,
        reference.incremental_state,
        f"seed {seed} ({delay:.2f}s)",
    )
    scenario.ok("run")
    assert_equal_to_uninterrupted(
        scenario.state(), reference.incremental_state, f"seed {seed} ({delay:.2f}s)"
    )
    kills = figures.setdefault("random kills (seed: seconds into the run)", [])
    kills.append(f"{seed}: {delay:.2f}s{' (run had finished)' if finished_first else ''}")


# --- Dagster: a killed run does not block the pipeline ------------------------------------------


def test_run_killed_mid_way_is_marked_failed_and_the_schedule_starts_the_next_one(
    reference: Reference, templates: Templates, scenarios: Any
) -> None:
    """Dagster never hears from a SIGKILLed worker; left STARTED it would block every later tick."""
    from export_pipeline.defs.liveness import WORKER_TAG
    from export_pipeline.defs.operations import export_microbatch_schedule

    scenario = scenarios(templates.changed)
    scenario.adopt(reference.initial)
    scenario.crashed("run", crash_at="load")
    home = scenario.root / "dagster_home"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.STARTED
        assert WORKER_TAG in record.dagster_run.tags
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime.now(UTC)
        )
        request = export_microbatch_schedule(context)
        assert isinstance(request, dg.RunRequest), request
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE


# --- two runs at once -----------------------------------------------------------------------------


def test_two_runs_started_at_once_write_one_at_a_time_and_equal_sequential_runs(
    reference: Reference, templates: Templates, scenarios: Any
) -> None:
    """A manual run during a scheduled one: one writer at a time, the result of running in turn."""
    scenario = scenarios(templates.changed)
    scenario.adopt(reference.initial)
    command = [sys.executable, "-m", "export_pipeline.cli", "run"]
    env = {**scenario.env(), "EXPORT_LOCK_TIMEOUT_SECONDS": "120"}
    since = datetime.now(UTC)
    both = [
        subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert_equal_to_uninterrupted(scenario.state(), reference.incremental_state, "two at once")
    # The ledger shows the two runs' batches never overlapped in time on one dataset.
    settings = scenario.settings()
    with open_warehouse(settings.warehouse_path, read_only=True) as con:
        rows = run_sql(
            con,
            "SELECT dataset, run_id, min(started_at), max(finished_at) FROM _export_batches "
            "WHERE status = 'succeeded' AND started_at >= $since GROUP BY ALL ORDER BY 1, 3",
            {"since": since},
        )
    by_dataset: dict[str, list] = {}
    for dataset, run_id, started, finished in rows:
        by_dataset.setdefault(dataset, []).append((run_id, started, finished))
    for dataset, runs in by_dataset.items():
        assert len({r for r, _, _ in runs}) == 2, f"{dataset}: both runs exported it"
        (_, _, first_end), (_, second_start, _) = runs
        assert first_end <= second_start, f"{dataset}: two runs wrote at the same time"
