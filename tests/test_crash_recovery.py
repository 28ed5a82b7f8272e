"""Crash recovery: SIGKILL at every stage, then a normal run, equals one uninterrupted run.

Every scenario runs the real CLI (a Dagster run in the process, DuckDB file, Parquet lake) against a
copy of a seeded PostgreSQL database. ``EXPORT_CRASH_AT`` (``export_pipeline.faults``) kills the
process at a named point; the random-kill test kills a real run at a random moment instead.
After each kill we compare content checksums per table (warehouse, dead letters, lake), not
just counts, with what an uninterrupted run produced from the same source.
"""

from __future__ import annotations

import os
import random
import shutil
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
import psycopg
import pytest
from psycopg import sql

from export_pipeline import publish
from export_pipeline.config import Settings
from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    PERSON_ENTITIES,
    Dataset,
)
from export_pipeline.extract import quote_ident
from export_pipeline.faults import CRASH_ENV, CRASH_POINTS
from export_pipeline.source import seed_source
from export_pipeline.warehouse import get_watermark, open_warehouse, run_sql

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parents[1]
#: Seeded history ends this long before the module starts; the incremental change lies after it.
SEED_END_AGO = timedelta(hours=2)
SEED_DAYS = 3
#: Kills at random moments of a real run: EXPORT_CRASH_SEEDS=5 tries more.
RANDOM_KILL_SEEDS = [int(s) for s in os.environ.get("EXPORT_CRASH_SEEDS", "1,2,3").split(",")]


# --- the source: seeded templates, cloned per scenario -----------------------------------------


def _admin(pg_server: Any) -> psycopg.Connection:
    return psycopg.connect(pg_server.get_uri(), autocommit=True)


def _create_db(pg_server: Any, name: str, template: str | None = None) -> str:
    with _admin(pg_server) as admin:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        admin.execute(query)
    return pg_server.get_uri(database=name)


def _drop_db(pg_server: Any, name: str) -> None:
    with _admin(pg_server) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _copy_rows(
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


def _change_source(dsn: str) -> None:
    """An incremental change: new runs and events, ~2% of entities get a new version."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _copy_rows(conn, "ops.operation_runs", "run_id", "created_at", 150)
        _copy_rows(conn, "ops.operation_events", "event_id", "occurred_at", 600, "event_sequence")
        for table in ("entities.company_entities", "entities.person_entities"):
            schema, name = table.split(".")
            conn.execute(
                sql.SQL(
                    "UPDATE {t} SET record_version = record_version + 1, "
                    "updated_at = now() - interval '20 minutes' "
                    "WHERE entity_id IN (SELECT entity_id FROM {t} ORDER BY entity_id LIMIT 40)"
                ).format(t=sql.Identifier(schema, name))
            )


def _late_rows(dsn: str, day: datetime) -> None:
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
        _create_db(pg_server, names.seeded),
        scale=0.002,
        days=SEED_DAYS,
        violations=True,
        end=end,
    )
    _change_source(_create_db(pg_server, names.changed, names.seeded))
    late_day = (end - timedelta(days=2)).replace(hour=0, minute=0, second=0)
    _late_rows(_create_db(pg_server, names.late, names.seeded), late_day)
    try:
        yield Templates(names.seeded, names.changed, names.late, late_day)
    finally:
        for name in (names.seeded, names.changed, names.late):
            _drop_db(pg_server, name)


# --- one scenario: its own source clone, data dir and Dagster home -----------------------------


class Scenario:
    """A source database cloned from a template, a data dir and a DAGSTER_HOME."""

    def __init__(self, pg_server: Any, template: str, root: Path) -> None:
        self.db = f"crash_run_{uuid.uuid4().hex}"
        self.dsn = _create_db(pg_server, self.db, template)
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

    def state(self) -> State:
        return State.read(self.data_dir)

    def adopt(self, other: Scenario) -> None:
        """Start from a copy of another scenario's data dir (warehouse and lake)."""
        shutil.copytree(other.data_dir, self.data_dir, symlinks=True)


@pytest.fixture
def scenarios(pg_server: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[Scenario] = []

    def make(template: str) -> Scenario:
        scenario = Scenario(pg_server, template, tmp_path / f"s{len(made)}")
        made.append(scenario)
        return scenario

    yield make
    for scenario in made:
        _drop_db(pg_server, scenario.db)


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


def _dataset_state(con: Any, ds: Dataset, data_dir: Path) -> DatasetState:
    table = quote_ident(ds.name)
    keys = ", ".join(quote_ident(k) for k in ds.primary_key)
    ((rows, distinct, content),) = run_sql(
        con,
        f"SELECT count(*), count(DISTINCT ({keys})), "
        f"coalesce(sum({publish.row_hash_sql(ds)}), 0) FROM {table}",
    )
    letters = run_sql(
        con,
        "SELECT record_key::VARCHAR, reason, status, row_json::VARCHAR FROM dx_dead_letter "
        "WHERE dataset = $dataset ORDER BY ALL",
        {"dataset": ds.name},
    )
    lake = publish.lake_select_sql(ds, publish.current_version_dir(data_dir, ds))
    ((lake_rows, lake_content),) = run_sql(
        con, f"SELECT count(*), coalesce(sum({publish.row_hash_sql(ds)}), 0) FROM ({lake})"
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
        _drop_db(pg_server, initial.db)
        _drop_db(pg_server, incremental.db)


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
PUBLISH_POINTS = [p for p in CRASH_POINTS if p.startswith("publish.")]
#: A dataset to kill in that is not the first: others have committed, or are still to come.
SECOND = DATASETS[1].name


@pytest.mark.parametrize(
    "crash_at", [*BATCH_POINTS, f"load:{SECOND}", f"committed:{SECOND}", *PUBLISH_POINTS]
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
