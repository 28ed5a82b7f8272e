"""The hostile-input corpus (``tests/hostile_corpus.py``) through the real pipeline.

All cases share one source and one warehouse: their rows are written, each dataset is exported
once, the second-batch cases are written, and each dataset is exported once more. Then every case
is checked on its own (one test id per case), and every batch is checked as a whole: the
accounting identity, and counts that match the corpus exactly. A case that can fail a whole batch
runs in a pipeline of its own.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import psycopg
import pytest
from conftest import Pipeline
from hostile_corpus import (
    CASES,
    OUTCOMES,
    SQL_PAYLOADS,
    Case,
    Rel,
    by_outcome,
    free_text_columns,
)
from psycopg import sql
from rows import SourceRows, decoded

from export_pipeline.batch import BatchResult
from export_pipeline.config import Settings
from export_pipeline.contract import DATASETS, OPERATION_RUNS, Column, Dataset
from export_pipeline.source import create_source_schema
from export_pipeline.validate import SchemaMismatchError
from export_pipeline.warehouse import fetch_dicts, get_watermark, open_warehouse, run_sql

SHARED = tuple(c for c in CASES if not c.isolated)
ISOLATED = tuple(c for c in CASES if c.isolated)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = Decimal("0.000001")


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.known_bug)] if case.known_bug else []
    return pytest.param(case, id=case.id, marks=marks)


# --- writing the corpus ------------------------------------------------------------------------


def _resolve(values: Mapping[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {k: v.at(now) if isinstance(v, Rel) else v for k, v in values.items()}


def _canonical(col: Column, value: Any) -> Any:
    return str(uuid.UUID(str(value))) if col.type == "uuid" and value is not None else value


def source_key(ds: Dataset, row: Mapping[str, Any]) -> dict[str, Any]:
    """The primary key of a written row, in source column names."""
    return {ds.column(c).source_name: row[ds.column(c).source_name] for c in ds.primary_key}


def contract_key(ds: Dataset, row: Mapping[str, Any]) -> dict[str, Any]:
    """The primary key of a written row, in contract names and canonical spelling."""
    return {c: _canonical(ds.column(c), row[ds.column(c).source_name]) for c in ds.primary_key}


@dataclass
class Written:
    """What the corpus put in the source, per case id."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    setups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refused: dict[str, psycopg.Error | None] = field(default_factory=dict)


def write_cases(src: SourceRows, cases: tuple[Case, ...], batch: int, written: Written) -> None:
    """Write the rows of ``cases`` that belong before ``batch``'s export."""
    for case in cases:
        ds = case.dataset
        if batch == 1:
            written.setups[case.id] = [src.insert(ds, **_resolve(s)) for s in case.setup]
        if case.batch != batch:
            continue
        values = _resolve(case.row)
        try:
            if case.sql is not None:
                src.execute(case.sql)
                row: dict[str, Any] = {}
            elif case.replaces:
                row = written.setups[case.id][0]
                src.update(ds, source_key(ds, row), **values)
                row = {**row, **values}
            else:
                row = src.insert(ds, **values)
        except psycopg.Error as exc:
            written.refused[case.id] = exc
            continue
        written.refused[case.id] = None
        written.rows[case.id] = row
        if row:
            written.keys[case.id] = contract_key(ds, row)


# --- reading it back ---------------------------------------------------------------------------


