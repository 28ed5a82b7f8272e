"""Model-based test of the whole pipeline: a hypothesis state machine against a pure-Python model.

The machine writes rows into a real PostgreSQL source (new, late, beyond the lookback, invalid,
entity versions going up, down and sideways, fixes of dead-lettered rows) and runs the pipeline
as an operator would: micro-batches, backfills of day windows, reconciliations with repair,
dead-letter retries, and micro-batches SIGKILLed at a random crash point in a subprocess. After
every run the DuckDB warehouse must equal what the contract says it should hold, computed by a
small model from what the test itself wrote, never from the pipeline's output.

The model tracks, for each source row, whether a run whose window held the row's cursor has
completed since the row was last written ("covered"). A covered row is reflected in the
warehouse; an uncovered one (written beyond the lookback, not yet backfilled or reconciled) is
not, and the warehouse still shows what the last covering run saw. Cursors are generated with a
margin around every window boundary, so that whether a run covers a row is never a matter of
milliseconds.

``HYPOTHESIS_PROFILE=long`` runs many more and longer examples than the default budget.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql
from rows import ORG_ID, SourceRows, new_id

from export_pipeline import batch, lake, reconcile
from export_pipeline.config import Settings
from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    DATASETS_BY_NAME,
    ENTITY_SNAPSHOTS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    PERSON_ENTITIES,
    Dataset,
)
from export_pipeline.dead_letters import retry_dead_letters
from export_pipeline.faults import CRASH_ENV, CRASH_POINTS
from export_pipeline.source import create_source_schema
from export_pipeline.warehouse import open_warehouse, run_sql

REPO = Path(__file__).resolve().parent.parent

LOOKBACK = timedelta(minutes=2)
#: No generated cursor lies closer than this to a window boundary the next run will use.
MARGIN = timedelta(seconds=20)
#: Rows beyond the lookback reach this far back, so backfills and reconciliations span days.
OLDEST = timedelta(days=3)
MAX_ATTEMPTS = 3
OTHER_ORG = "7d1f3a90-2b64-4c8e-9f05-3a6b8c2d4e10"
ORGS = (ORG_ID, OTHER_ORG)

#: The crash points a micro-batch passes (backfill and repair points are elsewhere); the lake
#: points are inside (``lake.writing``) and after (``lake.committed``) a dataset's Delta commit.
BATCH_CRASH_POINTS = ("extract", "validated", "load", "committed", "lake.writing", "lake.committed")
#: Points at which the killed dataset's warehouse batch has committed.
COMMITTED_POINTS = ("committed", "lake.writing", "lake.committed")

PROFILES = {
    "default": settings(
        max_examples=20,
        stateful_step_count=15,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    ),
    "long": settings(
        max_examples=200,
        stateful_step_count=30,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    ),
}

#: A micro-batch of every dataset in a subprocess, killed where ``EXPORT_CRASH_AT`` says.
_CRASHING_MICROBATCH = textwrap.dedent(
    """
    from export_pipeline import lake
    from export_pipeline.batch import run_dataset_batch
    from export_pipeline.config import Settings
    from export_pipeline.contract import DATASETS
    from export_pipeline.warehouse import open_warehouse

    settings = Settings.from_env()
    with open_warehouse(settings.warehouse_path) as con:
        for ds in DATASETS:  # as the Dagster asset does: the batch, then its lake commit
            run_dataset_batch(ds, source_dsn=settings.source_dsn, con=con, settings=settings)
            lake.sync(con, lake.lake_for(settings), (ds,))
    """
)


# --- what the test writes: valid rows, and the ways a row can break the contract ------------


@dataclass(frozen=True)
class Violation:
    """One way to break the contract: the source values, the reason, the checks named."""

    reason: str
    checks: frozenset[str]
    values: Callable[[datetime], dict[str, Any]]


def _v(reason: str, checks: set[str], values: Callable[[datetime], dict[str, Any]]) -> Violation:
    return Violation(reason, frozenset(checks), values)


NULL, BAD = "null_required_field", "invalid_value"

VIOLATIONS: dict[str, dict[str, Violation]] = {
    OPERATION_RUNS.name: {
        "bad_status": _v(BAD, {"status:allowed_values"}, lambda c: {"status": "exploded"}),
        "null_operation_id": _v(NULL, {"operation_id:not_null"}, lambda c: {"operation_id": None}),
        "ended_before_started": _v(
            BAD,
            {"ended_at_not_before_started_at"},
            lambda c: {"ended_at": c - timedelta(minutes=4)},
        ),
        "negative_attempts": _v(BAD, {"attempt_count:>=0"}, lambda c: {"attempt_count": -1}),
    },
    OPERATION_EVENTS.name: {
        "null_event_type": _v(NULL, {"event_type:not_null"}, lambda c: {"event_type": None}),
        "bad_http_status": _v(BAD, {"http_status:<=599"}, lambda c: {"http_status": 700}),
        "negative_sequence": _v(BAD, {"event_sequence:>=0"}, lambda c: {"event_sequence": -1}),
    },
    COMPANY_ENTITIES.name: {
        "null_company_id": _v(NULL, {"company_id:not_null"}, lambda c: {"company_id": None}),
        "negative_employees": _v(BAD, {"employee_count:>=0"}, lambda c: {"employee_count": -5}),
        "overconfident": _v(
            BAD,
            {"enrichment_confidence:<=1"},
            lambda c: {"enrichment_confidence": Decimal("1.5")},
        ),
    },
    PERSON_ENTITIES.name: {
        "bad_phone": _v(BAD, {"phone_e164:pattern"}, lambda c: {"phone_e164": "555-0123"}),
        "bad_email": _v(BAD, {"work_email:pattern"}, lambda c: {"work_email": "not-an-email"}),
        "null_version": _v(NULL, {"record_version:not_null"}, lambda c: {"record_version": None}),
    },
    ENTITY_SNAPSHOTS.name: {
        "null_payload": _v(
            NULL, {"canonical_payload_json:not_null"}, lambda c: {"canonical_payload": None}
        ),
        "bad_entity_type": _v(
            BAD, {"entity_type:allowed_values"}, lambda c: {"entity_type": "robot"}
        ),
        "zero_version": _v(BAD, {"record_version:>=1"}, lambda c: {"record_version": 0}),
    },
}

VERSION_CONFLICT_CHECKS = frozenset({"record_version:equal_version_different_content"})
GUARD_CHECKS = {
    ds.name: frozenset(",".join(g) + ":unique" for g in ds.unique_guards) for ds in DATASETS
}


def valid_values(ds: Dataset, cursor: datetime, marker: str, version: int) -> dict[str, Any]:
    """Source values (every column a violation may break) of a valid row with this identity.

    ``marker`` is unique per write and lands in a text column, so the warehouse shows which
    write of a row it holds.
    """
    if ds is OPERATION_RUNS:
        return {
            "created_at": cursor,
            "started_at": cursor - timedelta(minutes=3),
            "ended_at": cursor - timedelta(minutes=2),
            "status": "succeeded",
            "operation_id": "company.enrich.profile",
            "attempt_count": 1,
            "workflow_id": marker,
        }
    if ds is OPERATION_EVENTS:
        return {
            "occurred_at": cursor,
            "event_type": "request_sent",
            "http_status": 200,
            "event_sequence": 1,
            "payload_hash": marker,
        }
    if ds is COMPANY_ENTITIES:
        return {
            "updated_at": cursor,
            "company_id": new_id(),
            "employee_count": 120,
            "enrichment_confidence": Decimal("0.9"),
            "record_version": version,
            "canonical_name": marker,
        }
    if ds is PERSON_ENTITIES:
        return {
            "updated_at": cursor,
            "phone_e164": "+14155550123",
            "work_email": "ada@acme.example",
            "record_version": version,
            "title": marker,
        }
    if ds is ENTITY_SNAPSHOTS:
        return {
            "captured_at": cursor,
            "canonical_payload": {"m": marker},
            "entity_type": "company",
            "record_version": 1,
        }
    raise KeyError(ds.name)


#: The warehouse column holding each dataset's write marker.
MARKER_SQL = {
    OPERATION_RUNS.name: "workflow_id",
    OPERATION_EVENTS.name: "payload_hash",
    COMPANY_ENTITIES.name: "canonical_name",
    PERSON_ENTITIES.name: "title",
    ENTITY_SNAPSHOTS.name: "json_extract_string(canonical_payload_json, '$.m')",
}


def source_key(ds: Dataset, key: tuple[str, ...]) -> dict[str, str]:
    return {ds.column(c).source_name: v for c, v in zip(ds.primary_key, key, strict=True)}


# --- the model -------------------------------------------------------------------------------


@dataclass
class SourceRow:
    """The current source row of one key, as the test last wrote it."""

    key: tuple[str, ...]
    cursor: datetime
    marker: str
    version: int
    violations: tuple[str, ...]
    org: str
    #: How the write was timed: on_time, late (within the lookback), beyond (it), fix, or
    #: early (before the first micro-batch, which reads everything).
    timing: str
    #: The uniqueness guard's values when the row is valid (runs and entities have none).
    guard: tuple[str, ...] | None = None
    in_scope: bool = True
    #: A run whose window held ``cursor`` has completed since the row was last written.
    covered: bool = False


@dataclass(frozen=True)
class Stored:
    """A row the warehouse should hold: which write it is."""

    cursor: datetime
    marker: str
    version: int
    guard: tuple[str, ...] | None


@dataclass
class Letter:
    checks: frozenset[str]
    status: str = "open"
    attempts: int = 1


LetterId = tuple[tuple[str, ...], str, datetime]  # key, reason, cursor of the rejected row


class Model:
    """What the contract says the warehouse holds, given what the test wrote and ran."""

    def __init__(self, lookback: timedelta, max_attempts: int) -> None:
        self.lookback = lookback
        self.max_attempts = max_attempts
        self.rows: dict[str, dict[tuple[str, ...], SourceRow]] = {d.name: {} for d in DATASETS}
        self.stored: dict[str, dict[tuple[str, ...], Stored]] = {d.name: {} for d in DATASETS}
        self.letters: dict[str, dict[LetterId, Letter]] = {d.name: {} for d in DATASETS}
        #: Per dataset, bounds of the micro-batch watermark (None before the first one).
        self.watermark: dict[str, tuple[datetime, datetime] | None] = {
            d.name: None for d in DATASETS
        }
        #: What the runs did, tallied for the figures.
        self.seen: Counter[str] = Counter()

    # writes

    def write(self, ds: Dataset, row: SourceRow) -> None:
        self.rows[ds.name][row.key] = row

    def in_scope(self, ds: Dataset) -> list[SourceRow]:
        """The rows a batch can read, in the order a batch settles guard contests: by cursor."""
        return sorted(
            (r for r in self.rows[ds.name].values() if r.in_scope), key=lambda r: r.cursor
        )

    # what one covering batch does to one row

    def process(self, ds: Dataset, key: tuple[str, ...], run: str) -> str:
        """Apply the current source row of ``key`` as a ``run`` batch would; return its outcome
        (a batch's count field), and tally what happened for the figures."""
        row = self.rows[ds.name][key]
        if not row.covered:
            self.seen[f"{row.timing} write first read by {run}"] += 1
        row.covered = True
        outcome, detail = self._apply(ds, row)
        self.seen[detail] += 1
        return outcome

    def _apply(self, ds: Dataset, row: SourceRow) -> tuple[str, str]:
        key = row.key
        stored = self.stored[ds.name].get(key)
        if row.violations:
            broken = [VIOLATIONS[ds.name][v] for v in row.violations]
            reason = NULL if any(b.reason == NULL for b in broken) else BAD
            checks = frozenset().union(*(b.checks for b in broken))
            return self._dead_letter(ds, (key, reason, row.cursor), checks)
        same = stored is not None and (stored.cursor, stored.marker) == (row.cursor, row.marker)
        if ds.write_mode == "upsert" and stored is not None:
            if row.version < stored.version:
                return "stale", "stale"
            if row.version == stored.version and not same:
                letter_id = (key, "version_conflict", row.cursor)
                return self._dead_letter(ds, letter_id, VERSION_CONFLICT_CHECKS)
        held_by_other = row.guard is not None and any(
            other.guard == row.guard for k, other in self.stored[ds.name].items() if k != key
        )
        if held_by_other:  # the first one (stored, else earliest cursor) keeps its place
            letter_id = (key, "uniqueness_violation", row.cursor)
            return self._dead_letter(ds, letter_id, GUARD_CHECKS[ds.name])
        outcome = "insert" if stored is None else "unchanged" if same else "update"
        self.stored[ds.name][key] = Stored(row.cursor, row.marker, row.version, row.guard)
        for letter in self._unresolved(ds, key):
            letter.status = "resolved"
            self.seen["dead letter resolved by a load"] += 1
        return outcome, outcome

    def _unresolved(self, ds: Dataset, key: tuple[str, ...]) -> list[Letter]:
        return [
            letter
            for (k, _reason, _cursor), letter in self.letters[ds.name].items()
            if k == key and letter.status != "resolved"
        ]

    def _dead_letter(
        self, ds: Dataset, letter_id: LetterId, checks: frozenset[str]
    ) -> tuple[str, str]:
        """A letter for the row (the same content's letter is refreshed, not repeated); it
        supersedes the key's other letters, so each key has one letter to act on."""
        letters = self.letters[ds.name]
        for letter in self._unresolved(ds, letter_id[0]):
            if letter is not letters.get(letter_id):
                letter.status = "resolved"
                self.seen["dead letter superseded"] += 1
        letters.setdefault(letter_id, Letter(checks))
        return "dead_lettered", f"dead letter: {letter_id[1]}"

    # runs: which rows each one covers

    def microbatch(
        self, ds: Dataset, started: datetime, finished: datetime
    ) -> tuple[Counter, bool]:
        """Cover the rows in ``(watermark - lookback, now]``; the outcomes, and whether they are
        exact (False when an already covered row lay too close to the window start to say)."""
        previous = self.watermark[ds.name]
        outcomes: Counter[str] = Counter()
        exact = True
        for row in self.in_scope(ds):
            assert row.cursor < started, f"{ds.name}: cursor {row.cursor} is not in the past"
            if previous is None or row.cursor > previous[1] - self.lookback:
                outcomes[self.process(ds, row.key, "micro-batch")] += 1
            elif row.cursor > previous[0] - self.lookback:
                # Only rows already covered may sit this close: re-reading them is idempotent.
                assert row.covered, f"{ds.name}: test generated an ambiguous cursor {row}"
                exact = False
        self.watermark[ds.name] = (started, finished)
        return outcomes, exact

    def backfill_day(self, ds: Dataset, day: date) -> Counter:
        return Counter(
            self.process(ds, r.key, "backfill")
            for r in self.in_scope(ds)
            if _utc_day(r.cursor) == day
        )

    def reconcile(self, ds: Dataset, days: list[date], closed: datetime) -> None:
        """A differing key of the reconciled days (today: its closed hours, before ``closed``)
        is re-read; a key the warehouse accounts for there (its row, or the open letter of a
        key it holds no row for) whose source row moved elsewhere is re-read by key."""

        def checked(cursor: datetime) -> bool:
            return _utc_day(cursor) in days and cursor < closed

        keys = {r.key for r in self.in_scope(ds) if checked(r.cursor)}
        moved = {k for k, s in self.stored[ds.name].items() if checked(s.cursor)}
        moved |= {
            key
            for (key, _reason, cursor), letter in self.letters[ds.name].items()
            if letter.status != "resolved" and key not in self.stored[ds.name] and checked(cursor)
        }
        self.seen["stored row moved out of a reconciled day, re-read by key"] += len(moved - keys)
        keys |= moved
        for key in sorted(keys, key=lambda k: self.rows[ds.name][k].cursor):
            self.process(ds, key, "reconcile")

    def open_letter_keys(self, ds: Dataset) -> set[tuple[str, ...]]:
        return {i[0] for i, letter in self.letters[ds.name].items() if letter.status == "open"}

    def retry(self, ds: Dataset) -> int:
        """Due letters (all open ones: the retry delay is 0) re-read by key, then one attempt
        more each, exhausted at the maximum."""
        keys = self.open_letter_keys(ds)
        for key in sorted(keys, key=lambda k: self.rows[ds.name][k].cursor):
            self.process(ds, key, "dead-letter retry")
        for letter_id, letter in self.letters[ds.name].items():
            if letter_id[0] in keys and letter.status == "open":
                letter.attempts += 1
                if letter.attempts >= self.max_attempts:
                    letter.status = "exhausted"
                    self.seen["dead letter exhausted"] += 1
        return len(keys)

    # expectations

    def expected_rows(self, ds: Dataset) -> list[tuple]:
        return sorted(
            (*k, s.cursor, s.marker, *((s.version,) if ds.write_mode == "upsert" else ()))
            for k, s in self.stored[ds.name].items()
        )

    def dead_lettered_now(self, ds: Dataset) -> list[SourceRow]:
        """Invalid source rows whose current content has a letter not yet resolved."""
        letters = self.letters[ds.name]
        return [
            r
            for r in self.in_scope(ds)
            if r.violations
            and any(
                i[0] == r.key and i[2] == r.cursor and letter.status != "resolved"
                for i, letter in letters.items()
            )
        ]


def _utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


# --- the state machine -----------------------------------------------------------------------

TIMINGS = ("on_time", "on_time", "late", "beyond")
UPDATE_KINDS = ("higher", "higher", "regression", "equal", "equal_stored")


class PipelineMachine(RuleBasedStateMachine):
    """One example: a fresh source database, a fresh warehouse file, a fresh model."""

    pg_server: Any = None
    examples = 0
    steps = 0
    rules: Counter[str] = Counter()
    seen: Counter[str] = Counter()

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        self.database = f"test_model_{uuid.uuid4().hex}"
        with psycopg.connect(self.pg_server.get_uri(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self.dsn = self.pg_server.get_uri(database=self.database)
        create_source_schema(self.dsn)
        self.src = SourceRows(self.dsn)
        self.data_dir = Path(tempfile.mkdtemp(prefix="export_pipeline_model_"))
        self.env = {
            "EXPORT_SOURCE_DSN": self.dsn,
            "EXPORT_DATA_DIR": str(self.data_dir),
            "EXPORT_LOOKBACK_MINUTES": str(LOOKBACK.total_seconds() / 60),
            "EXPORT_SAFETY_LAG_SECONDS": "0",
            "EXPORT_TRANSIENT_RETRIES": "0",
            "EXPORT_DEAD_LETTER_RETRY_SECONDS": "0",
            "EXPORT_DEAD_LETTER_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        }
        self.settings = Settings.from_env(self.env)
        self.model = Model(self.settings.lookback, self.settings.dead_letter_max_attempts)
        self.writes = 0
        #: Per stored row, the model's write it is and the batch that wrote it, at last check.
        self.written_by: dict[tuple[str, tuple[str, ...]], tuple[Stored | None, str]] = {}
        self.stack: ExitStack | None = None
        self.open()

    def open(self) -> None:
        self.stack = ExitStack()
        self.con = self.stack.enter_context(open_warehouse(self.settings.warehouse_path))

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
            self.stack = None

    def teardown(self) -> None:
        type(self).seen.update(self.model.seen)
        self.close()
        self.src.close()
        with psycopg.connect(self.pg_server.get_uri(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database)
                )
            )
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def step(self, kind: str) -> None:
        type(self).steps += 1
        type(self).rules[kind] += 1

    # helpers for writes

    def new_key(self) -> str:
        """A key uuid numbered within the example, so that a replay draws the same choices."""
        self.writes += 1
        return str(uuid.UUID(int=self.writes))

    def marker(self) -> str:
        self.writes += 1
        return f"w{self.writes}"

    def cursor(self, ds: Dataset, timing: str, fraction: float) -> tuple[datetime, str]:
        """A cursor for a write now, and its timing: on time, late (before the watermark,
        within the lookback) or beyond the lookback, always ``MARGIN`` or more away from where
        the next micro-batch window of ``ds`` starts, wherever in its bounds the watermark is.
        """
        now = datetime.now(UTC)
        lo, hi = self.model.watermark[ds.name] or (now, now)
        lookback = self.settings.lookback
        earliest_late, latest_late = hi - lookback + MARGIN, lo - MARGIN
        if timing == "late" and earliest_late < latest_late:
            cursor = latest_late - (latest_late - earliest_late) * fraction
        elif timing == "beyond":
            cursor = lo - lookback - MARGIN - (OLDEST - lookback - MARGIN) * fraction
        else:
            cursor, timing = now - timedelta(milliseconds=1 + 2000 * fraction), "on_time"
        if self.model.watermark[ds.name] is None:  # the first micro-batch reads everything
            timing = "early"
        return cursor, timing

    def draw_row_shape(self, data: st.DataObject, ds: Dataset) -> tuple[str, float, tuple]:
        timing = data.draw(st.sampled_from(TIMINGS), label="timing")
        fraction = data.draw(st.integers(0, 1000), label="offset") / 1000
        kinds = sorted(VIOLATIONS[ds.name])
        violations: tuple[str, ...] = ()
        if data.draw(st.sampled_from((False, False, True)), label="invalid"):
            violations = tuple(
                data.draw(
                    st.lists(st.sampled_from(kinds), min_size=1, max_size=2, unique=True),
                    label="violations",
                )
            )
        return timing, fraction, violations

    def draw_guard(
        self, data: st.DataObject, ds: Dataset, org: str
    ) -> tuple[tuple[str, ...] | None, str]:
        """A new uniqueness guard, or sometimes (a duplicate) the guard of one of the latest
        rows, often not read yet, so that two new rows contest it in one batch. A duplicate
        takes the org of its original, whose repair buckets then run in cursor order."""
        if not ds.unique_guards:
            return None, org
        taken = [(r.guard, r.org) for r in self.model.rows[ds.name].values() if r.guard][-3:]
        if taken and data.draw(st.sampled_from((False, False, False, True)), label="duplicate"):
            return data.draw(st.sampled_from(taken), label="duplicate of")
        if ds is OPERATION_EVENTS:
            return (self.new_key(), "1"), org
        return (org, "company", self.new_key(), "1"), org

    def source_values(self, ds: Dataset, row: SourceRow) -> dict[str, Any]:
        values = valid_values(ds, row.cursor, row.marker, row.version)
        if ds is OPERATION_EVENTS:
            values["run_id"] = row.guard[0]
        if ds is ENTITY_SNAPSHOTS:
            values["entity_id"] = row.guard[2]
        for v in row.violations:
            values.update(VIOLATIONS[ds.name][v].values(row.cursor))
        if not row.in_scope:
            values["entity_type"] = "job"
        return values

    # rules: writes at the source

    @initialize(data=st.data())
    def seed(self, data: st.DataObject) -> None:
        """Every example starts from a first micro-batch over rows of every dataset, so that
        later writes meet stored rows: versions, conflicts, guards and re-reads."""
        for ds in DATASETS:
            self.insert(data, ds, data.draw(st.integers(1, 3), label="rows"))
        self.microbatch()

    @rule(data=st.data())
    def insert_runs(self, data: st.DataObject) -> None:
        self.insert_rows(data, OPERATION_RUNS)

    @rule(data=st.data())
    def insert_events(self, data: st.DataObject) -> None:
        self.insert_rows(data, OPERATION_EVENTS)

    @rule(data=st.data())
    def insert_companies(self, data: st.DataObject) -> None:
        self.insert_rows(data, COMPANY_ENTITIES)

    @rule(data=st.data())
    def insert_persons(self, data: st.DataObject) -> None:
        self.insert_rows(data, PERSON_ENTITIES)

    @rule(data=st.data())
    def insert_snapshots(self, data: st.DataObject) -> None:
        self.insert_rows(data, ENTITY_SNAPSHOTS)

    def insert_rows(self, data: st.DataObject, ds: Dataset) -> None:
        self.step(f"insert {ds.name}")
        self.insert(data, ds, data.draw(st.integers(1, 5), label="rows"))

    def insert(self, data: st.DataObject, ds: Dataset, n: int) -> None:
        for _ in range(n):
            timing, fraction, violations = self.draw_row_shape(data, ds)
            org = data.draw(st.sampled_from(ORGS), label="org")
            in_scope = not ds.out_of_scope or data.draw(
                st.sampled_from((True, True, True, False)), label="in_scope"
            )
            version = data.draw(st.integers(1, 3), label="version") if ds.version_column else 1
            key = (org, self.new_key()) if ds.write_mode == "upsert" else (self.new_key(),)
            guard, org = self.draw_guard(data, ds, org)
            cursor, timing = self.cursor(ds, timing, fraction)
            row = SourceRow(
                key=key,
                cursor=cursor,
                marker=self.marker(),
                version=version,
                violations=violations,
                org=org,
                timing=timing,
                guard=guard,
                in_scope=in_scope,
            )
            values = {"org_id": row.org} | source_key(ds, key) | self.source_values(ds, row)
            self.src.insert(ds, **values)
            self.model.write(ds, row)

    @rule(data=st.data())
    def update_companies(self, data: st.DataObject) -> None:
        """New versions of stored companies: higher, lower (stale), or equal (a conflict)."""
        self.update_entities(data, COMPANY_ENTITIES)

    @rule(data=st.data())
    def update_persons(self, data: st.DataObject) -> None:
        self.update_entities(data, PERSON_ENTITIES)

    def update_entities(self, data: st.DataObject, ds: Dataset) -> None:
        self.step(f"update {ds.name}")
        keys = sorted(self.model.rows[ds.name])
        for _ in range(data.draw(st.integers(1, 3), label="updates")):
            key = data.draw(st.sampled_from(keys), label="key")
            current = self.model.rows[ds.name][key]
            stored = self.model.stored[ds.name].get(key)
            kind = data.draw(st.sampled_from(UPDATE_KINDS), label="kind")
            step = data.draw(st.integers(1, 2), label="step")
            version = {
                "higher": current.version + step,
                "regression": max(1, current.version - step),
                "equal": current.version,
                "equal_stored": stored.version if stored else current.version,
            }[kind]
            timing, fraction, violations = self.draw_row_shape(data, ds)
            cursor, timing = self.cursor(ds, timing, fraction)
            row = SourceRow(
                key=key,
                cursor=cursor,
                marker=self.marker(),
                version=version,
                violations=violations,
                org=key[0],
                timing=timing,
            )
            self.src.update(ds, source_key(ds, key), **self.source_values(ds, row))
            self.model.write(ds, row)

    @precondition(lambda self: any(self.model.dead_lettered_now(d) for d in DATASETS))
    @rule(data=st.data())
    def fix_dead_lettered_row(self, data: st.DataObject) -> None:
        """Make a dead-lettered row valid at the source, bumping its cursor as a fix would."""
        names = [d.name for d in DATASETS if self.model.dead_lettered_now(d)]
        ds = DATASETS_BY_NAME[data.draw(st.sampled_from(names), label="dataset")]
        self.step("fix dead-lettered row")
        keys = [r.key for r in self.model.dead_lettered_now(ds)]
        broken = self.model.rows[ds.name][data.draw(st.sampled_from(keys), label="key")]
        row = SourceRow(
            key=broken.key,
            cursor=datetime.now(UTC),
            marker=self.marker(),
            version=broken.version,
            violations=(),
            org=broken.org,
            timing="fix",
            guard=broken.guard,
        )
        self.src.update(ds, source_key(ds, broken.key), **self.source_values(ds, row))
        self.model.write(ds, row)

    # rules: runs

    @rule()
    def microbatch(self) -> None:
        self.step("micro-batch")
        for ds in DATASETS:
            previous = self.model.watermark[ds.name]
            started = datetime.now(UTC)
            result = batch.run_dataset_batch(
                ds, source_dsn=self.dsn, con=self.con, settings=self.settings
            )
            finished = datetime.now(UTC)
            expected, exact = self.model.microbatch(ds, started, finished)
            if previous is None:
                assert result.window_start is None
            else:
                lookback = self.settings.lookback
                assert previous[0] - lookback <= result.window_start <= previous[1] - lookback
            assert started <= result.window_end <= finished
            self.assert_counts(ds, result, expected, exact)
        self.check_warehouse()

    @rule(data=st.data())
    def backfill(self, data: st.DataObject) -> None:
        self.step("backfill")
        first, last = self.draw_days(data)
        for ds in self.draw_datasets(data):
            results = batch.run_backfill(
                ds, first, last, source_dsn=self.dsn, con=self.con, settings=self.settings
            )
            days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
            assert len(results) == len(days)
            for day, result in zip(days, results, strict=True):
                assert result.mode == "backfill"
                self.assert_counts(ds, result, self.model.backfill_day(ds, day), exact=True)
        self.check_warehouse()

    @rule(data=st.data())
    def reconcile_days(self, data: st.DataObject) -> None:
        self.step("reconcile")
        first, last = self.draw_days(data)
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        closed = reconcile.closed_hours_end(datetime.now(UTC), self.settings)
        open_days = {d for d in days if datetime(d.year, d.month, d.day, tzinfo=UTC) < closed}
        for ds in self.draw_datasets(data):
            results = reconcile.reconcile_dataset(
                ds, days, source_dsn=self.dsn, con=self.con, settings=self.settings
            )
            assert {r.day for r in results if r.check == "row_count_parity"} == open_days
            self.model.reconcile(ds, days, closed)
        self.check_warehouse()

    @precondition(lambda self: any(self.model.open_letter_keys(d) for d in DATASETS))
    @rule()
    def retry_due_dead_letters(self) -> None:
        self.step("retry dead letters")
        for ds in DATASETS:
            expected = self.model.retry(ds)
            outcome = retry_dead_letters(
                ds, source_dsn=self.dsn, con=self.con, settings=self.settings
            )
            assert outcome.retried == expected, (ds.name, outcome, expected)
        self.check_warehouse()

    @rule(
        point=st.sampled_from(BATCH_CRASH_POINTS),
        victim=st.sampled_from([d.name for d in DATASETS]),
    )
    def crash_microbatch(self, point: str, victim: str) -> None:
        """A micro-batch SIGKILLed at a crash point: what committed stays, the rest never was."""
        assert point in CRASH_POINTS
        if point == "extract" and not self.rows_in_next_window(victim):
            point = "validated"  # the extract point is inside the loop over extracted batches
        self.step(f"micro-batch killed at {point}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORT_")}
        env |= self.env | {CRASH_ENV: f"{point}:{victim}"}
        self.close()  # DuckDB admits one writer process: the subprocess takes the file
        started = datetime.now(UTC)
        try:
            crashed = subprocess.run(
                [sys.executable, "-c", _CRASHING_MICROBATCH],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            finished = datetime.now(UTC)
            self.open()
        # A lake point is reached only when the victim had changes to commit to the lake.
        killed = crashed.returncode == -signal.SIGKILL
        assert killed or (point.startswith("lake.") and crashed.returncode == 0), (
            crashed.returncode,
            crashed.stderr,
        )
        for ds in DATASETS:
            if killed and ds.name == victim and point not in COMMITTED_POINTS:
                break
            self.model.microbatch(ds, started, finished)
            if killed and ds.name == victim:
                break
        self.check_warehouse()
        self.check_lake()

    @rule()
    def sync_lake(self) -> None:
        self.step("lake sync")
        self.check_lake()

    def check_lake(self) -> None:
        """After a sync the lake equals the warehouse, whatever was killed before (exactly once:
        a batch applied twice or not at all would change the count or the checksum)."""
        target = lake.lake_for(self.settings)
        lake.sync(self.con, target, DATASETS)
        for ds in DATASETS:
            check = lake.check_table(self.con, target, ds)
            assert check.passed, check
        ((pending,),) = run_sql(self.con, "SELECT count(*) FROM _lake_changes")
        assert pending == 0

    def rows_in_next_window(self, name: str) -> bool:
        bounds = self.model.watermark[name]
        return any(
            bounds is None or r.cursor > bounds[1] - self.settings.lookback
            for r in self.model.rows[name].values()
            if r.in_scope
        )

    def draw_days(self, data: st.DataObject) -> tuple[date, date]:
        today = datetime.now(UTC).date()
        first = today - timedelta(days=data.draw(st.integers(0, OLDEST.days), label="first day"))
        span = data.draw(st.integers(0, 2), label="days")
        return first, min(first + timedelta(days=span), today)

    def draw_datasets(self, data: st.DataObject) -> list[Dataset]:
        chosen = data.draw(
            st.sets(st.sampled_from([d.name for d in DATASETS]), min_size=1), label="datasets"
        )
        return [d for d in DATASETS if d.name in chosen]

    # checks

    def assert_counts(
        self, ds: Dataset, result: batch.BatchResult, expected: Counter, exact: bool
    ) -> None:
        """The batch's numbers are what the model expects (inserts and updates always)."""
        assert result.accounted == result.extracted, result
        got = {f: getattr(result, f) for f in ("inserted", "updated")}
        want = {"inserted": expected["insert"], "updated": expected["update"]}
        assert got == want, (ds.name, result, expected)
        if exact:
            got = {f: getattr(result, f) for f in batch.COUNT_FIELDS}
            want |= {
                "extracted": sum(expected.values()),
                "unchanged": expected["unchanged"],
                "stale": expected["stale"],
                "dead_lettered": expected["dead_lettered"],
            }
            assert got == want, (ds.name, result, expected)

    def check_warehouse(self) -> None:
        """The warehouse equals the model: rows, dead letters, watermarks, ledger identity."""
        for ds in DATASETS:
            self.check_rows(ds)
            self.check_letters(ds)
        for name, watermark in run_sql(
            self.con, "SELECT dataset, watermark FROM _export_watermarks"
        ):
            bounds = self.model.watermark[name]
            assert bounds is not None and bounds[0] <= watermark <= bounds[1], (name, watermark)
        assert {n for (n,) in run_sql(self.con, "SELECT dataset FROM _export_watermarks")} == {
            n for n, b in self.model.watermark.items() if b is not None
        }
        broken = run_sql(
            self.con,
            "SELECT * FROM _export_batches WHERE status <> 'succeeded' OR extracted <> "
            "inserted + updated + unchanged + stale + dead_lettered",
        )
        assert not broken, broken

    def check_rows(self, ds: Dataset) -> None:
        """Exactly the expected writes, once each; a row re-read unchanged is not rewritten."""
        keys = ", ".join(f'"{c}"::VARCHAR' for c in ds.primary_key)
        version = ', "record_version"' if ds.write_mode == "upsert" else ""
        written = run_sql(
            self.con,
            f'SELECT {keys}, "{ds.cursor}", {MARKER_SQL[ds.name]}{version}, _batch_id '
            f'FROM "{ds.name}"',
        )
        actual = sorted(r[:-1] for r in written)
        for *row, batch_id in written:
            key = tuple(row[: len(ds.primary_key)])
            stored = self.model.stored[ds.name].get(key)
            previous = self.written_by.get((ds.name, key))
            if previous is not None and previous[0] == stored:
                assert batch_id == previous[1], f"{ds.name} {key} rewritten by an unchanged read"
            self.written_by[(ds.name, key)] = (stored, batch_id)
        expected = self.model.expected_rows(ds)
        missing = sorted(set(expected) - set(actual))
        unexpected = sorted(set(actual) - set(expected))
        assert actual == expected, f"{ds.name}: missing {missing}, unexpected {unexpected}"
        for guard in (ds.primary_key, *ds.unique_guards):
            columns = ", ".join(f'"{c}"' for c in guard)
            dupes = run_sql(
                self.con,
                f'SELECT {columns}, count(*) FROM "{ds.name}" GROUP BY ALL HAVING count(*) > 1',
            )
            assert not dupes, (ds.name, guard, dupes)

    def check_letters(self, ds: Dataset) -> None:
        rows = run_sql(
            self.con,
            "SELECT record_key::VARCHAR, reason, cursor_at, failed_checks, status, attempt_count "
            "FROM dx_dead_letter WHERE dataset = $d",
            {"d": ds.name},
        )
        actual: dict[LetterId, tuple] = {}
        for record_key, reason, cursor_at, checks, status, attempts in rows:
            parsed = json.loads(record_key)
            letter_id = (tuple(parsed[c] for c in ds.primary_key), reason, cursor_at)
            assert letter_id not in actual, f"{ds.name}: two letters for {letter_id}"
            actual[letter_id] = (frozenset(checks), status, attempts)
        expected = {
            i: (letter.checks, letter.status, letter.attempts)
            for i, letter in self.model.letters[ds.name].items()
        }
        differ = {
            i: (actual.get(i), expected.get(i))
            for i in set(actual) | set(expected)
            if actual.get(i) != expected.get(i)
        }
        assert not differ, f"{ds.name} dead letters (warehouse, model): {differ}"


@pytest.mark.reliability
def test_warehouse_always_equals_the_contract_model_of_what_the_source_holds(
    pg_server: Any, figures: dict[str, Any]
) -> None:
    """Any interleaving of writes, late rows, fixes, runs and crashes converges on the contract."""
    profile = os.environ.get("HYPOTHESIS_PROFILE", "default")
    machine = type(
        "Machine",
        (PipelineMachine,),
        {"pg_server": pg_server, "rules": Counter(), "seen": Counter()},
    )
    try:
        run_state_machine_as_test(machine, settings=PROFILES[profile])
    finally:
        figures["state-machine profile"] = profile
        figures["state-machine examples"] = machine.examples
        figures["state-machine steps"] = machine.steps
        figures["state-machine rules"] = dict(sorted(machine.rules.items()))
        figures["state-machine outcomes"] = dict(sorted(machine.seen.items()))
