"""The reference source: schema, deterministic seed data and planted contract violations."""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from export_pipeline.source import (
    SOURCE_TABLES,
    VIOLATION_KINDS,
    VIOLATIONS_PER_KIND,
    SeedReport,
    count_source_rows,
    create_source_schema,
    default_data_dir,
    seed_source,
    sqlalchemy_url,
)

END = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAYS = 3
SCALE = 0.002  # 2,000 runs, ~10,000 events, 400 companies, 1,000 persons

# Contract columns (minus export_schema_version) and operational extras, with PostgreSQL types
# (information_schema udt_name). Snapshots use source names: id, canonical_payload.
CONTRACT_COLUMNS: dict[str, dict[str, str]] = {
    "ops.operation_runs": {
        "run_id": "uuid",
        "pipeline_run_id": "uuid",
        "workflow_id": "text",
        "operation_id": "text",
        "action_id": "text",
        "entity_type": "text",
        "entity_id": "uuid",
        "org_id": "uuid",
        "company_id": "uuid",
        "source_provider": "text",
        "status": "text",
        "attempt_count": "int4",
        "started_at": "timestamptz",
        "ended_at": "timestamptz",
        "duration_ms": "int4",
        "cost_usd": "numeric",
        "error_code": "text",
        "error_message": "text",
        "created_at": "timestamptz",
    },
    "ops.operation_events": {
        "event_id": "uuid",
        "run_id": "uuid",
        "event_type": "text",
        "event_sequence": "int4",
        "occurred_at": "timestamptz",
        "org_id": "uuid",
        "company_id": "uuid",
        "entity_type": "text",
        "entity_id": "uuid",
        "provider": "text",
        "http_status": "int4",
        "raw_request_ref": "text",
        "raw_response_ref": "text",
        "payload_hash": "text",
        "error_code": "text",
        "error_message": "text",
        "metadata_json": "jsonb",
    },
    "entities.company_entities": {
        "org_id": "uuid",
        "company_id": "uuid",
        "entity_id": "uuid",
        "canonical_name": "text",
        "canonical_domain": "text",
        "linkedin_url": "text",
        "linkedin_page_id": "text",
        "industry": "text",
        "employee_count": "int4",
        "revenue_band": "text",
        "hq_country": "text",
        "enrichment_confidence": "numeric",
        "last_enriched_at": "timestamptz",
        "last_operation_id": "text",
        "last_run_id": "uuid",
        "source_priority": "text",
        "record_version": "int8",
        "updated_at": "timestamptz",
    },
    "entities.person_entities": {
        "org_id": "uuid",
        "company_id": "uuid",
        "entity_id": "uuid",
        "full_name": "text",
        "first_name": "text",
        "last_name": "text",
        "linkedin_url": "text",
        "title": "text",
        "seniority": "text",
        "department": "text",
        "work_email": "text",
        "email_status": "text",
        "phone_e164": "text",
        "contact_confidence": "numeric",
        "last_enriched_at": "timestamptz",
        "last_operation_id": "text",
        "last_run_id": "uuid",
        "record_version": "int8",
        "updated_at": "timestamptz",
    },
    "entities.entity_snapshots": {
        "id": "uuid",
        "org_id": "uuid",
        "entity_type": "text",
        "entity_id": "uuid",
        "record_version": "int8",
        "canonical_payload": "jsonb",
        "captured_at": "timestamptz",
        "source_run_id": "uuid",
    },
}
EXTRA_COLUMNS: dict[str, dict[str, str]] = {
    "ops.operation_runs": {
        "user_id": "uuid",
        "role": "text",
        "auth_method": "text",
        "input_payload": "jsonb",
        "output_payload": "jsonb",
        "updated_at": "timestamptz",
    },
    "ops.operation_events": {
        "raw_request": "jsonb",
        "raw_response": "jsonb",
        "created_at": "timestamptz",
    },
    "entities.company_entities": {
        "employee_range": "text",
        "description": "text",
        "source_providers": "_text",
        "canonical_payload": "jsonb",
        "created_at": "timestamptz",
    },
    "entities.person_entities": {
        "canonical_payload": "jsonb",
        "created_at": "timestamptz",
    },
    "entities.entity_snapshots": {},
}
PRIMARY_KEYS = {
    "ops.operation_runs": ["run_id"],
    "ops.operation_events": ["event_id"],
    "entities.company_entities": ["org_id", "entity_id"],
    "entities.person_entities": ["org_id", "entity_id"],
    "entities.entity_snapshots": ["id"],
}
CURSOR_COLUMNS = {
    "ops.operation_runs": "created_at",
    "ops.operation_events": "occurred_at",
    "entities.company_entities": "updated_at",
    "entities.person_entities": "updated_at",
    "entities.entity_snapshots": "captured_at",
}