def _epoch_us(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(microseconds=1)


def _json(text: str | None) -> Any:
    """JSON text as a comparable value: SQL NULL stays None, JSON null is ("json", None)."""
    if text is None:
        return None
    try:
        return ("json", json.loads(text, parse_float=Decimal))
    except RecursionError:  # deeper than Python decodes: compare the text itself
        return ("json text", text)


def expected(col: Column, value: Any) -> Any:
    """A value the corpus states, in the comparable form of :func:`warehouse_row`."""
    if value is None:
        return None
    if col.type == "timestamptz":
        return _epoch_us(value)
    if col.type == "jsonb":
        return ("json", value)
    return _canonical(col, value)


def _key_filter(ds: Dataset) -> str:
    return " AND ".join(f'CAST("{c}" AS VARCHAR) = ${c}' for c in ds.primary_key)


def warehouse_row(pipe: Pipeline, ds: Dataset, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored row of ``key``, each column comparable: instants as epoch microseconds,
    uuids as canonical text, JSON decoded with exact numbers."""
    exprs = []
    for c in ds.columns:
        if c.type == "timestamptz":
            exprs.append(f'epoch_us("{c.name}") AS "{c.name}"')
        elif c.type in ("uuid", "jsonb"):
            exprs.append(f'CAST("{c.name}" AS VARCHAR) AS "{c.name}"')
        else:
            exprs.append(f'"{c.name}"')
    rows = fetch_dicts(
        pipe.con, f'SELECT {", ".join(exprs)} FROM "{ds.name}" WHERE {_key_filter(ds)}', dict(key)
    )
    assert len(rows) <= 1
    if not rows:
        return None
    return {
        c.name: _json(rows[0][c.name]) if c.type == "jsonb" else rows[0][c.name] for c in ds.columns
    }


def source_row(src: SourceRows, ds: Dataset, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The source row of ``key`` in the comparable form of :func:`warehouse_row`, numerics
    rounded half-to-even to the contract's six decimals."""
    exprs = []
    for c in ds.source_columns:
        col = sql.Identifier(c.source_name)
        if c.type == "timestamptz":
            expr = sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint").format(col)
        elif c.type in ("uuid", "jsonb"):
            expr = sql.SQL("{}::text").format(col)
        else:
            expr = col
        exprs.append(sql.SQL("{} AS {}").format(expr, sql.Identifier(c.name)))
    query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(exprs),
        sql.Identifier(*ds.source_table.split(".")),
        sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(ds.column(c).source_name), sql.Placeholder())
            for c in ds.primary_key
        ),
    )
    with src.conn.cursor() as cur:
        cur.execute(query, [key[c] for c in ds.primary_key])
        names = [d.name for d in cur.description or ()]
        found = cur.fetchall()
    if not found:
        return None
    assert len(found) == 1
    row = dict(zip(names, found[0], strict=True))
    for c in ds.source_columns:
        if c.type == "jsonb":
            row[c.name] = _json(row[c.name])
        elif c.type == "numeric" and row[c.name] is not None:
            row[c.name] = row[c.name].quantize(_MICRO, rounding=ROUND_HALF_EVEN)
    return row


