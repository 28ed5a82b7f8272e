"""The hostile-input corpus: source rows built to break an export, each labelled with its fate.

Data only; ``tests/test_hostile_corpus.py`` writes every case into one source, exports each
dataset once (then once more for the cases that need a second batch) and checks that each case
ends exactly as labelled. A case is a subject row (overrides of ``rows.default_row``, source column
names), optional setup rows written before the first batch, and the expected outcome:

- ``loaded``: in the warehouse; every contract column equals the source's value (text byte for
  byte, uuids in canonical spelling, numerics at DECIMAL(18,6) rounded half-to-even, instants to
  the microsecond, JSON to the last digit) unless ``stored`` says otherwise.
- ``redacted``: loaded, with ``secret`` nowhere in the stored row and, where ``stored`` states
  it, the JSON exactly as expected with secrets replaced by ``"[REDACTED]"``.
- ``dead_lettered``: not loaded; exactly one dead letter for its key, with ``reason`` and
  ``failed_checks == [check]`` (the check names are stable: ``<column>:<check>``).
- ``out_of_scope``: ``entity_type = 'job'``; neither loaded nor dead-lettered.
- ``stale``: a lower ``record_version`` after a higher one: counted, not applied.
- ``deferred``: a cursor in the future is in no window yet; it waits, neither loaded nor
  dead-lettered, and the watermark stays below it.
- ``refused_by_source``: PostgreSQL itself refuses the value (``sqlstate``), so no export can
  ever see it: a null in a primary-key column, a duplicate primary key, non-uuid text in a uuid
  column, a NUL character (``text`` and ``jsonb`` cannot hold U+0000), invalid UTF-8.

Decisions the corpus pins down, where the contract says only "numeric" or "uuid/text":

- ``numeric`` is DECIMAL(18,6): more than 12 integer digits (a 30-digit cost) is
  ``type_cast_failed``, never wrapped or floated; more than 6 decimals round half-to-even on the
  exact value (never through a double), and the value checks apply to the rounded value.
- uuid columns are PostgreSQL ``uuid`` in the source, which refuses non-uuid text; a source that
  types one as text fails its dataset's schema check loudly (tested beside the corpus).
- ``\\x00`` cannot reach the pipeline: PostgreSQL ``text`` and ``jsonb`` cannot hold U+0000, so
  the corpus sends its neighbours (``\\x01``, ``\\x1f``, ``\\x7f``) and shows the refusal.

Values that depend on the clock are :class:`Rel` (resolved when the row is written); keys that
several rows share are :func:`uid` (deterministic uuids). Cases generated from the contract
(a null in every required column, every value check, SQL-looking text in every text column) sit
beside the hand-written ones; :data:`CASES` holds them all.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from export_pipeline.contract import (
    COMPANY_ENTITIES,
    DATASETS,
    ENTITY_SNAPSHOTS,
    OPERATION_EVENTS,
    OPERATION_RUNS,
    PERSON_ENTITIES,
    Column,
    Dataset,
)
from export_pipeline.redact import REDACTED

Outcome = Literal[
    "loaded",
    "redacted",
    "dead_lettered",
    "out_of_scope",
    "stale",
    "deferred",
    "refused_by_source",
]
OUTCOMES: tuple[Outcome, ...] = (
    "loaded",
    "redacted",
    "dead_lettered",
    "out_of_scope",
    "stale",
    "deferred",
    "refused_by_source",
)

SHORT = {
    OPERATION_RUNS.name: "runs",
    OPERATION_EVENTS.name: "events",
    COMPANY_ENTITIES.name: "companies",
    PERSON_ENTITIES.name: "persons",
    ENTITY_SNAPSHOTS.name: "snapshots",
}

_NAMESPACE = uuid.UUID("5d1b7c3e-0f4a-4b6e-9d2c-7a8b9c0d1e2f")


def uid(name: str) -> str:
    """A deterministic uuid, for keys that several rows of a case share."""
    return str(uuid.uuid5(_NAMESPACE, name))


@dataclass(frozen=True)
class Rel:
    """An instant relative to when the row is written; positive seconds lie in the future."""

    seconds: float

    def at(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)


def ago(**delta: float) -> Rel:
    return Rel(-timedelta(**delta).total_seconds())


def ahead(**delta: float) -> Rel:
    return Rel(timedelta(**delta).total_seconds())


@dataclass(frozen=True)
class Case:
    """One hostile input and what the pipeline must make of it."""

    id: str
    dataset: Dataset
    #: Overrides of ``rows.default_row`` for the subject row (source column names).
    row: Mapping[str, Any]
    outcome: Outcome
    #: dead_lettered: the dead-letter reason, and the one check the row fails.
    reason: str | None = None
    check: str | None = None
    #: Expected warehouse values for the subject's key (contract column names); for loaded rows
    #: any column not named here must equal the source. For stale and version conflicts: the
    #: stored row that must survive.
    stored: Mapping[str, Any] = field(default_factory=dict)
    #: dead_lettered: expected values in the dead letter's ``row_json``.
    letter: Mapping[str, Any] = field(default_factory=dict)
    #: redacted (or dead_lettered with secrets): a string that must appear nowhere it is stored.
    secret: str | None = None
    #: Rows written before the first batch, each expected to load.
    setup: tuple[Mapping[str, Any], ...] = ()
    #: When the subject reaches the source: before the first export or before the second.
    batch: Literal[1, 2] = 1
    #: batch 2: the subject is an UPDATE of ``setup[0]`` (same key) rather than a new row.
    replaces: bool = False
    #: refused_by_source: raw SQL the source must refuse (else the subject row is inserted).
    sql: str | None = None
    sqlstate: str | None = None
    #: How the subject shows in its batch's counts when that is not implied by the outcome.
    counted: str | None = None
    #: A bug outside the modules this corpus may change: the case is xfail(strict) with this.
    known_bug: str | None = None
    #: Runs in a pipeline of its own (it can fail a whole batch).
    isolated: bool = False
    note: str = ""

    @property
    def counted_as(self) -> str | None:
        """The subject's outcome in its batch's counts (None: the batch never sees it)."""
        if self.counted is not None:
            return self.counted
        if self.outcome in ("loaded", "redacted"):
            return "update" if self.replaces else "insert"
        if self.outcome == "stale":
            return "stale"
        if self.outcome == "dead_lettered":
            return self.reason
        return None


def _loaded(ds: Dataset, name: str, row: Mapping[str, Any], **kw: Any) -> Case:
    return Case(f"{SHORT[ds.name]}-{name}", ds, row, "loaded", **kw)


def _dead(ds: Dataset, name: str, row: Mapping[str, Any], reason: str, check: str, **kw: Any):
    return Case(f"{SHORT[ds.name]}-{name}", ds, row, "dead_lettered", reason, check, **kw)


def _refused(ds: Dataset, name: str, row: Mapping[str, Any], sqlstate: str, **kw: Any) -> Case:
    return Case(f"{SHORT[ds.name]}-{name}", ds, row, "refused_by_source", sqlstate=sqlstate, **kw)


def _redacted(ds: Dataset, name: str, row: Mapping[str, Any], secret: str, **kw: Any) -> Case:
    return Case(f"{SHORT[ds.name]}-{name}", ds, row, "redacted", secret=secret, **kw)


RUNS, EVENTS, COMPANIES, PERSONS, SNAPSHOTS = DATASETS

# --- generated from the contract ---------------------------------------------------------------


def null_required_cases() -> Iterator[Case]:
    """A null in every required column of every dataset.

    ``export_schema_version`` is stamped by the pipeline, never read, so it cannot be null;
    primary-key columns are NOT NULL in the source, which refuses the row.
    """
    for ds in DATASETS:
        for col in ds.columns:
            if col.nullable or col.name == "export_schema_version":
                continue
            row = {col.source_name: None}
            if col.name in ds.primary_key:
                yield _refused(ds, f"null-{col.name}", row, "23502", note="source primary key")
            else:
                yield _dead(
                    ds, f"null-{col.name}", row, "null_required_field", f"{col.name}:not_null"
                )


def _number(col: Column, value: float) -> int | Decimal:
    return Decimal(str(value)) if col.type == "numeric" else int(value)


def _step(col: Column) -> int | Decimal:
    return Decimal("0.01") if col.type == "numeric" else 1


def _companions(ds: Dataset, col: Column) -> dict[str, Any]:
    """Values keeping a row's other checks quiet while ``col`` is tested: a ``started_at`` in
    the future would also put ``ended_at`` before it, so ``ended_at`` is left empty."""
    return {
        ds.column(rule.left).source_name: None for rule in ds.row_rules if rule.right == col.name
    }


def value_check_cases() -> Iterator[Case]:
    """Every value check the contract declares: one row just outside it (dead-lettered with
    that check named) and, for bounds, one row exactly on it (loaded)."""
    for ds in DATASETS:
        for col in ds.columns:
            if col.name == "export_schema_version":
                continue  # stamped by the pipeline; the source cannot get it wrong
            src = col.source_name
            quiet = _companions(ds, col)
            if col.allowed is not None:
                wrong = col.allowed[0].upper()
                yield _dead(
                    ds,
                    f"{col.name}-wrong-case",
                    {src: wrong, **quiet},
                    "invalid_value",
                    f"{col.name}:allowed_values",
                )
            if col.ge is not None:
                low = _number(col, col.ge)
                yield _dead(
                    ds,
                    f"{col.name}-below-{col.ge:g}",
                    {src: low - _step(col), **quiet},
                    "invalid_value",
                    f"{col.name}:>={col.ge:g}",
                )
                yield _loaded(ds, f"{col.name}-equal-to-{col.ge:g}", {src: low, **quiet})
            if col.le is not None:
                high = _number(col, col.le)
                yield _dead(
                    ds,
                    f"{col.name}-above-{col.le:g}",
                    {src: high + _step(col), **quiet},
                    "invalid_value",
                    f"{col.name}:<={col.le:g}",
                )
                yield _loaded(ds, f"{col.name}-equal-to-{col.le:g}", {src: high, **quiet})
            if col.pattern is not None:
                yield _dead(
                    ds,
                    f"{col.name}-not-matching",
                    {src: "not valid", **quiet},
                    "invalid_value",
                    f"{col.name}:pattern",
                )
            if col.not_future and col.name == ds.cursor:
                yield Case(
                    f"{SHORT[ds.name]}-{col.name}-in-two-days",
                    ds,
                    {src: ahead(days=2)},
                    "deferred",
                    note="a future cursor lies beyond every window until its time comes",
                )
            elif col.not_future:
                yield _dead(
                    ds,
                    f"{col.name}-in-two-days",
                    {src: ahead(days=2), **quiet},
                    "invalid_value",
                    f"{col.name}:not_in_future",
                )
                yield _loaded(
                    ds,
                    f"{col.name}-within-clock-skew",
                    {src: ahead(minutes=4), **quiet},
                    note="5 minutes of clock skew are tolerated",
                )


SQL_PAYLOADS = {
    "drop-table": "'); DROP TABLE x; --",
    "dollar-param": "$1",
    "dollar-quote": "$$",
    "backslashes": "\\\\",
    "format-placeholders": "%s {} {0} %(x)s ?",
}


def free_text_columns(ds: Dataset) -> list[Column]:
    """Text columns without a vocabulary or pattern: they must carry any string unchanged."""
    return [
        c for c in ds.source_columns if c.type == "text" and c.allowed is None and c.pattern is None
    ]


def sql_looking_text_cases() -> Iterator[Case]:
    """SQL-looking strings in every text column of every dataset: loaded unchanged in free text
    columns, dead-lettered (and kept unchanged in the dead letter) in constrained ones."""
    drop = SQL_PAYLOADS["drop-table"]
    for ds in DATASETS:
        for name, payload in SQL_PAYLOADS.items():
            row = {c.source_name: payload for c in free_text_columns(ds)}
            yield _loaded(ds, f"sql-text-{name}", row)
        for col in ds.source_columns:
            if col.type != "text" or col in free_text_columns(ds):
                continue
            check = "allowed_values" if col.allowed is not None else "pattern"
            yield _dead(
                ds,
                f"sql-text-in-{col.name}",
                {col.source_name: drop, **_companions(ds, col)},
                "invalid_value",
                f"{col.name}:{check}",
                letter={col.name: drop},
            )


# --- hand-written ------------------------------------------------------------------------------

R = "PLANTED-SECRET-"  # prefix of every planted secret value


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth - 1, -1, -1):
        value = {f"level{i}": value}
    return value


def _deep_json_text(depth: int, leaf: str) -> str:
    """``depth`` nested objects as JSON text (built as text: json.dumps would recurse)."""
    return '{"a": ' * depth + leaf + "}" * depth


CONTROLS = [_loaded(ds, "valid-row-beside-hostile-ones", {}) for ds in DATASETS]

ENUMERATIONS = [
    _dead(RUNS, "status-empty", {"status": ""}, "invalid_value", "status:allowed_values"),
    _dead(
        RUNS,
        "status-trailing-space",
        {"status": "succeeded "},
        "invalid_value",
        "status:allowed_values",
    ),
    _dead(
        SNAPSHOTS,
        "entity_type-unknown",
        {"entity_type": "organisation"},
        "invalid_value",
        "entity_type:allowed_values",
    ),
    _loaded(
        EVENTS,
        "event_type-open-vocabulary",
        {"event_type": "webhook_replayed"},
        note="the contract lists event types with 'etc.': an open vocabulary",
    ),
]

SCOPE = [
    Case("runs-job", RUNS, {"entity_type": "job"}, "out_of_scope"),
    Case("events-job", EVENTS, {"entity_type": "job"}, "out_of_scope"),
    Case("snapshots-job", SNAPSHOTS, {"entity_type": "job"}, "out_of_scope"),
    Case(
        "runs-job-with-invalid-values",
        RUNS,
        {"entity_type": "job", "status": "exploded", "attempt_count": -1, "org_id": None},
        "out_of_scope",
        note="out of scope before validation: no dead letter for a row the contract excludes",
    ),
    _dead(
        RUNS,
        "entity_type-JOB",
        {"entity_type": "JOB"},
        "invalid_value",
        "entity_type:allowed_values",
    ),
    _dead(
        EVENTS,
        "entity_type-job-trailing-space",
        {"entity_type": "job "},
        "invalid_value",
        "entity_type:allowed_values",
    ),
]

INT_MAX, INT_MIN = 2**31 - 1, -(2**31)
BIGINT_MAX, BIGINT_MIN = 2**63 - 1, -(2**63)

NUMBERS = [
    _loaded(RUNS, "attempt_count-int-max", {"attempt_count": INT_MAX}),
    _dead(
        RUNS,
        "attempt_count-int-min",
        {"attempt_count": INT_MIN},
        "invalid_value",
        "attempt_count:>=0",
    ),
    _loaded(RUNS, "duration_ms-int-max", {"duration_ms": INT_MAX}),
    _loaded(COMPANIES, "employee_count-int-max", {"employee_count": INT_MAX}),
    _loaded(COMPANIES, "record_version-bigint-max", {"record_version": BIGINT_MAX}),
    _dead(
        SNAPSHOTS,
        "record_version-bigint-min",
        {"record_version": BIGINT_MIN},
        "invalid_value",
        "record_version:>=1",
    ),
    _dead(
        EVENTS, "http_status-negative", {"http_status": -200}, "invalid_value", "http_status:>=100"
    ),
    _loaded(RUNS, "cost_usd-largest-decimal-18-6", {"cost_usd": Decimal("999999999999.999999")}),
    _dead(
        RUNS,
        "cost_usd-one-trillion",
        {"cost_usd": Decimal("1e12")},
        "type_cast_failed",
        "cost_usd:type_cast",
        note="13 integer digits do not fit DECIMAL(18,6): never wrapped, never floated",
    ),
    _dead(
        RUNS,
        "cost_usd-30-digit-integer",
        {"cost_usd": Decimal("123456789012345678901234567890")},
        "type_cast_failed",
        "cost_usd:type_cast",
    ),
    _loaded(
        RUNS,
        "cost_usd-30-significant-digits",
        {"cost_usd": Decimal("123456789012.345678901234567890")},
        stored={"cost_usd": Decimal("123456789012.345679")},
        note="18 exact digits, beyond a double (which would give 123456789012.34568)",
    ),
    _loaded(
        RUNS,
        "cost_usd-30-fractional-digits",
        {"cost_usd": Decimal("0.000000500000000000000000000001")},
        stored={"cost_usd": Decimal("0.000001")},
        note="rounded on the whole value: just above half a micro-dollar rounds up",
    ),
    _loaded(
        RUNS,
        "cost_usd-rounds-half-to-even",
        {"cost_usd": Decimal("0.0000025")},
        stored={"cost_usd": Decimal("0.000002")},
    ),
    _loaded(
        RUNS,
        "cost_usd-negative-below-precision",
        {"cost_usd": Decimal("-0.0000001")},
        stored={"cost_usd": Decimal("0")},
        note="checks apply to the contract-typed value: DECIMAL(18,6) makes it 0",
    ),
    _dead(
        RUNS, "cost_usd-nan", {"cost_usd": Decimal("NaN")}, "type_cast_failed", "cost_usd:type_cast"
    ),
    _dead(
        RUNS,
        "cost_usd-infinity",
        {"cost_usd": Decimal("Infinity")},
        "type_cast_failed",
        "cost_usd:type_cast",
    ),
    _loaded(
        COMPANIES,
        "enrichment_confidence-above-one-below-precision",
        {"enrichment_confidence": Decimal("1.0000004")},
        stored={"enrichment_confidence": Decimal("1")},
    ),
]


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


TIMESTAMPS = [
    _loaded(
        RUNS,
        "started_at-year-1",
        {"started_at": "0001-01-01 00:00:00+00", "ended_at": None},
        stored={"started_at": _utc(1, 1, 1)},
    ),
    _dead(
        RUNS,
        "started_at-before-year-1",
        {"started_at": "0001-12-31 23:59:59+00 BC", "ended_at": None},
        "type_cast_failed",
        "started_at:type_cast",
        note="PostgreSQL holds BC dates; no analyst tool does",
    ),
    _dead(
        RUNS,
        "created_at-4713-bc",
        {"created_at": "4713-01-01 00:00:00+00 BC"},
        "type_cast_failed",
        "created_at:type_cast",
        note="a cursor far in the past is read by the first batch and dead-lettered",
    ),
    _dead(
        RUNS,
        "ended_at-year-10000",
        {"ended_at": "10000-01-01 00:00:00+00"},
        "type_cast_failed",
        "ended_at:type_cast",
    ),
    _loaded(
        RUNS,
        "created_at-1900",
        {"created_at": "1900-01-01 00:00:00+00"},
        stored={"created_at": _utc(1900, 1, 1)},
    ),
    _loaded(
        RUNS,
        "created_at-unix-epoch",
        {"created_at": "1970-01-01 00:00:00+00"},
        stored={"created_at": _utc(1970, 1, 1)},
    ),
    _loaded(
        RUNS,
        "started_at-one-microsecond-before-epoch",
        {"started_at": "1969-12-31 23:59:59.999999+00", "ended_at": "1970-01-01 00:00:00+00"},
        stored={
            "started_at": _utc(1969, 12, 31, 23, 59, 59, 999999),
            "ended_at": _utc(1970, 1, 1),
        },
    ),
    _loaded(
        RUNS,
        "dst-fall-back-wall-clock-goes-backwards",
        {"started_at": "2024-11-03 01:59:59-04", "ended_at": "2024-11-03 01:00:01-05"},
        stored={
            "started_at": _utc(2024, 11, 3, 5, 59, 59),
            "ended_at": _utc(2024, 11, 3, 6, 0, 1),
        },
        note="New York's clocks fall back: ended_at reads earlier but is 2 s later",
    ),
    _dead(
        RUNS,
        "dst-fall-back-wall-clock-goes-forwards",
        {"started_at": "2024-11-03 01:00:01-05", "ended_at": "2024-11-03 01:59:59-04"},
        "invalid_value",
        "ended_at_not_before_started_at",
        note="ended_at reads later on the wall clock but is 58 minutes earlier",
    ),
    _loaded(
        RUNS,
        "dst-spring-forward-gap",
        {"started_at": "2024-03-10 02:30:00 America/New_York", "ended_at": None},
        note="a local time that never existed: stored as the instant PostgreSQL made of it",
    ),
    _loaded(
        PERSONS,
        "last_enriched_at-dst-ambiguous-london",
        {"last_enriched_at": "2024-10-27 01:30:00 Europe/London"},
    ),
    _loaded(
        EVENTS,
        "occurred_at-dst-fall-back",
        {"occurred_at": "2024-11-03 01:30:00-05"},
        stored={"occurred_at": _utc(2024, 11, 3, 6, 30)},
    ),
    _loaded(
        RUNS,
        "started_at-leap-second",
        {"started_at": "2016-12-31 23:59:60+00", "ended_at": None},
        stored={"started_at": _utc(2017, 1, 1)},
        note="PostgreSQL reads second 60 as the next minute",
    ),
    _loaded(
        RUNS,
        "ended_at-equals-started_at",
        {"started_at": "2024-05-01 12:00:00+00", "ended_at": "2024-05-01 12:00:00+00"},
    ),
    _dead(
        RUNS,
        "ended_at-one-microsecond-before-started_at",
        {"started_at": "2024-05-01 12:00:00+00", "ended_at": "2024-05-01 11:59:59.999999+00"},
        "invalid_value",
        "ended_at_not_before_started_at",
    ),
]

DUPLICATES = [
    _refused(
        RUNS,
        "duplicate-run_id-in-one-batch",
        {"run_id": uid("runs-dup")},
        "23505",
        setup=({"run_id": uid("runs-dup")},),
        note="the source primary key: a batch cannot hold a key twice",
    ),
    _refused(
        COMPANIES,
        "duplicate-key-in-one-batch",
        {"entity_id": uid("companies-dup")},
        "23505",
        setup=({"entity_id": uid("companies-dup")},),
    ),
    _loaded(
        RUNS,
        "same-run_id-changed-across-batches",
        {"status": "failed", "error_message": "changed after export"},
        setup=({"run_id": uid("runs-changed")},),
        batch=2,
        replaces=True,
        note="append-only rows that change at the source: the source wins",
    ),
    _dead(
        EVENTS,
        "sequence-collision-in-one-batch",
        {"run_id": uid("ev-1"), "event_sequence": 7, "occurred_at": ago(minutes=2)},
        "uniqueness_violation",
        "run_id,event_sequence:unique",
        setup=({"run_id": uid("ev-1"), "event_sequence": 7, "occurred_at": ago(minutes=3)},),
    ),
    _dead(
        EVENTS,
        "sequence-collision-across-batches",
        {"run_id": uid("ev-2"), "event_sequence": 7, "occurred_at": ago(seconds=2)},
        "uniqueness_violation",
        "run_id,event_sequence:unique",
        setup=({"run_id": uid("ev-2"), "event_sequence": 7},),
        batch=2,
    ),
    _dead(
        EVENTS,
        "sequence-collision-across-batches-with-earlier-cursor",
        {"run_id": uid("ev-3"), "event_sequence": 7, "occurred_at": ago(minutes=5)},
        "uniqueness_violation",
        "run_id,event_sequence:unique",
        setup=({"run_id": uid("ev-3"), "event_sequence": 7},),
        batch=2,
        note="the event already exported keeps its slot, whatever the newcomer's cursor",
    ),
    _loaded(
        EVENTS,
        "same-sequence-other-run",
        {"run_id": uid("ev-5"), "event_sequence": 7},
        setup=({"run_id": uid("ev-4"), "event_sequence": 7},),
    ),
    _loaded(
        EVENTS,
        "same-run-next-sequence",
        {"run_id": uid("ev-6"), "event_sequence": 8},
        setup=({"run_id": uid("ev-6"), "event_sequence": 7},),
    ),
    _dead(
        SNAPSHOTS,
        "version-collision-in-one-batch",
        {"entity_id": uid("sn-1"), "record_version": 2, "captured_at": ago(minutes=2)},
        "uniqueness_violation",
        "org_id,entity_type,entity_id,record_version:unique",
        setup=({"entity_id": uid("sn-1"), "record_version": 2, "captured_at": ago(minutes=3)},),
    ),
    _dead(
        SNAPSHOTS,
        "version-collision-across-batches",
        {"entity_id": uid("sn-2"), "record_version": 2, "captured_at": ago(seconds=2)},
        "uniqueness_violation",
        "org_id,entity_type,entity_id,record_version:unique",
        setup=({"entity_id": uid("sn-2"), "record_version": 2},),
        batch=2,
    ),
    _loaded(
        SNAPSHOTS,
        "same-version-other-entity_type",
        {"entity_id": uid("sn-3"), "entity_type": "person"},
        setup=({"entity_id": uid("sn-3"), "entity_type": "company"},),
    ),
    Case(
        "companies-record_version-regression",
        COMPANIES,
        {"record_version": 2, "canonical_name": "Acme v2 (older)"},
        "stale",
        setup=({"entity_id": uid("co-1"), "record_version": 3, "canonical_name": "Acme v3"},),
        stored={"record_version": 3, "canonical_name": "Acme v3"},
        batch=2,
        replaces=True,
    ),
    Case(
        "persons-record_version-regression-to-1",
        PERSONS,
        {"record_version": 1, "title": "Intern"},
        "stale",
        setup=({"entity_id": uid("pe-1"), "record_version": 9, "title": "CTO"},),
        stored={"record_version": 9, "title": "CTO"},
        batch=2,
        replaces=True,
    ),
    _dead(
        COMPANIES,
        "equal-version-other-content",
        {"canonical_name": "Acme (rewritten, same version)"},
        "version_conflict",
        "record_version:equal_version_different_content",
        setup=({"entity_id": uid("co-2"), "record_version": 3, "canonical_name": "Acme v3"},),
        stored={"record_version": 3, "canonical_name": "Acme v3"},
        letter={"canonical_name": "Acme (rewritten, same version)"},
        batch=2,
        replaces=True,
    ),
    _dead(
        PERSONS,
        "equal-version-other-content",
        {"work_email": "ada@elsewhere.example"},
        "version_conflict",
        "record_version:equal_version_different_content",
        setup=({"entity_id": uid("pe-2"), "record_version": 4},),
        stored={"record_version": 4, "work_email": "ada@acme.example"},
        batch=2,
        replaces=True,
    ),
    _loaded(
        PERSONS,
        "equal-version-identical-content",
        {"title": "Engineer"},
        setup=({"entity_id": uid("pe-3"), "record_version": 4, "title": "Engineer"},),
        batch=2,
        replaces=True,
        counted="unchanged",
    ),
    _loaded(
        COMPANIES,
        "higher-version-replaces",
        {"record_version": 2, "canonical_name": "Acme v2"},
        setup=({"entity_id": uid("co-3"), "record_version": 1, "canonical_name": "Acme v1"},),
        batch=2,
        replaces=True,
    ),
]

CONTROL_CHARS = "a\x01b\x1fc\x7fd \x1b[31mred\x1b[0m\t\r\n\x08\x0b\x0c end"

TEXT = [
    _loaded(RUNS, "error_message-control-characters", {"error_message": CONTROL_CHARS}),
    _dead(
        EVENTS,
        "error_message-control-characters-in-a-dead-letter",
        {"error_message": CONTROL_CHARS, "http_status": 999},
        "invalid_value",
        "http_status:<=599",
        letter={"error_message": CONTROL_CHARS},
    ),
    _loaded(
        PERSONS,
        "full_name-right-to-left",
        {
            "full_name": "\u202eexe.txt\u202c \u05d0\u05d3\u05d4 "
            "\u200f(\u0639\u0631\u0628\u064a)\u200e"
        },
    ),
    _loaded(
        COMPANIES,
        "canonical_name-emoji-and-combining",
        {
            "canonical_name": "Acme \U0001f469\u200d\U0001f4bb \U0001f3f3\ufe0f\u200d\U0001f308 "
            "\U0001d54f e\u0301 \ufeff"
        },
        note="ZWJ sequences, astral plane, combining accent, BOM: no normalisation",
    ),
    _loaded(PERSONS, "title-line-separators", {"title": "CTO\u2028and\u2029founder"}),
    _loaded(COMPANIES, "canonical_name-empty-string", {"canonical_name": ""}),
    _loaded(RUNS, "error_message-1-mb", {"error_message": "x" * 1_048_576}),
    _loaded(
        COMPANIES,
        "canonical_name-1-mb-of-4-byte-characters",
        {"canonical_name": "\U0001f986" * 262_144},
    ),
    _loaded(
        PERSONS,
        "work_email-unicode",
        {"work_email": "\u0430\u0434\u0430@\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444"},
    ),
    _dead(
        PERSONS,
        "work_email-newline-injection",
        {"work_email": "ada@acme.example\nbcc@evil.example"},
        "invalid_value",
        "work_email:pattern",
    ),
    _dead(
        PERSONS,
        "phone_e164-trailing-newline",
        {"phone_e164": "+14155550123\n"},
        "invalid_value",
        "phone_e164:pattern",
        note="a trailing newline satisfies Python's `$`, not the contract",
    ),
    _dead(
        PERSONS,
        "phone_e164-full-width-digits",
        {"phone_e164": "+\uff11\uff14\uff11\uff15\uff15\uff15\uff15"},
        "invalid_value",
        "phone_e164:pattern",
    ),
    _refused(
        RUNS,
        "error_message-nul-character",
        {},
        "54000",
        sql="INSERT INTO ops.operation_runs (run_id, error_message) "
        "VALUES (gen_random_uuid(), 'before' || chr(0) || 'after')",
        note="PostgreSQL text cannot hold U+0000 (psycopg refuses it even before sending)",
    ),
    _refused(
        EVENTS,
        "metadata_json-nul-escape",
        {},
        "22P05",
        sql="INSERT INTO ops.operation_events (event_id, metadata_json) "
        'VALUES (gen_random_uuid(), \'{"a": "\\u0000"}\')',
        note="jsonb cannot hold \\u0000 either",
    ),
    _refused(
        PERSONS,
        "full_name-invalid-utf8",
        {},
        "22021",
        sql="INSERT INTO entities.person_entities (org_id, entity_id, full_name) "
        "VALUES (gen_random_uuid(), gen_random_uuid(), convert_from('\\xff'::bytea, 'UTF8'))",
    ),
]

UUIDS = [
    _refused(
        RUNS,
        "run_id-not-a-uuid",
        {"run_id": "not-a-uuid"},
        "22P02",
        note="uuid columns are uuid in the source; a text-typed source is refused by the "
        "schema check (test_uuid_column_typed_text_in_the_source_fails_the_dataset_loudly)",
    ),
    _refused(RUNS, "entity_id-sql", {"entity_id": "'); DROP TABLE x; --"}, "22P02"),
    _loaded(
        RUNS,
        "entity_id-uppercase-in-braces",
        {"entity_id": "{" + uid("upper").upper() + "}"},
        stored={"entity_id": uid("upper")},
    ),
    _loaded(RUNS, "company_id-nil-uuid", {"company_id": "00000000-0000-0000-0000-000000000000"}),
]

DEEP_200 = _nested(200, {"leaf": True})

JSON = [
    _loaded(EVENTS, "metadata_json-200-nested-objects", {"metadata_json": DEEP_200}),
    _loaded(EVENTS, "metadata_json-200-nested-arrays", {"metadata_json": "[" * 200 + "]" * 200}),
    _loaded(EVENTS, "metadata_json-5-mb", {"metadata_json": {"blob": "y" * 5 * 1_048_576}}),
    _loaded(
        SNAPSHOTS,
        "canonical_payload-100k-keys",
        {"canonical_payload": {f"field_{i:06d}": i for i in range(100_000)}},
    ),
    _loaded(EVENTS, "metadata_json-a-string", {"metadata_json": '"just a string"'}),
    _loaded(EVENTS, "metadata_json-an-array-of-mixed", {"metadata_json": '[1, "two", null, {}]'}),
    _loaded(
        EVENTS,
        "metadata_json-json-null-is-not-sql-null",
        {"metadata_json": "null"},
        note="compared with the source: JSON null must not turn into SQL NULL",
    ),
    _loaded(
        EVENTS,
        "metadata_json-numbers-beyond-double",
        {
            "metadata_json": '{"big": 1e400, "exact": 0.12345678901234567890123, '
            '"int": 123456789012345678901234567890}'
        },
        note="compared digit for digit: jsonb keeps arbitrary-precision numbers",
    ),
    _loaded(
        EVENTS,
        "metadata_json-unicode-keys",
        {
            "metadata_json": {
                "\u043a\u043b\u044e\u0447": "\u0437\u043d\u0430\u0447",
                "\U0001f511": "\u202e",
            }
        },
    ),
    _loaded(
        EVENTS,
        "metadata_json-sql-looking",
        {"metadata_json": {"q": "'); DROP TABLE x; --", "$1": "$$", "\\": "\\\\", "%s": "{}"}},
    ),
    _loaded(
        SNAPSHOTS,
        "canonical_payload-empty-object",
        {"canonical_payload": {}},
    ),
]

SECRETS = [
    _redacted(
        EVENTS,
        "secret-top-level",
        {"metadata_json": {"api_key": R + "01", "attempt": 1}},
        R + "01",
        stored={"metadata_json": {"api_key": REDACTED, "attempt": 1}},
    ),
    _redacted(
        EVENTS,
        "secret-depth-3",
        {"metadata_json": {"a": {"b": {"password": R + "02", "user": "ada"}}}},
        R + "02",
        stored={"metadata_json": {"a": {"b": {"password": REDACTED, "user": "ada"}}}},
    ),
    _redacted(
        EVENTS,
        "secret-depth-200",
        {"metadata_json": _nested(200, {"token": R + "03", "kept": 1})},
        R + "03",
        stored={"metadata_json": _nested(200, {"token": REDACTED, "kept": 1})},
    ),
    _redacted(
        EVENTS,
        "secret-inside-arrays",
        {
            "metadata_json": {
                "calls": [
                    {"headers": {"Authorization": "Bearer " + R + "04", "Accept": "*/*"}},
                    [[{"password": R + "04"}], "plain"],
                ]
            }
        },
        R + "04",
        stored={
            "metadata_json": {
                "calls": [
                    {"headers": {"Authorization": REDACTED, "Accept": "*/*"}},
                    [[{"password": REDACTED}], "plain"],
                ]
            }
        },
    ),
    _redacted(
        EVENTS,
        "secret-in-a-top-level-array",
        {"metadata_json": [{"client_secret": R + "05"}, "token"]},
        R + "05",
        stored={"metadata_json": [{"client_secret": REDACTED}, "token"]},
    ),
    _redacted(
        EVENTS,
        "secret-key-spellings",
        {
            "metadata_json": {
                "X-Api-Key": R + "06",
                "SESSION_ID": R + "06",
                "private-key": R + "06",
                "Cookie": R + "06",
                "refreshToken": R + "06",
                "name": "kept",
            }
        },
        R + "06",
        stored={
            "metadata_json": {
                "X-Api-Key": REDACTED,
                "SESSION_ID": REDACTED,
                "private-key": REDACTED,
                "Cookie": REDACTED,
                "refreshToken": REDACTED,
                "name": "kept",
            }
        },
    ),
    _redacted(
        EVENTS,
        "secret-object-value-replaced-whole",
        {"metadata_json": {"credentials": {"user": "ada", "pass": R + "07"}}},
        R + "07",
        stored={"metadata_json": {"credentials": REDACTED}},
    ),
    _redacted(
        EVENTS,
        "secret-beside-a-5-mb-blob",
        {"metadata_json": {"blob": "z" * 5 * 1_048_576, "token": R + "08"}},
        R + "08",
        stored={"metadata_json": {"blob": "z" * 5 * 1_048_576, "token": REDACTED}},
    ),
    _redacted(
        SNAPSHOTS,
        "secret-in-canonical-payload",
        {
            "canonical_payload": {
                "name": "Acme",
                "integrations": [{"provider": "hubspot", "access_key": R + "09"}],
            }
        },
        R + "09",
        stored={
            "canonical_payload_json": {
                "name": "Acme",
                "integrations": [{"provider": "hubspot", "access_key": REDACTED}],
            }
        },
    ),
    _dead(
        EVENTS,
        "secret-in-a-dead-lettered-row",
        {"http_status": 999, "metadata_json": {"api_key": R + "10", "attempt": 2}},
        "invalid_value",
        "http_status:<=599",
        secret=R + "10",
        letter={"metadata_json": {"api_key": REDACTED, "attempt": 2}},
    ),
    _redacted(
        EVENTS,
        "secret-as-a-header-pair",
        {"metadata_json": {"headers": [["Authorization", "Bearer " + R + "11"]]}},
        R + "11",
        note="not a secret-looking key: the value's shape (Bearer <token>) gives it away",
    ),
    _redacted(
        EVENTS,
        "secret-inside-a-json-encoded-string",
        {"metadata_json": {"raw_body": '{"api_key": "' + R + '12"}'}},
        R + "12",
        note="JSON inside a string: the key/value shape gives it away",
    ),
    _redacted(
        EVENTS,
        "redaction-keeps-numbers-beyond-double",
        {"metadata_json": '{"api_key": "' + R + '13", "amount": 0.12345678901234567890123}'},
        R + "13",
        stored={
            "metadata_json": {"api_key": REDACTED, "amount": Decimal("0.12345678901234567890123")}
        },
        note="numbers beyond double precision survive the re-serialisation exactly",
    ),
    _redacted(
        EVENTS,
        "secret-depth-2000",
        {"metadata_json": _deep_json_text(2000, '{"token": "' + R + '14"}')},
        R + "14",
        isolated=True,
        note="deeper than Python can decode (PostgreSQL accepts it): hidden whole, row loads",
    ),
]

CASES: tuple[Case, ...] = (
    *CONTROLS,
    *null_required_cases(),
    *value_check_cases(),
    *ENUMERATIONS,
    *SCOPE,
    *NUMBERS,
    *TIMESTAMPS,
    *DUPLICATES,
    *TEXT,
    *UUIDS,
    *JSON,
    *SECRETS,
    *sql_looking_text_cases(),
)


def by_outcome(cases: tuple[Case, ...] = CASES) -> dict[str, int]:
    counts = Counter(c.outcome for c in cases)
    return {o: counts[o] for o in OUTCOMES if counts[o]}