# One boolean column per violation kind, named as in the manifest; one row per in-scope row.
VIOLATION_PREDICATES: dict[str, str] = {
    "dx_operation_runs_v1": """
        SELECT
            org_id IS NULL AS org_id_null,
            coalesce(status NOT IN ('succeeded', 'failed', 'skipped', 'canceled'), true)
                AS status_invalid,
            coalesce(attempt_count < 0, false) AS attempt_count_negative,
            coalesce(ended_at < started_at, false) AS ended_before_started,
            coalesce(cost_usd < 0, false) AS cost_negative,
            coalesce(started_at > now(), false) AS started_in_future
        FROM ops.operation_runs
        WHERE entity_type <> 'job'
    """,
    "dx_operation_events_v1": """
        SELECT
            row_number() OVER (
                PARTITION BY run_id, event_sequence ORDER BY occurred_at, event_id
            ) > 1 AS duplicate_run_sequence,
            coalesce(http_status NOT BETWEEN 100 AND 599, false) AS http_status_out_of_range,
            coalesce(event_sequence < 0, false) AS event_sequence_negative
        FROM ops.operation_events
        WHERE entity_type <> 'job'
    """,
    "dx_company_entities_v1": """
        SELECT
            coalesce(enrichment_confidence NOT BETWEEN 0 AND 1, false) AS confidence_out_of_range,
            coalesce(employee_count < 0, false) AS employee_count_negative,
            coalesce(record_version < 1, false) AS record_version_below_one
        FROM entities.company_entities
    """,
    "dx_person_entities_v1": """
        SELECT
            coalesce(phone_e164 !~ '^\\+[1-9][0-9]{6,14}$', false) AS phone_not_e164,
            coalesce(work_email !~ '^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$', false)
                AS email_malformed,
            coalesce(contact_confidence NOT BETWEEN 0 AND 1, false) AS confidence_out_of_range
        FROM entities.person_entities
    """,
    "dx_entity_snapshots_v1": """
        SELECT
            row_number() OVER (
                PARTITION BY org_id, entity_type, entity_id, record_version
                ORDER BY captured_at, id
            ) > 1 AS duplicate_entity_version,
            entity_type NOT IN ('company', 'person', 'job') AS entity_type_invalid
        FROM entities.entity_snapshots
        WHERE entity_type <> 'job'
    """,
}

SECRET_KEYS_PATTERN = (
    '"(api_key|authorization|x-api-key|client_secret|access_token|password|token)":'
)