def letters_for(pipe: Pipeline, ds: Dataset, key: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Dead letters of ``ds`` whose record key is ``key``."""
    needle = str(next(iter(key.values())))
    candidates = fetch_dicts(
        pipe.con,
        "SELECT reason, failed_checks, status, CAST(record_key AS VARCHAR) AS record_key, "
        "CAST(row_json AS VARCHAR) AS row_json FROM dx_dead_letter "
        "WHERE dataset = $dataset AND CAST(record_key AS VARCHAR) LIKE $like",
        {"dataset": ds.name, "like": f"%{needle}%"},
    )
    return [
        letter
        for letter in candidates
        if {k: _canonical(ds.column(k), v) for k, v in decoded(letter["record_key"]).items()}
        == dict(key)
    ]


def stored_text(pipe: Pipeline, ds: Dataset, key: Mapping[str, Any]) -> str:
    """Every column of the stored row of ``key`` as text, joined (for secret searches)."""
    cols = " || '|' || ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '')" for c in ds.column_names)
    rows = run_sql(pipe.con, f'SELECT {cols} FROM "{ds.name}" WHERE {_key_filter(ds)}', dict(key))
    return "\n".join(r[0] for r in rows)


# --- the outcome of one case -------------------------------------------------------------------


def assert_case(pipe: Pipeline, case: Case, written: Written, watermark: Any) -> None:
    """The case ended exactly as its label says."""
    ds = case.dataset
    if case.outcome == "refused_by_source":
        error = written.refused[case.id]
        assert error is not None, "the source accepted a value it should refuse"
        assert error.sqlstate == case.sqlstate, error
        return
    assert written.refused[case.id] is None, written.refused[case.id]
    key = written.keys[case.id]
    row = written.rows[case.id]
    stored = warehouse_row(pipe, ds, key)
    letters = letters_for(pipe, ds, key)

    if case.outcome in ("out_of_scope", "deferred"):
        assert stored is None
        assert letters == []
        assert source_row(pipe.src, ds, key) is not None  # it is there, and was left alone
        if case.outcome == "deferred":
            assert watermark is not None and watermark < row[ds.column(ds.cursor).source_name]
        return

    if case.outcome == "dead_lettered":
        assert len(letters) == 1, letters
        [letter] = letters
        assert (letter["reason"], letter["failed_checks"]) == (case.reason, [case.check])
        assert letter["status"] == "open"
        in_letter = decoded(letter["row_json"])
        for name, value in case.letter.items():
            got = in_letter[name]
            assert (decoded(got) if ds.column(name).type == "jsonb" else got) == value, name
        if case.secret:
            assert case.secret not in letter["row_json"]
        if case.reason == "version_conflict":
            assert stored is not None
            for name, value in case.stored.items():
                assert stored[name] == expected(ds.column(name), value), name
        else:
            assert stored is None
        return

    assert stored is not None, f"not loaded; dead letters: {letters}"
    assert letters == []
    if case.outcome == "stale":
        for name, value in case.stored.items():
            assert stored[name] == expected(ds.column(name), value), name
        return

    source = source_row(pipe.src, ds, key)
    assert source is not None
    assert stored["export_schema_version"] == ds.version
    for c in ds.source_columns:
        if c.name in case.stored:
            want = expected(c, case.stored[c.name])
        elif case.outcome == "redacted" and c.type == "jsonb":
            continue  # differs from the source by design; `stored` states it when known
        else:
            want = source[c.name]
        assert stored[c.name] == want, c.name
    if case.outcome == "redacted":
        assert case.secret and case.secret not in stored_text(pipe, ds, key)
    if case.outcome == "loaded":
        text = {c.source_name: c.name for c in ds.source_columns if c.type == "text"}
        for name, value in case.row.items():  # text exactly as written, byte for byte
            if isinstance(value, str) and name in text:
                assert stored[text[name]] == value, name


# --- one source, two batches -------------------------------------------------------------------


@dataclass
class CorpusRun:
    pipe: Pipeline
    written: Written
    first: dict[str, BatchResult]
    second: dict[str, BatchResult]


@pytest.fixture(scope="module")
def corpus(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    """Every shared case written, each dataset exported, the second-batch cases written, and
    each dataset exported again."""
    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = pg_server.get_uri(database=name)
    create_source_schema(dsn)
    settings = Settings.from_env(
        {
            "EXPORT_DATA_DIR": str(tmp_path_factory.mktemp("hostile")),
            "EXPORT_SAFETY_LAG_SECONDS": "0",
        }
    )
    src = SourceRows(dsn)
    try:
        with open_warehouse(settings.warehouse_path) as con:
            pipe = Pipeline(src, con, settings)
            written = Written()
            write_cases(src, SHARED, 1, written)
            first = {ds.name: pipe.export(ds) for ds in DATASETS}
            write_cases(src, SHARED, 2, written)
            second = {ds.name: pipe.export(ds) for ds in DATASETS}
            yield CorpusRun(pipe, written, first, second)
    finally:
        src.close()
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.mark.parametrize("case", [_param(c) for c in SHARED])
def test_hostile_case_ends_as_labelled(corpus: CorpusRun, case: Case) -> None:
    """Each hostile row must end exactly as labelled: loaded intact, redacted, dead-lettered
    with its reason and check, skipped as out of scope, stale, deferred, or refused upstream."""
    watermark = get_watermark(corpus.pipe.con, case.dataset)
    assert_case(corpus.pipe, case, corpus.written, watermark)


@pytest.mark.parametrize("case", [_param(c) for c in ISOLATED])
def test_hostile_case_in_its_own_batch_ends_as_labelled(pipe: Pipeline, case: Case) -> None:
    """A case that could fail its batch runs alone, beside one valid row that must still load."""
    written = Written()
    control = Case("control", case.dataset, {}, "loaded")
    write_cases(pipe.src, (case, control), 1, written)
    pipe.export(case.dataset)
    assert_case(pipe, case, written, get_watermark(pipe.con, case.dataset))
    assert_case(pipe, control, written, None)


def _expected_counts(ds: Dataset, batch: int) -> Counter[str]:
    """How the corpus says ``ds``'s rows show in ``batch``'s counts (new rows only)."""
    counts: Counter[str] = Counter()
    for case in SHARED:
        if case.dataset is not ds:
            continue
        if batch == 1:
            counts["insert"] += len(case.setup)
        if case.batch == batch and case.counted_as:
            counts[case.counted_as] += 1
    return counts


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("ds", DATASETS, ids=lambda d: d.name)
def test_every_corpus_batch_accounts_for_every_row(
    corpus: CorpusRun, ds: Dataset, batch: int
) -> None:
    """extracted = inserted + updated + unchanged + stale + dead-lettered, in the result and the
    ledger, however hostile the rows: nothing vanishes."""
    result = (corpus.first if batch == 1 else corpus.second)[ds.name]
    assert result.extracted == (
        result.inserted + result.updated + result.unchanged + result.stale + result.dead_lettered
    )
    assert sum(result.dead_letters_by_reason.values()) == result.dead_lettered
    [ledger] = [b for b in corpus.pipe.ledger(ds) if b["batch_id"] == result.batch_id]
    assert ledger["status"] == "succeeded"
    for count in ("extracted", "inserted", "updated", "unchanged", "stale", "dead_lettered"):
        assert ledger[count] == getattr(result, count), count


@pytest.mark.parametrize("ds", DATASETS, ids=lambda d: d.name)
def test_first_batch_counts_are_exactly_what_the_corpus_says(
    corpus: CorpusRun, ds: Dataset
) -> None:
    """Every valid row beside the hostile ones loads, and every hostile one is counted once."""
    result = corpus.first[ds.name]
    want = _expected_counts(ds, 1)
    reasons = {k: v for k, v in want.items() if k not in ("insert", "update", "stale")}
    assert result.inserted == want["insert"] > 0
    assert (result.updated, result.unchanged, result.stale) == (0, 0, 0)
    assert result.dead_letters_by_reason == dict(sorted(reasons.items()))
    assert result.extracted == want.total()


@pytest.mark.parametrize("ds", DATASETS, ids=lambda d: d.name)
def test_second_batch_applies_exactly_the_corpus_changes(corpus: CorpusRun, ds: Dataset) -> None:
    """Re-reading the first batch's rows changes nothing; only the second batch's cases count."""
    result = corpus.second[ds.name]
    want = _expected_counts(ds, 2)
    assert (result.inserted, result.updated, result.stale) == (
        want["insert"],
        want["update"],
        want["stale"],
    )
    for reason in ("uniqueness_violation", "version_conflict"):
        new = want[reason]
        assert result.dead_letters_by_reason.get(reason, 0) >= new, reason
    assert result.unchanged >= want["unchanged"]


_SECRET = re.compile(r"PLANTED-SECRET-\d\d")


def test_no_planted_secret_is_stored_anywhere_but_in_known_bugs(corpus: CorpusRun) -> None:
    """Secrets are redacted before anything is written: no table, no column may hold one,
    except those of the cases marked as known redaction bugs."""
    found: set[str] = set()
    columns = run_sql(
        corpus.pipe.con,
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND NOT internal "
        "AND data_type IN ('VARCHAR', 'JSON', 'VARCHAR[]')",
    )
    for table, column in columns:
        for (markers,) in run_sql(
            corpus.pipe.con,
            f'SELECT DISTINCT unnest(regexp_extract_all(CAST("{column}" AS VARCHAR), '
            f"'PLANTED-SECRET-[0-9][0-9]')) FROM \"{table}\"",
        ):
            found.add(markers)
    planted = {c.secret for c in SHARED if c.secret}
    known = {c.secret for c in SHARED if c.secret and c.known_bug}
    assert planted and all(_SECRET.fullmatch(s or "") for s in planted)
    assert found <= known, sorted(found - known)


def _contract_checks(ds: Dataset) -> set[str]:
    """Every check the contract declares for ``ds`` that a source row can fail."""
    checks = {rule.name for rule in ds.row_rules}
    for c in ds.columns:
        if c.name == "export_schema_version":
            continue
        if not c.nullable and c.name not in ds.primary_key:
            checks.add(f"{c.name}:not_null")
        if c.allowed is not None:
            checks.add(f"{c.name}:allowed_values")
        if c.ge is not None:
            checks.add(f"{c.name}:>={c.ge:g}")
        if c.le is not None:
            checks.add(f"{c.name}:<={c.le:g}")
        if c.pattern is not None:
            checks.add(f"{c.name}:pattern")
        if c.not_future and c.name != ds.cursor:
            checks.add(f"{c.name}:not_in_future")
    return checks


def test_corpus_covers_every_contract_check_and_outcome(figures: dict[str, Any]) -> None:
    """A corpus that silently stops covering a check the contract gained would prove nothing."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) >= 30
    for ds in DATASETS:
        covered = {c.check for c in CASES if c.dataset is ds and c.outcome == "dead_lettered"}
        assert _contract_checks(ds) <= covered, ds.name
        text = {c.source_name for c in ds.source_columns if c.type == "text"}
        for payload in SQL_PAYLOADS.values():
            carried = {
                k for c in CASES if c.dataset is ds for k, v in c.row.items() if v == payload
            }
            assert carried >= ({c.source_name for c in free_text_columns(ds)}), payload
        drop = SQL_PAYLOADS["drop-table"]
        assert {k for c in CASES if c.dataset is ds for k, v in c.row.items() if v == drop} >= text
    assert set(by_outcome()) == set(OUTCOMES)
    figures["hostile-input cases"] = len(CASES)
    figures["hostile-input cases by outcome"] = by_outcome()
    figures["hostile-input known bugs (xfail)"] = sum(1 for c in CASES if c.known_bug)


def test_uuid_column_typed_text_in_the_source_fails_the_dataset_loudly(pipe: Pipeline) -> None:
    """A uuid column cannot hold non-uuid text in the source; a source (here a view) that types
    it as text is refused by the schema check, naming the column, before any row is read."""
    columns = sql.SQL(", ").join(
        sql.SQL("'not-a-uuid'::text AS run_id")
        if c.name == "run_id"
        else sql.Identifier(c.source_name)
        for c in OPERATION_RUNS.source_columns
    )
    pipe.src.execute("CREATE SCHEMA hostile")
    pipe.src.execute(
        sql.SQL("CREATE VIEW hostile.operation_runs AS SELECT {} FROM ops.operation_runs")
        .format(columns)
        .as_string(pipe.src.conn)
    )
    pipe.src.insert(OPERATION_RUNS)
    variant = replace(OPERATION_RUNS, source_table="hostile.operation_runs")

    with pytest.raises(SchemaMismatchError, match="'run_id' is text, the contract needs uuid"):
        pipe.export(variant)

    assert pipe.rows(OPERATION_RUNS) == []
    assert pipe.dead_letters(OPERATION_RUNS) == []
    assert [b["status"] for b in pipe.ledger(OPERATION_RUNS)] == ["failed"]
    # The real table's uuid type is the guarantee: it refuses the text outright.
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        pipe.src.insert(OPERATION_RUNS, run_id="not-a-uuid")