def query(dsn: str, sql: str, **params: Any) -> list[Any]:
    """Rows of one query against ``dsn``."""
    engine = create_engine(sqlalchemy_url(dsn), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def scalar(dsn: str, sql: str, **params: Any) -> Any:
    """The single value of one query against ``dsn``."""
    return query(dsn, sql, **params)[0][0]


def seed(dsn: str, **overrides: Any) -> SeedReport:
    """Seed the small test dataset (scale 0.002, 3 days ending at END)."""
    options: dict[str, Any] = {"scale": SCALE, "days": DAYS, "end": END, **overrides}
    return seed_source(dsn, **options)


def violations_found(dsn: str, dataset: str) -> tuple[dict[str, int], int]:
    """Rows per violation kind in the source, and the most kinds any single row has."""
    rows = [row._mapping for row in query(dsn, VIOLATION_PREDICATES[dataset])]
    per_kind = Counter(kind for row in rows for kind, violated in row.items() if violated)
    most_per_row = max((sum(bool(v) for v in row.values()) for row in rows), default=0)
    return {kind: per_kind[kind] for kind in VIOLATION_KINDS[dataset]}, most_per_row


def test_schema_has_contract_columns_plus_extras_with_postgres_types(source_dsn: str) -> None:
    """The pipeline reads contract columns by name and type; extras must exist to be excluded."""
    create_source_schema(source_dsn)
    rows = query(
        source_dsn,
        """
        SELECT table_schema || '.' || table_name, column_name, udt_name
        FROM information_schema.columns
        WHERE table_schema IN ('ops', 'entities')
        """,
    )
    actual: dict[str, dict[str, str]] = {}
    for table_name, column_name, udt_name in rows:
        actual.setdefault(table_name, {})[column_name] = udt_name
    expected = {name: CONTRACT_COLUMNS[name] | EXTRA_COLUMNS[name] for name in SOURCE_TABLES}
    assert actual == expected


def test_create_source_schema_is_idempotent_and_keeps_keys_and_cursor_indexes(
    source_dsn: str,
) -> None:
    """Deployments re-run the DDL; keys and cursor indexes make incremental extracts cheap."""
    create_source_schema(source_dsn)
    create_source_schema(source_dsn)
    for table_name, key_columns in PRIMARY_KEYS.items():
        primary_key = [
            row[0]
            for row in query(
                source_dsn,
                """
                SELECT a.attname
                FROM pg_index AS i
                JOIN pg_attribute AS a
                    ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                WHERE i.indrelid = CAST(:table_name AS regclass) AND i.indisprimary
                ORDER BY array_position(i.indkey, a.attnum)
                """,
                table_name=table_name,
            )
        ]
        assert primary_key == key_columns, table_name
        cursor_indexed = scalar(
            source_dsn,
            """
            SELECT count(*)
            FROM pg_index AS i
            JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = CAST(:table_name AS regclass) AND a.attname = :cursor
            """,
            table_name=table_name,
            cursor=CURSOR_COLUMNS[table_name],
        )
        assert cursor_indexed == 1, table_name


def test_source_schema_is_permissive_beyond_primary_keys(source_dsn: str) -> None:
    """The pipeline, not the source, enforces the contract: bad rows must be storable here."""
    create_source_schema(source_dsn)
    not_null = {
        (f"{schema}.{name}", column_name)
        for schema, name, column_name in query(
            source_dsn,
            """
            SELECT table_schema, table_name, column_name
            FROM information_schema.columns
            WHERE table_schema IN ('ops', 'entities') AND is_nullable = 'NO'
            """,
        )
    }
    assert not_null == {(t, c) for t, cols in PRIMARY_KEYS.items() for c in cols}
    other_constraints = scalar(
        source_dsn,
        """
        SELECT count(*)
        FROM pg_constraint AS c
        JOIN pg_namespace AS n ON n.oid = c.connamespace
        WHERE n.nspname IN ('ops', 'entities') AND c.contype <> 'p'
        """,
    )
    assert other_constraints == 0


def test_seed_fills_all_tables_with_expected_relative_sizes(source_dsn: str) -> None:
    """Scale must mean the documented sizes, so volume tests and demos are predictable."""
    report = seed(source_dsn)
    rows = report.rows
    assert rows["ops.operation_runs"] == 2_000
    assert rows["entities.company_entities"] == 400
    assert rows["entities.person_entities"] == 1_000
    assert 4.8 <= rows["ops.operation_events"] / rows["ops.operation_runs"] <= 5.2
    entity_versions = scalar(
        source_dsn,
        """
        SELECT (SELECT sum(record_version) FROM entities.company_entities)
             + (SELECT sum(record_version) FROM entities.person_entities)
        """,
    )
    job_snapshots = report.out_of_scope["entities.entity_snapshots"]
    assert rows["entities.entity_snapshots"] == entity_versions + job_snapshots
    assert report.violations == {}


def test_seed_report_matches_source_counts_and_job_rows_are_about_two_percent(
    source_dsn: str,
) -> None:
    """The report is what tests and reconciliation compare against, so it must be exact."""
    report = seed(source_dsn)
    assert report.rows == count_source_rows(source_dsn)
    for table_name in ("ops.operation_runs", "ops.operation_events", "entities.entity_snapshots"):
        jobs = scalar(
            source_dsn,
            f"SELECT count(*) FROM {table_name} WHERE entity_type = 'job'",
        )
        assert report.out_of_scope[table_name] == jobs
        assert 0.01 <= jobs / report.rows[table_name] <= 0.03, table_name
    assert report.out_of_scope["entities.company_entities"] == 0
    assert report.out_of_scope["entities.person_entities"] == 0
    assert (report.start, report.end) == (END - timedelta(days=DAYS), END)


def test_no_cursor_value_is_outside_the_seeded_window(source_dsn: str) -> None:
    """Incremental extracts by cursor window must see every row, violations included."""
    seed(source_dsn, violations=True)
    start = END - timedelta(days=DAYS)
    for table_name, cursor in CURSOR_COLUMNS.items():
        earliest, latest, missing = query(
            source_dsn,
            f"SELECT min({cursor}), max({cursor}), count(*) - count({cursor}) FROM {table_name}",
        )[0]
        assert missing == 0, table_name
        assert start <= earliest, table_name
        assert latest <= END, table_name


def test_events_are_numbered_from_zero_in_time_order_within_each_run(source_dsn: str) -> None:
    """The contract's event_sequence is monotonic per run and matches occurred_at order."""
    seed(source_dsn)
    out_of_order = scalar(
        source_dsn,
        """
        SELECT count(*)
        FROM (
            SELECT
                event_sequence,
                row_number() OVER w - 1 AS expected_sequence,
                occurred_at,
                lag(occurred_at) OVER w AS previous_occurred_at
            FROM ops.operation_events
            WINDOW w AS (PARTITION BY run_id ORDER BY event_sequence)
        ) AS e
        WHERE event_sequence <> expected_sequence OR occurred_at <= previous_occurred_at
        """,
    )
    assert out_of_order == 0
    per_run = query(
        source_dsn,
        """
        SELECT min(n), max(n), count(*)
        FROM (
            SELECT count(e.event_id) AS n
            FROM ops.operation_runs AS r
            LEFT JOIN ops.operation_events AS e USING (run_id)
            GROUP BY r.run_id
        ) AS c
        """,
    )[0]
    assert tuple(per_run) == (3, 7, 2_000)
    outside_run = scalar(
        source_dsn,
        """
        SELECT count(*)
        FROM ops.operation_events AS e
        JOIN ops.operation_runs AS r USING (run_id)
        WHERE e.occurred_at < r.started_at OR e.occurred_at > r.ended_at
            OR e.org_id IS DISTINCT FROM r.org_id OR e.entity_id IS DISTINCT FROM r.entity_id
        """,
    )
    assert outside_run == 0


def test_every_entity_version_has_exactly_one_snapshot_in_time_order(source_dsn: str) -> None:
    """Snapshots are the entities' history: versions 1..current, the last one at updated_at."""
    seed(source_dsn)
    for entity_type, table_name in (
        ("company", "entities.company_entities"),
        ("person", "entities.person_entities"),
    ):
        mismatched = scalar(
            source_dsn,
            f"""
            SELECT count(*)
            FROM {table_name} AS e
            LEFT JOIN LATERAL (
                SELECT
                    array_agg(s.record_version ORDER BY s.captured_at) AS versions,
                    max(s.captured_at) AS last_captured_at
                FROM entities.entity_snapshots AS s
                WHERE s.org_id = e.org_id AND s.entity_id = e.entity_id
                    AND s.entity_type = :entity_type
            ) AS s ON true
            WHERE s.versions IS DISTINCT FROM
                    ARRAY(SELECT generate_series(1::bigint, e.record_version))
                OR s.last_captured_at IS DISTINCT FROM e.updated_at
            """,
            entity_type=entity_type,
        )
        assert mismatched == 0, entity_type


def test_run_statuses_follow_the_documented_mix(source_dsn: str) -> None:
    """Status distribution checks in the pipeline need a realistic baseline to compare with."""
    seed(source_dsn)
    shares = dict(
        query(
            source_dsn,
            """
            SELECT status, count(*)::float / sum(count(*)) OVER ()
            FROM ops.operation_runs
            GROUP BY status
            """,
        )
    )
    assert shares.keys() == {"succeeded", "failed", "skipped", "canceled"}
    assert 0.81 <= shares["succeeded"] <= 0.89
    assert 0.05 <= shares["failed"] <= 0.11
    failed_without_error = scalar(
        source_dsn,
        """
        SELECT count(*) FROM ops.operation_runs
        WHERE (status = 'failed') <> (error_code IS NOT NULL AND error_message IS NOT NULL)
        """,
    )
    assert failed_without_error == 0


def test_clean_seed_has_no_contract_violations(source_dsn: str) -> None:
    """Without violations=True every dead-lettered row would be a seeder bug."""
    seed(source_dsn)
    for dataset in VIOLATION_KINDS:
        found, _ = violations_found(source_dsn, dataset)
        assert found == dict.fromkeys(VIOLATION_KINDS[dataset], 0), dataset


def test_violations_manifest_matches_rows_in_the_source(source_dsn: str) -> None:
    """Dead-letter tests assert exact counts: each planted row has exactly one known violation."""
    report = seed(source_dsn, violations=True)
    assert report.violations == {
        dataset: dict.fromkeys(kinds, VIOLATIONS_PER_KIND)
        for dataset, kinds in VIOLATION_KINDS.items()
    }
    for dataset, manifest in report.violations.items():
        found, most_per_row = violations_found(source_dsn, dataset)
        assert found == manifest, dataset
        assert most_per_row == 1, dataset
    # Planted rows are in scope: no job row was touched and the job counts are unchanged.
    assert report.out_of_scope == seed(source_dsn).out_of_scope


def test_same_seed_gives_identical_data_and_another_seed_differs(source_dsn: str) -> None:
    """Reproducible data makes failures replayable and lets reconciliation use fixed checksums."""

    def fingerprint() -> dict[str, str]:
        return {
            name: scalar(
                source_dsn, f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {name} t"
            )
            for name in SOURCE_TABLES
        }

    seed(source_dsn, seed=7)
    first = fingerprint()
    seed(source_dsn, seed=7)
    assert fingerprint() == first
    seed(source_dsn, seed=8)
    second = fingerprint()
    assert all(second[name] != first[name] for name in SOURCE_TABLES)


def test_about_one_percent_of_events_carry_secret_looking_keys(source_dsn: str) -> None:
    """Secret scrubbing needs nested api keys and tokens to find in metadata_json."""
    seed(source_dsn)
    with_secrets, nested, events = query(
        source_dsn,
        """
        SELECT
            count(*) FILTER (WHERE metadata_json::text ~* :pattern),
            count(*) FILTER (
                WHERE metadata_json::text ~* :pattern
                    AND NOT EXISTS (
                        SELECT FROM jsonb_object_keys(metadata_json) AS k
                        WHERE ('"' || k || '":') ~* :pattern
                    )
            ),
            count(*)
        FROM ops.operation_events
        """,
        pattern=SECRET_KEYS_PATTERN,
    )[0]
    assert 0.006 <= with_secrets / events <= 0.015
    assert nested == with_secrets  # never at the top level: a scrubber must walk the tree
    raw_payloads = scalar(
        source_dsn,
        """
        SELECT count(*) FROM ops.operation_events
        WHERE (event_type = 'request_sent') <> (raw_request IS NOT NULL)
            OR (event_type = 'response_received') <> (raw_response IS NOT NULL)
        """,
    )
    assert raw_payloads == 0


def test_seed_rejects_a_naive_end(source_dsn: str) -> None:
    """A naive end would silently shift the window by the server's time zone."""
    with pytest.raises(ValueError, match="timezone-aware"):
        seed_source(source_dsn, scale=SCALE, end=datetime(2025, 6, 1, 12, 0))


def test_sqlalchemy_url_keeps_credentials_database_and_socket_query() -> None:
    """pgserver DSNs point at a unix socket through the query string, which must survive."""
    dsn = "postgresql://postgres:@/test_db?host=/tmp/pg socket"
    assert sqlalchemy_url(dsn) == "postgresql+psycopg://postgres:@/test_db?host=/tmp/pg socket"
    with pytest.raises(ValueError):
        sqlalchemy_url("mysql://user:secret@host/db")


def test_default_data_dir_is_a_temp_path_outside_the_repo_and_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """pgserver opens permissions on the data dir's parents: not the repo, not the home dir."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        assert default_data_dir().is_relative_to(tmp_path)
    finally:
        tempfile.tempdir = None
    repo = Path(__file__).resolve().parent.parent
    assert not default_data_dir().resolve().is_relative_to(repo)
    assert not default_data_dir().resolve().is_relative_to(Path.home())
